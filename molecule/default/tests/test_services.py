"""The three services run under systemd, listen where they should, answer
their health checks, and run the pinned versions."""

from __future__ import annotations

import json
import shlex
from typing import Any

import psycopg2
import pytest
import requests
import testinfra.host
from conftest import MLFLOW_PIN, PG_UNIT, Stack, deployed_record, main_pid, role_defaults


@pytest.mark.parametrize("unit", [PG_UNIT, "minio", "mlflow"])
def test_service_active_and_enabled(host: testinfra.host.Host, unit: str) -> None:
    service = host.service(unit)
    assert service.is_running, f"{unit} is not active"
    assert service.is_enabled, f"{unit} is not enabled"


@pytest.mark.parametrize("port", ["database_port", "tracking_port", "s3_port", "console_port"])
def test_port_listening(host: testinfra.host.Host, stack: Stack, port: str) -> None:
    number = getattr(stack, port)
    listening = host.socket.get_listening_sockets()
    assert any(s.startswith("tcp://") and s.endswith(f":{number}") for s in listening), listening


def test_mlflow_health(mlflow_url: str) -> None:
    response = requests.get(f"{mlflow_url}/health", timeout=10)
    assert response.status_code == 200
    assert response.text.strip() == "OK"


def test_mlflow_version_is_the_pin(mlflow_url: str) -> None:
    response = requests.get(f"{mlflow_url}/version", timeout=10)
    assert response.text.strip() == MLFLOW_PIN


def test_mlflow_refuses_unknown_host_header(mlflow_url: str) -> None:
    response = requests.get(
        f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1",
        headers={"Host": "attacker.example"},
        timeout=10,
    )
    assert response.status_code == 403


def test_mlflow_accepts_its_own_names(host: testinfra.host.Host, mlflow_url: str) -> None:
    hostname = host.check_output("hostname")
    port = mlflow_url.rsplit(":", 1)[1]
    for header in (hostname, f"{hostname}:{port}", mlflow_url.removeprefix("http://")):
        response = requests.get(
            f"{mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1",
            headers={"Host": header},
            timeout=10,
        )
        assert response.status_code == 200, header


def test_minio_live(s3_url: str) -> None:
    assert requests.get(f"{s3_url}/minio/health/live", timeout=10).status_code == 200


def test_minio_console_serves_html(endpoint: str, stack: Stack) -> None:
    response = requests.get(f"http://{endpoint}:{stack.console_port}/", timeout=10)
    assert response.status_code == 200
    assert "text/html" in response.headers["Content-Type"]
    assert "<html" in response.text.lower()


def test_minio_version_is_the_pin(host: testinfra.host.Host) -> None:
    pins = role_defaults("minio")
    out = host.check_output("/usr/local/bin/minio --version")
    assert pins["minio_release"] in out
    assert f"commit-id={pins['minio_source_commit']}" in out
    assert "DEVELOPMENT" not in out


def test_mlflow_runs_unprivileged(host: testinfra.host.Host) -> None:
    users = {p.user for p in host.process.filter(comm="mlflow")}
    assert users == {"mlflow"}


def test_mlflow_user_can_create_a_table(
    host: testinfra.host.Host, address: str, stack: Stack, hostvars: dict[str, Any]
) -> None:
    """Over TCP from the tracking host, as MLflow does: the role owns its database."""
    password = hostvars["vault_mlflow_db_password"]
    sql = "CREATE TABLE verify_probe (id int); DROP TABLE verify_probe;"
    cmd = host.run(
        f"PGPASSWORD={shlex.quote(password)} psql -v ON_ERROR_STOP=1 "
        f"-h {address} -p {stack.database_port} -U mlflow -d mlflow -c {shlex.quote(sql)}"
    )
    assert cmd.rc == 0, cmd.stderr


def test_mlflow_role_owns_its_database_and_is_not_superuser(host: testinfra.host.Host) -> None:
    query = (
        "SELECT pg_get_userbyid(d.datdba), r.rolsuper FROM pg_database d "
        "JOIN pg_roles r ON r.rolname = 'mlflow' WHERE d.datname = 'mlflow'"
    )
    out = host.check_output(f"sudo -u postgres psql -tA -c {shlex.quote(query)}")
    assert out == "mlflow|f"


def test_database_refuses_hosts_outside_the_tracking_tier(
    endpoint: str, stack: Stack, hostvars: dict[str, Any]
) -> None:
    """This controller is no tracking host: pg_hba must turn it away."""
    with pytest.raises(psycopg2.OperationalError, match=r"no pg_hba\.conf entry"):
        psycopg2.connect(
            host=endpoint,
            port=stack.database_port,
            dbname="mlflow",
            user="mlflow",
            password=hostvars["vault_mlflow_db_password"],
            connect_timeout=10,
        )


def test_job_execution_is_off_by_default(host: testinfra.host.Host) -> None:
    """mlflow_jobs_enabled is false: no job runner, no huey consumers, so a
    restart costs no extra CPU after /health answers (see defaults/main.yml)."""
    unit = host.check_output("systemctl cat mlflow")
    assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false" in unit
    processes = host.check_output("ps -u mlflow -o args=")
    assert "mlflow server" in processes
    assert "huey" not in processes
    assert "_job_runner" not in processes


def test_the_published_record_names_what_runs(
    host: testinfra.host.Host, mlflow_url: str, stack: Stack
) -> None:
    """ansible_local.mlflow, what the plays, bench/ and the tests read instead of
    the rendered unit: each value against the running server itself."""
    record = deployed_record(host)
    assert record.version == MLFLOW_PIN == requests.get(f"{mlflow_url}/version", timeout=10).text.strip()
    assert record.port == stack.tracking_port
    assert record.database == stack.database
    assert record.artifacts_destination.startswith(f"s3://{stack.bucket}")
    command = host.check_output(f"tr '\\0' '\\n' < /proc/{main_pid(host, 'mlflow')}/cmdline").splitlines()
    assert command[0].startswith(f"{record.venv}/bin/"), command
    assert command[command.index("--workers") + 1] == str(record.workers)
    assert record.artifacts_destination in command
    assert record.kek_version >= 1
    assert record.workspaces == ("--enable-workspaces" in command)


def test_the_server_imports_mlflow_from_bytecode_compiled_at_install(host: testinfra.host.Host) -> None:
    """The service user cannot write into its root-owned venv, so a venv installed
    without bytecode (uv's default) makes every worker and every helper a run
    starts compile MLflow from source again. Imported as that user, every module
    of the venv that the app loads must have its compiled file already, and
    that file is root's."""
    record = deployed_record(host)
    probe = (
        "import json, os, sys, mlflow.server.fastapi_app as app; "
        "print(json.dumps({'app': app.__cached__, 'missing': sorted(m.__cached__ "
        "for m in list(sys.modules.values()) "
        "if (getattr(m, '__file__', None) or '').startswith(sys.prefix + '/') "
        "and m.__file__.endswith('.py') and not os.path.exists(m.__cached__ or ''))}))"
    )
    python = f"{record.venv}/bin/python"
    out = host.check_output(f"cd / && runuser -u mlflow -- {python} -c {shlex.quote(probe)}")
    found = json.loads(out.strip().splitlines()[-1])
    missing = found["missing"]
    assert missing == [], f"{len(missing)} modules without bytecode, e.g. {missing[:5]}"
    assert host.file(found["app"]).user == "root"
