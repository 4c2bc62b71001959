"""Prometheus metrics (mlflow_stack_metrics): every service answers its metrics
to the metrics client (mn-lb, the scenario's stand-in Prometheus) and to no other
address; the scrape configuration written on the controller lists them all; the
counters are real (they rise with client traffic)."""

from __future__ import annotations

import os
import pathlib
import re
import shlex
import stat
import uuid
from typing import Any

import mlflow
import pytest
import testinfra.host
import yaml
from conftest import PG_CONF_DIR, Stack, assert_clean, secret_forms, wait_for
from test_multinode import GROUPS, TRACKING, node

testinfra_hosts = ["mn-lb"]

CLIENT = "mn-lb"
OUTSIDER = "mn-db"
EXPORTER_ROLE_SQL = (
    "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, rolpassword IS NULL"
    " FROM pg_authid WHERE rolname = 'prometheus'"
)
EXPORTER_MEMBERSHIPS_SQL = (
    "SELECT g.rolname FROM pg_auth_members m JOIN pg_roles g ON g.oid = m.roleid"
    " JOIN pg_roles r ON r.oid = m.member WHERE r.rolname = 'prometheus'"
)
SCRAPE_DIR = pathlib.Path(os.environ.get("MOLECULE_INVENTORY_FILE", "/nonexistent")).parent / "prometheus"


def fetch(on: testinfra.host.Host, url: str, token: str | None = None, timeout: float = 5) -> tuple[int, str]:
    """GET url from a container: (status, body). Status 0 when nothing answered
    (the connection timed out or was refused: what a fence does); any other
    failure (a name that does not resolve, a reset) is -1 with its reason as the
    body, which no test accepts as "no answer"."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "request = urllib.request.Request(sys.argv[1])\n"
        "if len(sys.argv) > 2: request.add_header('Authorization', 'Bearer ' + sys.argv[2])\n"
        "silent = (TimeoutError, ConnectionRefusedError)\n"
        "try:\n"
        f"    response = urllib.request.urlopen(request, timeout={timeout})\n"
        "    print(response.status); print(response.read().decode())\n"
        "except urllib.error.HTTPError as error:\n"
        "    print(error.code)\n"
        "except urllib.error.URLError as error:\n"
        "    print(0 if isinstance(error.reason, silent) else -1); print(repr(error.reason))\n"
        "except silent:\n"
        "    print(0)\n"
        "except OSError as error:\n"
        "    print(-1); print(repr(error))\n"
    )
    args = " ".join(shlex.quote(a) for a in [url] + ([token] if token else []))
    out = on.check_output(f"python3 -c {shlex.quote(script)} {args}")
    status, _, body = out.partition("\n")
    return int(status), body


def connects(on: testinfra.host.Host, host: str, port: int) -> bool:
    """Whether a TCP connection from a container to host:port is accepted."""
    script = (
        "import socket, sys\nsocket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5).close()"
    )
    return bool(on.run(f"python3 -c {shlex.quote(script)} {shlex.quote(host)} {port}").rc == 0)


def metric_sum(text: str, name: str, labels: str = "") -> float:
    """Sum of every sample of a metric whose labels contain `labels`."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? ([0-9.eE+-]+)$", line)
        if match and labels in (match.group(1) or ""):
            total += float(match.group(2))
    return total


@pytest.fixture(scope="module")
def scrape() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((SCRAPE_DIR / "mlflow-stack.yml").read_text())
    return {job["job_name"]: job for job in config["scrape_configs"]}


@pytest.fixture(scope="module")
def token() -> str:
    return (SCRAPE_DIR / "minio.token").read_text().strip()


def urls(job: dict[str, Any]) -> list[str]:
    scheme = job.get("scheme", "http")
    path = job.get("metrics_path", "/metrics")
    return [f"{scheme}://{target}{path}" for target in job["static_configs"][0]["targets"]]


