"""The multi-host topology: PostgreSQL on one host, MinIO distributed over four,
two tracking servers behind HAProxy. Clients go through the load balancer and
see no failed request when a tracking server stops, when a MinIO node stops, or
while playbooks/rolling-tracking.yml restarts the tracking tier."""

from __future__ import annotations

import json
import os
import pathlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import mlflow
import pytest
import requests
import testinfra
import testinfra.host
from botocore.client import BaseClient
from conftest import check_client_flow, ipv4_of, record, run_playbook

# The tests look at the whole topology from the load balancer's point of view.
testinfra_hosts = ["mn-lb"]

STORAGE = [f"mn-minio{i}" for i in range(1, 5)]
TRACKING = ["mn-mlflow1", "mn-mlflow2"]


def node(name: str) -> testinfra.host.Host:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


def ipv4(name: str) -> str:
    return ipv4_of(node(name))


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:
        return False


def wait_for(check: Callable[[], bool], seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(1)


@pytest.fixture(autouse=True)
def downloads_through_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow would hand this controller presigned URLs naming mn-lb, a name
    # only the containers resolve; the client streams through MLflow instead.
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD", "false")


@dataclass
class Loop:
    """A client logging a metric through the load balancer as fast as it can,
    with no retries of its own: every failure counts. Each request has its own
    connection, so a failure is the load balancer's, not the race of a reused
    keep-alive connection that a stopping server has just closed (which HTTP
    clients such as MLflow's retry)."""

    url: str
    run_id: str
    requests: int = 0
    failed: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            body: dict[str, str | int] = {
                "run_id": self.run_id,
                "key": "loop",
                "value": self.requests,
                "step": self.requests,
                "timestamp": int(time.time() * 1000),
            }
            try:
                response = requests.post(
                    f"{self.url}/api/2.0/mlflow/runs/log-metric",
                    json=body,
                    headers={"Connection": "close"},
                    timeout=60,
                )
                if response.status_code != 200:
                    self.failed.append(f"{response.status_code} {response.text[:200]}")
            except requests.RequestException as err:
                self.failed.append(repr(err))
            self.requests += 1
            time.sleep(0.02)


@pytest.fixture
def client_loop(mlflow_url: str) -> Iterator[Loop]:
    client = mlflow.MlflowClient(mlflow_url)
    run = client.create_run(client.create_experiment(f"loop-{uuid.uuid4().hex[:8]}"))
    loop = Loop(mlflow_url, run.info.run_id)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    time.sleep(2)
    yield loop
    loop.stop.set()
    thread.join(timeout=90)
    # Every request the client saw succeed was stored, once.
    history = client.get_metric_history(loop.run_id, "loop")
    assert len(history) == loop.requests - len(loop.failed)


def test_every_tier_runs_on_its_own_hosts() -> None:
    units = {"mn-db": "postgresql@15-main", "mn-lb": "haproxy"}
    units |= dict.fromkeys(STORAGE, "minio") | dict.fromkeys(TRACKING, "mlflow")
    for name, unit in units.items():
        assert node(name).service(unit).is_running, f"{unit} on {name}"
    for name in ("mn-lb", "mn-db"):
        assert not node(name).exists("/usr/local/bin/minio")
        assert not node(name).exists("/opt/mlflow/venv")


def test_minio_is_one_distributed_deployment_over_four_nodes() -> None:
    volumes = {node(name).check_output("grep ^MINIO_VOLUMES= /etc/default/minio") for name in STORAGE}
    assert len(volumes) == 1, volumes
    assert all(f"http://{name}:9000/var/lib/minio/data" in next(iter(volumes)) for name in STORAGE)
    info = json.loads(
        node("mn-minio1").check_output("/usr/local/bin/mcli --config-dir /root/.mcli --json admin info local")
    )
    servers = info["info"]["servers"]
    assert sorted(s["state"] for s in servers) == ["online"] * 4
    assert info["info"]["backend"]["onlineDisks"] == 4


def test_pg_hba_admits_exactly_the_tracking_hosts() -> None:
    hba = node("mn-db").check_output("cat /etc/postgresql/15/main/pg_hba.conf")
    clients = {line.split()[3] for line in hba.splitlines() if line.startswith("host")}
    assert clients == {f"{ipv4(name)}/32" for name in TRACKING}


def test_mlflow_accepts_the_load_balancer_names(address: str) -> None:
    url = f"http://{address}:5000/api/2.0/mlflow/experiments/search?max_results=1"
    for name in ("mn-lb", address, "mlflow.multinode.test"):
        assert requests.get(url, headers={"Host": f"{name}:5000"}, timeout=10).status_code == 200, name
    assert requests.get(url, headers={"Host": "evil.example"}, timeout=10).status_code == 403


def test_client_flow_through_the_load_balancer(mlflow_url: str, s3: BaseClient) -> None:
    check_client_flow(mlflow_url, s3)


def test_a_tracking_server_stops_and_no_request_fails(mlflow_url: str, client_loop: Loop) -> None:
    mlflow1 = node("mn-mlflow1")
    mlflow1.check_output("systemctl stop mlflow")
    try:
        time.sleep(10)
        during = client_loop.requests
        assert not client_loop.failed, client_loop.failed[:5]
    finally:
        mlflow1.check_output("systemctl start mlflow")
    wait_for(lambda: answers(f"http://{ipv4('mn-mlflow1')}:5000/health"), 120)
    time.sleep(5)
    record(
        f"failover: {client_loop.requests} requests, {len(client_loop.failed)} failed"
        f" ({during} by the end of the 10 s stop)"
    )
    assert not client_loop.failed, client_loop.failed[:5]


def test_a_minio_node_stops_and_artifacts_stay_readable_and_writable(mlflow_url: str, s3: BaseClient) -> None:
    client = mlflow.MlflowClient(mlflow_url)
    run = client.create_run(client.create_experiment(f"minio-down-{uuid.uuid4().hex[:8]}"))
    client.log_text(run.info.run_id, "written with four nodes", "before.txt")
    minio1 = node("mn-minio1")
    minio1.check_output("systemctl stop minio")
    try:
        path = client.download_artifacts(run.info.run_id, "before.txt")
        assert pathlib.Path(path).read_text() == "written with four nodes"
        client.log_text(run.info.run_id, "written with three nodes", "during.txt")
        path = client.download_artifacts(run.info.run_id, "during.txt")
        assert pathlib.Path(path).read_text() == "written with three nodes"
        keys = [
            o["Key"] for o in s3.list_objects_v2(Bucket="mlflow", Prefix=run.info.experiment_id)["Contents"]
        ]
        assert any(k.endswith("/during.txt") for k in keys)
    finally:
        minio1.check_output("systemctl start minio")
    wait_for(lambda: answers(f"http://{ipv4('mn-minio1')}:9000/minio/health/cluster"), 120)
    record("minio node down: read an existing artifact, wrote and read a new one through the load balancer")


def test_rolling_restart_fails_no_request(client_loop: Loop) -> None:
    pids = {name: node(name).check_output("systemctl show -p MainPID --value mlflow") for name in TRACKING}
    start = time.monotonic()
    result = run_playbook("playbooks/rolling-tracking.yml")
    took = time.monotonic() - start
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    time.sleep(3)
    new_pids = {
        name: node(name).check_output("systemctl show -p MainPID --value mlflow") for name in TRACKING
    }
    assert all(pids[name] != new_pids[name] for name in TRACKING), (pids, new_pids)
    record(
        f"rolling restart ({took:.0f} s): {client_loop.requests} requests, {len(client_loop.failed)} failed"
    )
    assert not client_loop.failed, client_loop.failed[:5]
