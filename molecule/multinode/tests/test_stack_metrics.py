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
from conftest import Stack, wait_for
from test_multinode import TRACKING, node

testinfra_hosts = ["mn-lb"]

CLIENT = "mn-lb"
OUTSIDER = "mn-db"
SCRAPE_DIR = pathlib.Path(os.environ.get("MOLECULE_INVENTORY_FILE", "/nonexistent")).parent / "prometheus"


def fetch(on: testinfra.host.Host, url: str, token: str | None = None, timeout: float = 5) -> tuple[int, str]:
    """GET url from a container: (status, body); status 0 when nothing answered."""
    script = (
        "import sys, urllib.request, urllib.error\n"
        "request = urllib.request.Request(sys.argv[1])\n"
        "if len(sys.argv) > 2: request.add_header('Authorization', 'Bearer ' + sys.argv[2])\n"
        "try:\n"
        f"    response = urllib.request.urlopen(request, timeout={timeout})\n"
        "    print(response.status); print(response.read().decode())\n"
        "except urllib.error.HTTPError as error:\n"
        "    print(error.code)\n"
        "except OSError:\n"
        "    print(0)\n"
    )
    args = " ".join(shlex.quote(a) for a in [url] + ([token] if token else []))
    out = on.check_output(f"python3 -c {shlex.quote(script)} {args}")
    status, _, body = out.partition("\n")
    return int(status), body


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
def test_another_address_gets_no_metrics(job: str, scrape: dict[str, Any]) -> None:
    """From a host not in mlflow_stack_metrics_clients: no answer (systemd's
    IPAddressDeny) or 403 (HAProxy's ACL)."""
    for url in urls(scrape[job]):
        status, _ = fetch(node(OUTSIDER if job != "postgresql" else "mn-minio1"), url, timeout=3)
        assert status in (0, 403), (url, status)


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