def test_the_scrape_configuration_names_every_service(scrape: dict[str, Any], stack: Stack) -> None:
    assert sorted(urls(scrape["mlflow"])) == [f"http://{name}:9464/metrics" for name in TRACKING]
    assert urls(scrape["postgresql"]) == ["http://mn-db:9187/metrics"]
    assert urls(scrape["haproxy"]) == ["http://mn-lb:8405/metrics"]
    assert urls(scrape["minio"]) == [f"http://mn-lb:{stack.s3_port}/minio/v2/metrics/cluster"]
    assert scrape["minio"]["authorization"] == {"type": "Bearer", "credentials_file": "minio.token"}
    mode = stat.S_IMODE((SCRAPE_DIR / "minio.token").stat().st_mode)
    assert mode == 0o600, oct(mode)


@pytest.mark.parametrize(
    ("job", "names"),
    [
        ("mlflow", ["mlflow_http_request_total", "mlflow_http_request_duration_seconds_bucket"]),
        ("postgresql", ["pg_up", "pg_stat_database_xact_commit"]),
        ("haproxy", ["haproxy_frontend_http_requests_total", "haproxy_backend_active_servers"]),
        ("minio", ["minio_s3_requests_total", "minio_cluster_nodes_online_total"]),
    ],
)
def test_each_endpoint_answers_the_client_with_its_metrics(
    job: str, names: list[str], scrape: dict[str, Any], token: str
) -> None:
    for url in urls(scrape[job]):
        status, body = fetch(node(CLIENT), url, token if job == "minio" else None)
        assert status == 200, (url, status)
        for name in names:
            assert re.search(rf"^{name}[{{ ]", body, re.MULTILINE), (url, name)
    if job == "postgresql":
        assert "pg_up 1" in body


@pytest.mark.parametrize("job", ["mlflow", "postgresql", "haproxy"])
def test_another_address_gets_no_metrics(job: str, scrape: dict[str, Any], stack: Stack) -> None:
    """From a host not in mlflow_stack_metrics_clients: no answer (systemd's
    IPAddressDeny) or 403 (HAProxy's ACL), while the same host reaches the
    service's own port there (so the silence is the fence, not the network)."""
    outsider = node(OUTSIDER if job != "postgresql" else "mn-minio1")
    service_port = {
        "mlflow": stack.tracking_port,
        "postgresql": stack.database_port,
        "haproxy": stack.tracking_port,
    }
    for url in urls(scrape[job]):
        status, reason = fetch(outsider, url, timeout=3)
        assert status == (403 if job == "haproxy" else 0), (url, status, reason)
        target = url.split("//")[1].split(":")[0]
        assert connects(outsider, target, service_port[job]), f"{target}:{service_port[job]} unreachable"


def test_minio_wants_the_token(scrape: dict[str, Any]) -> None:
    (url,) = urls(scrape["minio"])
    status, _ = fetch(node(CLIENT), url)
    assert status in (401, 403), status
    status, _ = fetch(node(CLIENT), url, "not.a.token")
    assert status in (401, 403), status


def test_mlflows_api_port_serves_no_metrics(stack: Stack) -> None:
    status, _ = fetch(node(CLIENT), f"http://mn-mlflow1:{stack.tracking_port}/metrics")
    assert status == 404


def test_the_counters_rise_with_client_traffic(
    mlflow_url: str, scrape: dict[str, Any], token: str, tmp_path: pathlib.Path
) -> None:
    def totals() -> dict[str, float]:
        text = {
            job: "".join(fetch(node(CLIENT), url, token)[1] for url in urls(scrape[job])) for job in scrape
        }
        return {
            "mlflow requests": metric_sum(text["mlflow"], "mlflow_http_request_total"),
            "postgresql commits": metric_sum(
                text["postgresql"], "pg_stat_database_xact_commit", 'datname="tracking_mn"'
            ),
            "haproxy requests": metric_sum(
                text["haproxy"], "haproxy_frontend_http_requests_total", 'proxy="mlflow"'
            ),
            "minio puts": metric_sum(text["minio"], "minio_s3_requests_total", 'api="putobject"'),
        }

    before = totals()
    client = mlflow.MlflowClient(mlflow_url)
    run = client.create_run(client.create_experiment(f"metrics-{uuid.uuid4().hex[:8]}"))
    artifact = tmp_path / "note.txt"
    artifact.write_text("counted")
    for step in range(20):
        client.log_metric(run.info.run_id, "loss", 1.0 / (step + 1), step=step)
    client.log_artifact(run.info.run_id, str(artifact))
    after: dict[str, float] = {}

    # MinIO caches its cluster metrics for a few seconds.
    def risen() -> bool:
        after.update(totals())
        return after["minio puts"] > before["minio puts"]

    wait_for(risen, timeout=60)
    assert after["mlflow requests"] >= before["mlflow requests"] + 20, (before, after)
    assert after["haproxy requests"] >= before["haproxy requests"] + 20, (before, after)
    assert after["postgresql commits"] > before["postgresql commits"], (before, after)


