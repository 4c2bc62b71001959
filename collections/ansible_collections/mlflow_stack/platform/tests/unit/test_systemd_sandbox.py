"""Unit tests of the systemd_sandbox filter, and that it is the only place the
sandbox is written: no unit template of a role spells a sandbox directive of
its own."""

from __future__ import annotations

import pathlib
import re

import pytest
from ansible_collections.mlflow_stack.platform.plugins.filter.systemd_sandbox import (
    FilterModule,
    systemd_sandbox,
)

ROOT = pathlib.Path(__file__).resolve().parents[6]
# The long-running services: each renders the filter.
UNITS = [
    ROOT / "roles/mlflow/templates/mlflow.service.j2",
    ROOT / "roles/mlflow/templates/mlflow-metrics.service.j2",
    ROOT / "roles/mlflow_serving/templates/mlflow-model@.service.j2",
    ROOT / "roles/minio/templates/minio.service.j2",
]


def directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        key, _, value = line.partition("=")
        found.setdefault(key, []).append(value)
    return found


# Every directive, in order: dropping one (the exposure scores would hardly
# move) fails here.
EXPECTED = [
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=",
    "AmbientCapabilities=",
    "ProtectSystem=strict",
    "ReadWritePaths=/var/lib/mlflow",
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
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "SystemCallArchitectures=native",
    "SystemCallFilter=@system-service",
    "SystemCallFilter=~@privileged @resources",
    "SystemCallErrorNumber=EPERM",
    "RemoveIPC=yes",
    "KeyringMode=private",
    "UMask=0077",
]
# What each service passes: its writable paths and the extra address family.
FILTER = r" \| mlflow_stack\.platform\.systemd_sandbox"
CALLS = {
    "mlflow.service.j2": r"\[mlflow_data_dir\]" + FILTER + r"\(private_users=mlflow_private_users",
    "mlflow-metrics.service.j2": r"\[\]" + FILTER + r"\(private_users=mlflow_private_users",
    "mlflow-model@.service.j2": r"\[\]" + FILTER + r" \}\}",
    "minio.service.j2": r"minio_data_dirs" + FILTER + r"\(private_users=minio_private_users.*'AF_NETLINK'",
}


def test_the_sandbox_is_every_directive_in_order() -> None:
    assert systemd_sandbox(["/var/lib/mlflow"]).splitlines() == EXPECTED
    assert systemd_sandbox(["/var/lib/mlflow"], private_users=True).splitlines() == [
        "PrivateUsers=yes",
        *EXPECTED,
    ]


def test_the_sandbox_denies_what_the_services_never_need() -> None:
    lines = directives(systemd_sandbox(["/var/lib/mlflow"]))
    assert lines["CapabilityBoundingSet"] == [""]
    assert lines["NoNewPrivileges"] == ["yes"]
    assert lines["ProtectSystem"] == ["strict"]
    assert lines["ReadWritePaths"] == ["/var/lib/mlflow"]
    assert lines["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert lines["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert lines["MemoryDenyWriteExecute"] == ["yes"]
    assert lines["UMask"] == ["0077"]
    assert "PrivateUsers" not in lines


def test_the_arguments_are_what_varies() -> None:
    lines = directives(
        systemd_sandbox(["/srv/a", "/srv/b"], private_users=True, address_families=["AF_NETLINK", "AF_UNIX"])
    )
    assert lines["PrivateUsers"] == ["yes"]
    assert lines["ReadWritePaths"] == ["/srv/a /srv/b"]
    assert lines["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX AF_NETLINK"]
    assert "ReadWritePaths" not in directives(systemd_sandbox([]))
    assert not systemd_sandbox([]).endswith("\n")


def test_the_filter_is_registered() -> None:
    assert FilterModule().filters()["systemd_sandbox"] is systemd_sandbox


@pytest.mark.parametrize("unit", UNITS, ids=[u.name for u in UNITS])
def test_each_service_renders_the_filter_and_spells_no_directive_of_its_own(unit: pathlib.Path) -> None:
    text = unit.read_text()
    assert re.search(r"^\{\{ " + CALLS[unit.name], text, re.MULTILINE), (
        f"{unit.name} does not render the sandbox"
    )
    keys = {line.partition("=")[0] for line in EXPECTED}
    spelled = [line for line in text.splitlines() if line.partition("=")[0] in keys]
    assert spelled == [], f"written here and in the filter: {spelled}"
