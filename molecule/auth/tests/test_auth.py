"""MLflow basic auth: the admin from vault, a stable Flask secret key, users in
a PostgreSQL database of their own. Requests without valid credentials get 401;
clients with MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD work."""

from __future__ import annotations

import shlex
from typing import Any

import pytest
import requests
import testinfra.host
from botocore.client import BaseClient
from conftest import (
    Stack,
    assert_clean,
    check_client_flow,
    main_pid,
    run_site,
    sampled_process_arguments,
    secret_forms,
    wait_for,
)

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
AUTH_SECRETS = [
    "vault_mlflow_admin_password",
    "vault_mlflow_flask_secret_key",
    "vault_mlflow_db_password",
    "vault_mlflow_reader_password",
]


@pytest.fixture(scope="module")
def secrets(hostvars: dict[str, Any]) -> list[str]:
    return secret_forms(hostvars, AUTH_SECRETS)


@pytest.fixture(scope="module")
def admin(hostvars: dict[str, Any]) -> tuple[str, str]:
    return "admin", str(hostvars["vault_mlflow_admin_password"])


def test_health_needs_no_login(mlflow_url: str) -> None:
    assert requests.get(f"{mlflow_url}/health", timeout=10).status_code == 200


def test_unauthenticated_request_gets_401(mlflow_url: str) -> None:
    response = requests.get(f"{mlflow_url}{SEARCH}", timeout=10)
    assert response.status_code == 401
    assert "Basic" in response.headers.get("WWW-Authenticate", "")


def test_wrong_password_gets_401(mlflow_url: str, admin: tuple[str, str]) -> None:
    response = requests.get(f"{mlflow_url}{SEARCH}", auth=(admin[0], admin[1] + "x"), timeout=10)
    assert response.status_code == 401