@pytest.mark.parametrize("name", TRACKING)
def test_the_metrics_directory_holds_only_the_running_workers_files(name: str) -> None:
    """Emptied on every start (RuntimeDirectory=): after the earlier rolls and
    restarts, every file names a process of the server running now."""
    host = node(name)
    assert host.check_output("systemctl show -p RuntimeDirectory --value mlflow") == "mlflow-metrics"
    files = host.check_output("ls /run/mlflow-metrics").split()
    assert files
    pids = {int(p) for p in re.findall(r"_(\d+)\.db$", "\n".join(files), re.MULTILINE)}
    running = {int(p) for p in host.check_output("ps -u mlflow -o pid=").split()}
    assert pids <= running, (pids, running)


def test_the_exporters_database_role_may_only_monitor(stack: Stack) -> None:
    """PostgreSQL's exporter logs in as its own role: no password (peer over the
    socket only: pg_hba admits TCP for the MLflow user alone), no privilege but
    pg_monitor's, and its process runs as the OS user of that name."""
    db = node("mn-db")
    psql = "sudo -u postgres psql -tA -c"
    attributes = db.check_output(
        f"{psql} {shlex.quote(EXPORTER_ROLE_SQL)}",
    )
    assert attributes == "f|f|f|f|f|t", attributes
    memberships = db.check_output(f"{psql} {shlex.quote(EXPORTER_MEMBERSHIPS_SQL)}")
    assert memberships.split() == ["pg_monitor"]
    hba = db.file(f"{PG_CONF_DIR}/pg_hba.conf").content_string
    tcp_users = {line.split()[2] for line in hba.splitlines() if line.startswith("host")}
    assert tcp_users == {stack.database_user}, tcp_users
    pid = db.check_output("systemctl show -p MainPID --value prometheus-postgres-exporter")
    assert db.check_output(f"ps -o user= -p {pid}") == "prometheus"
    assert db.check_output(f"grep ^CapEff /proc/{pid}/status").split()[1] == "0000000000000000"


def test_the_metrics_secret_and_token_leak_nowhere(hostvars: dict[str, Any], token: str) -> None:
    """The MinIO metrics user's secret key and the token made from it: on no
    command line, in no journal or unit file, in no file but root's 0600 ones, on
    any host (the token lives on the controller only, beside the scrape file)."""
    watched = [*secret_forms(hostvars, ["vault_minio_metrics_secret_key"]), token]
    for name in GROUPS:
        host = node(name)
        assert_clean(host.check_output("ps -eo args"), watched, f"ps on {name}")
        assert_clean(host.check_output("journalctl --no-pager -o cat"), watched, f"the journal of {name}")
        assert_clean(host.check_output("systemctl cat '*' 2>/dev/null || true"), watched, f"units of {name}")
        for secret in watched:
            found = host.run(
                "grep -rlF -e %s /etc /root /home /opt /usr/local /var/log /run /tmp 2>/dev/null", secret
            )
            for path in filter(None, found.stdout.splitlines()):
                held = host.file(path)
                assert (held.user, held.group, held.mode) == ("root", "root", 0o600), f"{name}:{path}"
