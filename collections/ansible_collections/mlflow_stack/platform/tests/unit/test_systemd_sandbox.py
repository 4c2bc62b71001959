"""Unit tests of the systemd_sandbox filter, and that it is the only place the
sandbox is written: no unit template of a role spells a sandbox directive of
its own."""

from __future__ import annotations

import pathlib

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
    text = unit.read_text().splitlines()
    assert any("mlflow_stack.platform.systemd_sandbox" in line for line in text)
    for directive in ("NoNewPrivileges=", "ProtectSystem=", "SystemCallFilter=", "CapabilityBoundingSet="):
        assert not any(line.startswith(directive) for line in text), (
            f"{directive} written here and in the filter"
        )
