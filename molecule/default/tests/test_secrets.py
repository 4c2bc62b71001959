"""No secret leaks: not in process arguments, unit files, the journal, a file
other users can read, or Ansible's output at default and -v verbosity. Each
secret is searched in every form it is written in: raw, percent-encoded (the
database URI) and escaped for an EnvironmentFile."""

from __future__ import annotations

import urllib.parse
from typing import Any

import pytest
import testinfra.host
from conftest import run_site

SECRET_VARS = ["vault_mlflow_db_password", "vault_minio_root_password", "vault_minio_mlflow_secret_key"]


@pytest.fixture(scope="module")
def secrets(hostvars: dict[str, Any]) -> list[str]:
    forms: set[str] = set()
    for name in SECRET_VARS:
        value = str(hostvars[name])
        forms |= {
            value,
            urllib.parse.quote(value, safe=""),
            value.replace("\\", "\\\\").replace('"', '\\"'),
        }
    return sorted(forms)


def assert_clean(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret appears in {where}"


def test_not_in_process_arguments(host: testinfra.host.Host, secrets: list[str]) -> None:
    assert_clean(host.check_output("ps -eo args"), secrets, "ps")


def test_not_in_unit_files(host: testinfra.host.Host, secrets: list[str]) -> None:
    units = host.check_output("systemctl cat mlflow minio postgresql@15-main")
    assert "EnvironmentFile=" in units
    assert_clean(units, secrets, "the unit files")


def test_not_in_the_journal(host: testinfra.host.Host, secrets: list[str]) -> None:
    journal = host.check_output("journalctl --no-pager -o cat")
    assert "mlflow" in journal.lower()
    assert_clean(journal, secrets, "the journal")


def test_files_holding_secrets_are_private(host: testinfra.host.Host, secrets: list[str]) -> None:
    holders: set[str] = set()
    for secret in secrets:
        found = host.run(
            "grep -rlF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -e %s / 2>/dev/null",
            secret,
        )
        holders |= {line for line in found.stdout.splitlines() if line}
    # The two EnvironmentFiles must be among them, or the search proves nothing.
    assert {"/etc/mlflow/mlflow.env", "/etc/default/minio"} <= holders
    for path in sorted(holders):
        assert host.file(path).mode & 0o004 == 0, f"{path} holds a secret and is world-readable"


@pytest.mark.parametrize("verbosity", [[], ["-v"]], ids=["default", "-v"])
def test_not_in_ansible_output(verbosity: list[str], secrets: list[str]) -> None:
    result = run_site(None, *verbosity)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "changed=0" in output
    assert_clean(output, secrets, f"ansible-playbook {' '.join(verbosity)} output")
