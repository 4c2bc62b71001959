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
from conftest import check_client_flow, run_site

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


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


def test_client_flow_with_tracking_credentials(
    monkeypatch: pytest.MonkeyPatch, mlflow_url: str, s3: BaseClient, admin: tuple[str, str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    check_client_flow(mlflow_url, s3)


OWNER_SQL = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'mlflow_auth'"
USERS_SQL = "SELECT username, is_admin FROM users"


def test_users_live_in_their_own_postgresql_database(host: testinfra.host.Host) -> None:
    psql = "sudo -u postgres psql -tA"
    assert host.check_output(f"{psql} -c {shlex.quote(OWNER_SQL)}") == "mlflow"
    users = host.check_output(f"{psql} -d mlflow_auth -c {shlex.quote(USERS_SQL)}")
    assert "admin|t" in users.splitlines()


def test_flask_secret_key_is_the_vault_value_and_survives_restarts(
    host: testinfra.host.Host, hostvars: dict[str, Any]
) -> None:
    wanted = f"MLFLOW_FLASK_SERVER_SECRET_KEY={hostvars['vault_mlflow_flask_secret_key']}"

    def served() -> tuple[str, str]:
        pid = host.check_output("systemctl show -p MainPID --value mlflow")
        return pid, str(host.check_output(f"tr '\\0' '\\n' < /proc/{pid}/environ"))

    pid, environment = served()
    assert wanted in environment.splitlines()
    host.check_output("systemctl restart mlflow")
    new_pid, environment = served()
    assert new_pid != pid
    assert wanted in environment.splitlines()


def test_no_auth_secret_in_readable_files_or_arguments(
    host: testinfra.host.Host, hostvars: dict[str, Any]
) -> None:
    ini = host.file("/etc/mlflow/basic_auth.ini")
    assert "mlflow.server.auth:authenticate_request_basic_auth" in ini.content_string
    for name in ("vault_mlflow_admin_password", "vault_mlflow_flask_secret_key", "vault_mlflow_db_password"):
        secret = str(hostvars[name])
        assert secret not in ini.content_string, name
        assert secret not in host.check_output("ps -eo args"), name
    assert host.file("/etc/mlflow/mlflow.env").mode == 0o600


def test_new_admin_password_in_vault_is_applied(mlflow_url: str, admin: tuple[str, str]) -> None:
    new_password = f"{admin[1]}-rotated"
    current = f"{mlflow_url}/api/2.0/mlflow/users/current"
    try:
        result = run_site({"vault_mlflow_admin_password": new_password})
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
        assert requests.get(current, auth=(admin[0], new_password), timeout=10).status_code == 200
        assert requests.get(current, auth=admin, timeout=10).status_code == 401
    finally:
        result = run_site({})
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert requests.get(current, auth=admin, timeout=10).status_code == 200