def test_admin_from_vault_is_an_admin(mlflow_url: str, admin: tuple[str, str]) -> None:
    response = requests.get(f"{mlflow_url}/api/2.0/mlflow/users/current", auth=admin, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["user"]["is_admin"] is True


@pytest.fixture(scope="module")
def reader(hostvars: dict[str, Any]) -> tuple[str, str]:
    return "reader-1", str(hostvars["vault_mlflow_reader_password"])


def test_a_user_from_mlflow_stack_auth_users_reads_but_is_no_admin(
    mlflow_url: str, admin: tuple[str, str], reader: tuple[str, str]
) -> None:
    """Created by the tracking role with the vault's password; reads what the
    default permission (READ) allows; may not manage users."""
    current = requests.get(f"{mlflow_url}/api/2.0/mlflow/users/current", auth=reader, timeout=10)
    assert current.status_code == 200, current.text
    assert current.json()["user"]["is_admin"] is False
    assert requests.get(f"{mlflow_url}{SEARCH}", auth=reader, timeout=10).status_code == 200
    created = requests.post(
        f"{mlflow_url}/api/2.0/mlflow/users/create",
        json={"username": "reader-made", "password": "x" * 16},
        auth=reader,
        timeout=10,
    )
    assert created.status_code == 403, created.text
    wrong = (reader[0], reader[1] + "x")
    assert requests.get(f"{mlflow_url}{SEARCH}", auth=wrong, timeout=10).status_code == 401


def test_client_flow_with_tracking_credentials(
    monkeypatch: pytest.MonkeyPatch, mlflow_url: str, s3: BaseClient, stack: Stack, admin: tuple[str, str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    check_client_flow(mlflow_url, s3, stack.bucket)


USERS_SQL = "SELECT username, is_admin FROM users"


def test_users_live_in_their_own_postgresql_database(
    host: testinfra.host.Host, hostvars: dict[str, Any], stack: Stack
) -> None:
    """In the database the wiring names (renamed from the default in this scenario)."""
    database = hostvars["mlflow_stack_auth_database"]
    assert database != "mlflow_auth"
    # The name comes from the scenario's own inventory (psql -c interpolates no variables).
    owner_sql = f"SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '{database}'"  # noqa: S608
    psql = "sudo -u postgres psql -tA"
    assert host.check_output(f"{psql} -c {shlex.quote(owner_sql)}") == stack.database_user
    users = host.check_output(f"{psql} -d {database} -c {shlex.quote(USERS_SQL)}")
    assert "admin|t" in users.splitlines()


def test_flask_secret_key_is_the_vault_value_and_survives_restarts(
    host: testinfra.host.Host, hostvars: dict[str, Any]
) -> None:
    wanted = f"MLFLOW_FLASK_SERVER_SECRET_KEY={hostvars['vault_mlflow_flask_secret_key']}"

    def served() -> tuple[int, str]:
        pid = main_pid(host, "mlflow")
        return pid, str(host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ"))

    pid, environment = served()
    assert wanted in environment.splitlines()
    host.check_output("systemctl restart mlflow")

    # Between systemd's fork and the server's exec the new PID still shows
    # systemd's own environment (a window a loaded host widens): wait for the exec.
    def exec_done() -> bool:
        new = main_pid(host, "mlflow")
        command = host.check_output(f"tr '\\0' ' ' < /proc/{new}/cmdline || true") if new else ""
        return new != pid and "mlflow server" in command

    wait_for(exec_done, 120)
    new_pid, environment = served()
    assert new_pid != pid
    assert wanted in environment.splitlines()


def test_no_auth_secret_in_readable_files_arguments_or_the_journal(
    host: testinfra.host.Host, secrets: list[str]
) -> None:
    ini = host.file("/etc/mlflow/basic_auth.ini")
    assert "mlflow.server.auth:authenticate_request_basic_auth" in ini.content_string
    assert_clean(ini.content_string, secrets, "basic_auth.ini")
    assert_clean(host.check_output("ps -eo args"), secrets, "ps")
    assert_clean(host.check_output("systemctl cat mlflow"), secrets, "the unit file")
    journal = host.check_output("journalctl --no-pager -o cat")
    assert "mlflow" in journal.lower()
    assert_clean(journal, secrets, "the journal")
    assert host.file("/etc/mlflow/mlflow.env").mode == 0o600


def rotate(
    host: testinfra.host.Host,
    extra_vars: dict[str, Any],
    verbosity: list[str],
    mlflow_url: str,
    logins: list[tuple[tuple[str, str], tuple[str, str]]],
    watched: list[str],
) -> None:
    """One site.yml run that changes each user's password: for each (new, old)
    of `logins`, the new one logs in afterwards and the old one gets 401."""
    current = f"{mlflow_url}/api/2.0/mlflow/users/current"
    with sampled_process_arguments(host) as samples:
        result = run_site(extra_vars, *verbosity)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Set the admin password" in output
    for new, old in logins:
        assert requests.get(current, auth=new, timeout=10).status_code == 200, (
            f"{new[0]} with the new password"
        )
        assert requests.get(current, auth=old, timeout=10).status_code == 401, (
            f"{old[0]} with the old password"
        )
    assert_clean(output, watched, f"ansible-playbook {' '.join(verbosity)} output")
    assert "set_admin_password.py" in samples[0], "the ps sampler missed the password helper"
    assert_clean(samples[0], watched, "ps during the rotation")
    assert_clean(host.check_output("journalctl --no-pager -o cat"), watched, "the journal")


def logins(mlflow_url: str, user: tuple[str, str], count: int) -> list[int]:
    """The status of `count` logins, each on a new connection (uvicorn hands
    connections to its workers, and each worker keeps a credential cache)."""
    current = f"{mlflow_url}/api/2.0/mlflow/users/current"
    return [requests.get(current, auth=user, timeout=10).status_code for _ in range(count)]


def check_cached_logins_outlive_an_out_of_band_change(
    host: testinfra.host.Host, hostvars: dict[str, Any], mlflow_url: str, user: tuple[str, str]
) -> None:
    """With mlflow_auth_cache_ttl on, a login checked once is accepted for the
    TTL even after its password changed behind MLflow's back (here: straight in
    the auth database, as MLflow's own docs describe the staleness). With the
    TTL at 0 (the default) the same logins would get 401: so the variable
    reaches the server. The next run sets the vault's password again."""
    # 40 logins: every worker checks (and caches) this one at least once.
    assert set(logins(mlflow_url, user, 40)) == {200}
    database = hostvars["mlflow_stack_auth_database"]
    # Names from the scenario's own inventory: psql -c interpolates no variables.
    other_hash = (
        "UPDATE users SET password_hash = (SELECT password_hash FROM users WHERE username = 'admin')"  # noqa: S608
        f" WHERE username = '{user[0]}'"
    )
    host.check_output(f"sudo -u postgres psql -tA -d {database} -c {shlex.quote(other_hash)}")
    assert set(logins(mlflow_url, user, 20)) == {200}, "the credential cache did not hold the login"


def test_passwords_rotate_and_leak_nothing(
    host: testinfra.host.Host,
    hostvars: dict[str, Any],
    mlflow_url: str,
    admin: tuple[str, str],
    reader: tuple[str, str],
    secrets: list[str],
) -> None:
    """New passwords in vault for the admin and the reader (a user of
    mlflow_stack_auth_users) are written to the auth database by the next run
    (MLflow itself never does), each logs in with its new password and not the
    old one, and no password shows in Ansible's output, the journal or any
    command line while that happens: rotated to new passwords at default
    verbosity, then back to the vault's at -v."""
    admin_rotated = (admin[0], f"{admin[1]}-rotated")
    reader_rotated = (reader[0], f"{reader[1]}-rotated")
    watched = [*secrets, admin_rotated[1], reader_rotated[1]]
    rotated = {
        "vault_mlflow_admin_password": admin_rotated[1],
        "vault_mlflow_reader_password": reader_rotated[1],
        # And MLflow's credential cache on, for the check between the runs.
        "mlflow_auth_cache_ttl": 600,
    }
    try:
        rotate(host, rotated, [], mlflow_url, [(admin_rotated, admin), (reader_rotated, reader)], watched)
        check_cached_logins_outlive_an_out_of_band_change(host, hostvars, mlflow_url, reader_rotated)
        # mlflow_auth_cache_ttl back to 0: each login is checked again at once.
        rotate(host, {}, ["-v"], mlflow_url, [(admin, admin_rotated), (reader, reader_rotated)], watched)
    except BaseException:
        # Later tests log in with the vault's passwords.
        run_site({})
        raise
