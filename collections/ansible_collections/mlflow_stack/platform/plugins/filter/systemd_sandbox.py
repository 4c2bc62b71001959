"""The systemd sandbox every long-running unit of the stack runs in, written
once: mlflow.service, mlflow-metrics.service, mlflow-model@.service and
minio.service render it with this filter. Each unit scores 2.5 or lower in
`systemd-analyze security` (the tests measure it on the hosts).

What varies per unit is an argument: the paths it may write (everything else
is read-only), whether it gets a user namespace of its own (PrivateUsers=
needs user namespaces, which containers often lack), and the address
families it needs beyond IPv4, IPv6 and Unix sockets.
"""

from __future__ import annotations

from collections.abc import Iterable

DOCUMENTATION = r"""
name: systemd_sandbox
short_description: The [Service] sandbox lines of the stack's units
description:
  - Returns the sandbox directives, one per line, without a trailing newline.
positional: _input
options:
  _input:
    description: Paths the service may write (ReadWritePaths=); empty for none.
    type: list
    elements: str
    required: true
  private_users:
    description: Add PrivateUsers=yes.
    type: bool
    default: false
  address_families:
    description: Address families beyond AF_INET, AF_INET6 and AF_UNIX (such as AF_NETLINK).
    type: list
    elements: str
    default: []
"""

BASE_FAMILIES = ["AF_INET", "AF_INET6", "AF_UNIX"]


def systemd_sandbox(
    read_write_paths: Iterable[str] | str,
    private_users: bool = False,
    address_families: Iterable[str] = (),
) -> str:
    paths = [read_write_paths] if isinstance(read_write_paths, str) else list(read_write_paths)
    paths = [p for p in paths if p]
    families = BASE_FAMILIES + [f for f in address_families if f not in BASE_FAMILIES]
    lines = [
        *(["PrivateUsers=yes"] if private_users else []),
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectSystem=strict",
        *([f"ReadWritePaths={' '.join(paths)}"] if paths else []),
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "DevicePolicy=closed",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        f"RestrictAddressFamilies={' '.join(families)}",
        "RestrictNamespaces=yes",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        # A unit whose code JIT-compiles lifts it in a drop-in of its own.
        "MemoryDenyWriteExecute=yes",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service",
        "SystemCallFilter=~@privileged @resources",
        "SystemCallErrorNumber=EPERM",
        "RemoveIPC=yes",
        "KeyringMode=private",
        "UMask=0077",
    ]
    return "\n".join(lines)


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"systemd_sandbox": systemd_sandbox}
