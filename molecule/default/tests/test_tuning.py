"""The tuned tracking tier, seen on the running services: one uvicorn worker
per vCPU; the database pools keep their
connections under a burst that a stock pool (5 + 10 overflow per worker) would
serve by opening and closing connections; PostgreSQL runs with settings sized
from the host and keeps fsync and synchronous_commit on; every request leaves
an access line in the journal."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import requests
import testinfra.host
from conftest import main_pid

API = "/api/2.0/mlflow"


def workers(host: testinfra.host.Host) -> list[int]:
    """uvicorn's worker processes: the children of its supervisor, itself the
    child of `mlflow server` (the unit's main process)."""
    supervisor = host.check_output(f"pgrep -P {main_pid(host, 'mlflow')} -f uvicorn")
    children = host.check_output(f"pgrep -P {supervisor.split()[0]} -f spawn_main")
    return [int(pid) for pid in children.split()]


def psql(host: testinfra.host.Host, query: str) -> str:
    return str(host.check_output(f"runuser -u postgres -- psql -AtXc {query!r}"))


def test_one_worker_per_vcpu(host: testinfra.host.Host) -> None:
    assert len(workers(host)) == max(int(host.check_output("nproc")), 2)


def test_under_a_burst_every_connection_opened_stays_open(host: testinfra.host.Host, mlflow_url: str) -> None:
    """8 concurrent clients: about 4 requests per worker in flight, each holding
    up to 3 connections: more than a stock pool keeps (5; the rest are opened
    and closed per request), within this one (3 x mlflow_db_concurrency 16 /
    2 workers = 24). The pools may grow during the burst, but every connection
    PostgreSQL opened for it is still open after it: none was opened for one
    request."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=8, pool_maxsize=8)
    session.mount("http://", adapter)
    experiment = session.post(
        f"{mlflow_url}{API}/experiments/create", json={"name": f"pool-{uuid.uuid4().hex[:8]}"}, timeout=30
    ).json()["experiment_id"]
    runs = [
        session.post(f"{mlflow_url}{API}/runs/create", json={"experiment_id": experiment}, timeout=30).json()[
            "run"
        ]["info"]["run_id"]
        for _ in range(32)
    ]

    def log(index: int) -> int:
        metrics = [{"key": f"m{k}", "value": float(index), "timestamp": 0, "step": index} for k in range(10)]
        body = {"run_id": runs[index % 32], "metrics": metrics}
        return session.post(f"{mlflow_url}{API}/runs/log-batch", json=body, timeout=30).status_code

    def connections() -> tuple[int, int]:
        """Connections to MLflow's database opened so far, and open now (psql
        itself connects to the database postgres)."""
        opened = psql(host, "SELECT sessions FROM pg_stat_database WHERE datname = 'mlflow'")
        open_now = psql(host, "SELECT count(*) FROM pg_stat_activity WHERE datname = 'mlflow'")
        return int(opened), int(open_now)

    opened_before, open_before = connections()
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(log, range(960))) == {200}
    opened_after, open_after = connections()
    opened = opened_after - opened_before
    closed = opened - (open_after - open_before)
    assert closed <= 1, f"{opened} connections opened for 960 requests, {closed} of them closed again"
    # Bounded by the pools and overflows: 2 workers x 2 engines x (24 + 1).
    assert open_after <= 100, open_after


def test_postgresql_is_sized_from_the_host_and_stays_durable(host: testinfra.host.Host) -> None:
    memory_mb = int(host.check_output("awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo"))
    shared_buffers_mb = int(
        psql(host, "SELECT setting::bigint * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'")
    )
    # A quarter of the memory, to within a page's rounding and facts' MB.
    assert abs(shared_buffers_mb - memory_mb // 4) <= 2, (shared_buffers_mb, memory_mb)
    assert psql(host, "SHOW max_wal_size") == "4GB"
    assert psql(host, "SHOW random_page_cost") == "1.1"
    assert psql(host, "SHOW fsync") == "on"
    assert psql(host, "SHOW synchronous_commit") == "on"
    assert psql(host, "SHOW full_page_writes") == "on"


def test_each_request_leaves_an_access_line(host: testinfra.host.Host, mlflow_url: str) -> None:
    marker = uuid.uuid4().hex
    assert requests.get(f"{mlflow_url}/health", params={"probe": marker}, timeout=10).status_code == 200

    def access_line() -> str:
        journal = host.run(f"journalctl -u mlflow --no-pager -n 200 -g {marker}").stdout
        return next((line for line in journal.splitlines() if marker in line), "")

    for _ in range(50):  # journald may take a moment
        if access_line():
            break
        host.run("sleep 0.2")
    line = access_line()
    assert f"GET /health?probe={marker}" in line, line
    assert " 200" in line, line
