"""No secret leaks: not in process arguments, unit files, the journal, a file
other users can read. Each secret is searched in every form it is written in
(conftest.secret_forms). (Ansible's output at -v verbosity and the process list
during a run that changes secrets: test_reconfigure.py.)"""

from __future__ import annotations

from typing import Any

import pytest
import testinfra.host
from conftest import PG_UNIT, assert_clean, secret_forms

SECRET_VARS = [
    "vault_mlflow_db_password",
    "vault_minio_root_password",
    "vault_minio_mlflow_secret_key",
    "vault_mlflow_kek_passphrase",
]
# Every file that may hold one of them, with its exact owner, group and mode.
SECRET_FILES = {
    "/etc/mlflow/mlflow.env": ("root", "root", 0o600),
    # The gateway passphrase, read back by the next run (roles/mlflow/tasks/kek.yml).
    "/etc/mlflow/gateway-kek.json": ("root", "root", 0o600),
    "/etc/default/minio": ("root", "root", 0o600),
    "/root/.mcli/config.json": ("root", "root", 0o600),
    # MLflow's S3 keys, for the backup script.
    "/etc/mlflow-backup/backup.json": ("root", "root", 0o600),
}


@pytest.fixture(scope="module")
def secrets(hostvars: dict[str, Any]) -> list[str]:
    return secret_forms(hostvars, SECRET_VARS)


def test_not_in_process_arguments(host: testinfra.host.Host, secrets: list[str]) -> None:
    assert_clean(host.check_output("ps -eo args"), secrets, "ps")


def test_not_in_unit_files(host: testinfra.host.Host, secrets: list[str]) -> None:
    units = host.check_output(f"systemctl cat mlflow minio {PG_UNIT}")
    assert "EnvironmentFile=" in units
    assert_clean(units, secrets, "the unit files")


def test_not_in_the_journal(host: testinfra.host.Host, secrets: list[str]) -> None:
    journal = host.check_output("journalctl --no-pager -o cat")
    assert "mlflow" in journal.lower()
    assert_clean(journal, secrets, "the journal")


def test_only_known_files_hold_secrets_with_exact_owner_and_mode(
    host: testinfra.host.Host, secrets: list[str]
) -> None:
    holders: set[str] = set()
    for secret in secrets:
        found = host.run(
            "grep -rlF --exclude-dir=proc --exclude-dir=sys --exclude-dir=dev -e %s / 2>/dev/null",
            secret,
        )
        holders |= {line for line in found.stdout.splitlines() if line}
    # The two EnvironmentFiles must be among them, or the search proves nothing;
    # and no other file may hold a secret.
    assert {"/etc/mlflow/mlflow.env", "/etc/default/minio"} <= holders
    assert holders <= set(SECRET_FILES), f"unexpected files hold a secret: {holders - set(SECRET_FILES)}"
    for path in sorted(holders):
        found = host.file(path)
        assert (found.user, found.group, found.mode) == SECRET_FILES[path], path
