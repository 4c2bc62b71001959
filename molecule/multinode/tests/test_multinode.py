"""The multi-host topology: PostgreSQL on one host, MinIO distributed over four,
two tracking servers behind HAProxy, every shared port and name off its default.
Each service runs exactly where its group says. Clients go through the load
balancer and see no failed request while site.yml upgrades the tracking tier
(molecule.yml converges the release before the pin), when a tracking server
stops, when a MinIO node stops, or while playbooks/rolling-tracking.yml
restarts the tracking tier."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shlex
import time
import uuid
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest
import requests
import stack_client
import testinfra
import testinfra.host
import yaml
from availability import Probe
from botocore.client import BaseClient
from conftest import (
    MLFLOW_PIN,
    PG_CONF_DIR,
    PG_UNIT,
    PG_VERSION,
    Stack,
    answers,
    check_client_flow,
    ipv4_of,
    main_pid,
    record,
    run_playbook,
    run_site,
    runner,
    wait_for,
)
from gateway import read_key, secrets_config, stand_in_provider, store_key

# The tests look at the whole topology from the load balancer's point of view.
testinfra_hosts = ["mn-lb"]

STORAGE = [f"mn-minio{i}" for i in range(1, 5)]
TRACKING = ["mn-mlflow1", "mn-mlflow2"]
PIN = MLFLOW_PIN
# The release before the pin, which molecule.yml converges: the same alembic
# heads for both databases.
SCENARIO = yaml.safe_load((pathlib.Path(__file__).parents[1] / "molecule.yml").read_text())
SAME_SCHEMA = str(json.loads(SCENARIO["provisioner"]["options"]["extra-vars"])["mlflow_stack_mlflow_version"])
# No request through the load balancer may take longer, even while a server stops.
MAX_LATENCY = 2.0


def node(name: str) -> testinfra.host.Host:
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


def ipv4(name: str) -> str:
    return ipv4_of(node(name))


@pytest.fixture(autouse=True)
def downloads_through_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    # MLflow would hand this controller presigned URLs naming mn-lb, a name
    # only the containers resolve; the client streams through MLflow instead.
    for name, value in stack_client.multipart_settings(direct=False).items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def probe(mlflow_url: str) -> Iterator[Probe]:
    """A client logging a metric through the load balancer (see availability.Probe).
    Afterwards, every request it saw succeed must be stored, once: the metric's
    history has exactly as many entries as successes."""
    client = mlflow.MlflowClient(mlflow_url)
    run_id = client.create_run(client.create_experiment(f"probe-{uuid.uuid4().hex[:8]}")).info.run_id

    def body(number: int) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "key": "probe",
            "value": number,
            "step": number,
            "timestamp": int(time.time() * 1000),
        }

    probe = Probe(f"{mlflow_url}/api/2.0/mlflow/runs/log-metric", "POST", body).start()
    time.sleep(2)
    yield probe
    probe.stop()
    assert len(client.get_metric_history(run_id, "probe")) == probe.successes


def groups_of_platforms() -> dict[str, list[str]]:
    """Each host of the scenario and its inventory groups, from molecule.yml."""
    scenario = yaml.safe_load((pathlib.Path(__file__).parents[1] / "molecule.yml").read_text())
    return {platform["name"]: platform["groups"] for platform in scenario["platforms"]}


GROUPS = groups_of_platforms()


def in_group(group: str) -> list[str]:
    return [name for name, groups in GROUPS.items() if group in groups]


# Every unit the stack installs here (mlflow-model@<name>: test_serving.py,
# once models are served): the hosts it belongs on, and a file only its
# installation leaves. The backup tooling goes to the first database host
# (mlflow_backup_host), gc's timer to the first tracking host.
SERVICES = {
    "postgresql": (in_group("mlflow_database"), PG_UNIT, f"/usr/lib/postgresql/{PG_VERSION}/bin/postgres"),
    "backup timer": (
        in_group("mlflow_database")[:1],
        "mlflow-backup.timer",
        "/etc/systemd/system/mlflow-backup.timer",
    ),
    "postgresql exporter": (
        in_group("mlflow_database"),
        "prometheus-postgres-exporter",
        "/usr/bin/prometheus-postgres-exporter",
    ),
    "minio": (in_group("mlflow_storage"), "minio", "/usr/local/bin/minio"),
    "mlflow": (in_group("mlflow_tracking"), "mlflow", f"/opt/mlflow/venvs/{PIN}/bin/mlflow"),
    "mlflow metrics": (
        in_group("mlflow_tracking"),
        "mlflow-metrics",
        "/etc/systemd/system/mlflow-metrics.service",
    ),
    "gc timer": (in_group("mlflow_tracking")[:1], "mlflow-gc.timer", "/etc/systemd/system/mlflow-gc.timer"),
    "haproxy": (in_group("mlflow_loadbalancer"), "haproxy", "/usr/sbin/haproxy"),
}


def test_00_upgrade_without_schema_change_rolls_with_no_failed_request(probe: Probe, stack: Stack) -> None:
    """Molecule converged the release before the pin (same schema); site.yml with
    the pin installs it beside the old one on each server, then the servers roll
    one at a time through the load balancer, and a client sees no failed request.
    It runs first: every later test expects the pin."""
    before = {
        name: requests.get(f"http://{ipv4(name)}:{stack.tracking_port}/version", timeout=10).text.strip()
        for name in TRACKING
    }
    assert set(before.values()) == {SAME_SCHEMA}, before
    since = node("mn-lb").check_output("date '+%Y-%m-%d %H:%M:%S'")
    probe.mark("roll")
    result = run_site({})
    probe.mark("rolled")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "(no change)" in output, "the schema was not compared"
    assert "migration needed" not in output
    # Drained through the haproxy role's runtime API, one server after the other.
    drained = re.findall(r"\(item=mn-lb: drain mn-mlflow\d in mlflow_tracking\)", output)
    assert len(drained) == 2, output[-3000:]
    time.sleep(3)
    probe.stop()
    for name in TRACKING:
        served = requests.get(f"http://{ipv4(name)}:{stack.tracking_port}/version", timeout=10).text.strip()
        assert served == PIN, f"{name} serves {served}"
        # The old venv stays, to go back to (mlflow_venvs_keep).
        assert node(name).file(f"/opt/mlflow/venvs/{SAME_SCHEMA}/bin/mlflow").exists, name
    took = probe.marks["rolled"] - probe.marks["roll"]
    record(
        f"upgrade {SAME_SCHEMA} -> {PIN} ({took:.0f} s): {len(probe.outcomes)} requests,"
        f" {len(probe.failures)} failed, {probe.during(('roll', 'rolled'))} during the run"
    )
    check_with_lb_log(probe, ("roll", "rolled"), since)


@pytest.mark.parametrize(("name", "service"), [(n, s) for n in GROUPS for s in SERVICES])
def test_each_service_runs_exactly_where_its_group_says(name: str, service: str) -> None:
    hosts, unit, installed = SERVICES[service]
    wanted = name in hosts
    target = node(name)
    assert target.file(installed).exists == wanted, f"{service} installed on {name}: expected {wanted}"
    assert target.service(unit).is_running == wanted, f"{unit} running on {name}: expected {wanted}"


def test_minio_is_one_distributed_deployment_over_four_nodes(stack: Stack) -> None:
    volumes = {node(name).check_output("grep ^MINIO_VOLUMES= /etc/default/minio") for name in STORAGE}
    assert len(volumes) == 1, volumes
    assert all(f"http://{name}:{stack.s3_port}/var/lib/minio/data" in next(iter(volumes)) for name in STORAGE)
    info = json.loads(
        node("mn-minio1").check_output("/usr/local/bin/mcli --config-dir /root/.mcli --json admin info local")
    )
    servers = info["info"]["servers"]
    assert sorted(s["state"] for s in servers) == ["online"] * 4
    assert info["info"]["backend"]["onlineDisks"] == 4


def test_pg_hba_admits_exactly_the_tracking_hosts() -> None:
    hba = node("mn-db").check_output(f"cat {PG_CONF_DIR}/pg_hba.conf")
    clients = {line.split()[3] for line in hba.splitlines() if line.startswith("host")}
    assert clients == {f"{ipv4(name)}/32" for name in TRACKING}


def test_mlflow_accepts_the_load_balancer_names(address: str, stack: Stack) -> None:
    url = f"http://{address}:{stack.tracking_port}/api/2.0/mlflow/experiments/search?max_results=1"
    for name in ("mn-lb", address, "mlflow.multinode.test"):
        headers = {"Host": f"{name}:{stack.tracking_port}"}
        assert requests.get(url, headers=headers, timeout=10).status_code == 200, name
    assert requests.get(url, headers={"Host": "evil.example"}, timeout=10).status_code == 403


def test_the_balancer_publishes_its_frontends_and_runtime_api(address: str, stack: Stack) -> None:
    """ansible_local.haproxy, where tools find the load balancer (bench/'s
    scale-out reads it): the ports answer, the socket is HAProxy's own."""
    run = runner(node("mn-lb"))
    balancer = stack_client.balancer(run)
    assert balancer.mlflow_port == stack.tracking_port
    assert answers(f"http://{address}:{balancer.mlflow_port}/health")
    assert balancer.s3_port == stack.s3_port
    state = stack_client.runtime_api(run, balancer, "show servers state mlflow_tracking")
    assert all(name in state for name in TRACKING), state


def test_client_flow_through_the_load_balancer(mlflow_url: str, s3: BaseClient, stack: Stack) -> None:
    """Every shared port and name is off its default in this scenario: the client
    flow through them shows the wiring carried each one to both sides."""
    assert (stack.tracking_port, stack.s3_port, stack.database_port) == (5050, 9100, 5433)
    assert (stack.database, stack.database_user, stack.bucket) == ("tracking_mn", "tracker", "artifacts-mn")
    check_client_flow(mlflow_url, s3, stack.bucket)


def check_with_lb_log(probe: Probe, window: tuple[str, str], since: str) -> None:
    """probe.check, with HAProxy's own log of the failed requests (status and
    termination state) added to the message when it fails."""
    try:
        probe.check(window, max_latency=MAX_LATENCY)
    except AssertionError as err:
        log = (
            node("mn-lb").run(f"journalctl -t haproxy --no-pager -o cat --since {shlex.quote(since)}").stdout
        )
        errors = [line for line in str(log).splitlines() if re.search(r" (5\d\d|-1) ", line)]
        raise AssertionError(
            f"{err}\nhaproxy log of the failed requests:\n" + "\n".join(errors[:20])
        ) from err


def test_a_tracking_server_stops_and_no_request_fails(stack: Stack, probe: Probe) -> None:
    mlflow1 = node("mn-mlflow1")
    since = node("mn-lb").check_output("date '+%Y-%m-%d %H:%M:%S'")
    probe.mark("stop")
    mlflow1.check_output("systemctl stop mlflow")
    try:
        time.sleep(10)
    finally:
        probe.mark("start")
        mlflow1.check_output("systemctl start mlflow")
    wait_for(lambda: answers(f"http://{ipv4('mn-mlflow1')}:{stack.tracking_port}/health"), 120)
    time.sleep(5)
    probe.stop()
    slowest = max(o.latency for o in probe.outcomes)
    record(
        f"failover: {len(probe.outcomes)} requests, {len(probe.failures)} failed,"
        f" {probe.during(('stop', 'start'))} during the 10 s stop, slowest {slowest:.2f} s"
    )
    check_with_lb_log(probe, ("stop", "start"), since)


def test_a_minio_node_stops_and_artifacts_stay_readable_and_writable(
    mlflow_url: str, s3: BaseClient, stack: Stack
) -> None:
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
            o["Key"]
            for o in s3.list_objects_v2(Bucket=stack.bucket, Prefix=run.info.experiment_id)["Contents"]
        ]
        assert any(k.endswith("/during.txt") for k in keys)
    finally:
        minio1.check_output("systemctl start minio")
    wait_for(lambda: answers(f"http://{ipv4('mn-minio1')}:{stack.s3_port}/minio/health/cluster"), 120)
    record("minio node down: read an existing artifact, wrote and read a new one through the load balancer")


def test_rolling_restart_fails_no_request(probe: Probe) -> None:
    pids = {name: main_pid(node(name), "mlflow") for name in TRACKING}
    since = node("mn-lb").check_output("date '+%Y-%m-%d %H:%M:%S'")
    probe.mark("roll")
    result = run_playbook("playbooks/rolling-tracking.yml")
    probe.mark("rolled")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    time.sleep(3)
    probe.stop()
    new_pids = {name: main_pid(node(name), "mlflow") for name in TRACKING}
    assert all(pids[name] != new_pids[name] for name in TRACKING), (pids, new_pids)
    took = probe.marks["rolled"] - probe.marks["roll"]
    slowest = max(o.latency for o in probe.outcomes)
    record(
        f"rolling restart ({took:.0f} s): {len(probe.outcomes)} requests, {len(probe.failures)} failed,"
        f" {probe.during(('roll', 'rolled'))} during the roll, slowest {slowest:.2f} s"
    )
    check_with_lb_log(probe, ("roll", "rolled"), since)


EXPORTER = "prometheus-postgres-exporter.service"
# A runtime drop-in (gone with the test): every start fails while the flag file
# exists, and systemd allows one start an hour. No timing: once the flag is
# gone, starts are refused all the same until the failures are cleared.
EXPORTER_HOLD_DIR = f"/run/systemd/system/{EXPORTER}.d"
EXPORTER_HOLD = """[Unit]
StartLimitIntervalSec=1h
StartLimitBurst=1
[Service]
ExecStartPre=/bin/sh -c '! test -e /run/hold-exporter'
Restart=no
"""


def hold_exporter_at_its_start_limit(db: testinfra.host.Host) -> dict[str, Any]:
    """The state a fresh database host can be in when the role reaches the
    exporter (Debian's postinst started it before its settings, and it failed
    until systemd refused it): failed, and refused although nothing is wrong
    with it any more. What was seen goes to the test, which asserts on it."""
    db.check_output(
        f"mkdir -p {EXPORTER_HOLD_DIR}"
        f" && printf %s {shlex.quote(EXPORTER_HOLD)} > {EXPORTER_HOLD_DIR}/hold.conf"
        f" && systemctl daemon-reload && touch /run/hold-exporter"
    )
    failed = db.run(f"systemctl restart {EXPORTER}").rc
    db.check_output("rm -f /run/hold-exporter")
    refused = db.run(f"systemctl start {EXPORTER}").rc
    return {
        "failed": failed,
        "refused": refused,
        "state": db.check_output(f"systemctl show -p ActiveState --value {EXPORTER}"),
    }


@pytest.fixture(scope="module")
def jobs_on() -> dict[str, Any]:
    """Job execution turned on as a site would (after the availability tests:
    each server's consumers import MLflow for ~19 CPU-seconds after /health,
    which slows requests during a roll on these shared two cores). The same run
    (one site run for both, CI time) meets mn-db's exporter held at its start
    limit; whatever happens, the hold goes afterwards."""
    db = node("mn-db")
    try:
        held = hold_exporter_at_its_start_limit(db)
        result = run_site({"mlflow_jobs_enabled": True})
        # Before the teardown, which would start it too.
        held["after_run"] = db.run(f"systemctl is-active {EXPORTER}").stdout.strip()
    finally:
        db.check_output(
            f"rm -rf {EXPORTER_HOLD_DIR} /run/hold-exporter && systemctl daemon-reload"
            f' && if [ "$(systemctl is-active {EXPORTER})" != active ]; then'
            f" systemctl reset-failed {EXPORTER}; systemctl start {EXPORTER}; fi"
        )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return {"held": held, "output": result.stdout}


def test_a_run_clears_an_exporter_held_at_its_start_limit_and_starts_it(jobs_on: dict[str, Any]) -> None:
    """The run that met the held exporter (jobs_on) cleared its failures on mn-db
    and started it: without the role's clearing step, its start is refused."""
    held = jobs_on["held"]
    assert held["failed"] != 0, "the held exporter started: the hold did not work"
    assert held["refused"] != 0, "systemd started the exporter: it was not at its start limit"
    assert held["state"] == "failed"
    task = r"TASK \[postgresql : Clear the exporter's failed state and start limit\][^\n]*\n"
    cleared = re.search(task + r"\s*(changed|ok|skipping): \[mn-db\]", jobs_on["output"])
    assert cleared, "no result of the clearing task for mn-db in the run's output"
    assert cleared.group(1) == "changed", "the run did not clear the exporter's start limit"
    assert held["after_run"] == "active", "the run left the exporter stopped"


@pytest.mark.usefixtures("jobs_on")
def test_periodic_tasks_run_on_exactly_the_named_tracking_server() -> None:
    """Job execution on both servers; the periodic-tasks consumer on mn-mlflow2 only
    (mlflow_jobs_periodic_host), as MLflow asks of several replicas."""
    expected = {"mn-mlflow1": "false", "mn-mlflow2": "true"}
    for name, periodic in expected.items():
        environment = node(name).check_output("systemctl show -p Environment --value mlflow").split()
        assert "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true" in environment, name
        assert f"MLFLOW_SERVER_JOB_ENABLE_PERIODIC_TASKS={periodic}" in environment, name
    # The consumer starts a little after /health: wait for it where it belongs.
    # ([j]: the shell running pgrep holds the pattern too, and must not match it.)
    consumer = "pgrep -fc '[j]obs[.]_periodic_tasks_consumer[.]huey_instance' || true"
    wait_for(lambda: node("mn-mlflow2").check_output(consumer) == "1", timeout=120)
    assert node("mn-mlflow1").check_output(consumer) == "0"


@pytest.mark.usefixtures("jobs_on")
def test_a_job_submitted_through_the_load_balancer_completes(mlflow_url: str) -> None:
    """An online-scoring job with no scorers: it runs in a server's job consumers
    and succeeds, whichever server the load balancer gave it to."""
    client = mlflow.MlflowClient(mlflow_url)
    experiment_id = client.create_experiment(f"jobs-{uuid.uuid4().hex[:8]}")
    submitted = requests.post(
        f"{mlflow_url}/ajax-api/3.0/jobs/",
        json={
            "job_name": "run_online_trace_scorer",
            "params": {"experiment_id": experiment_id, "online_scorers": []},
        },
        timeout=30,
    )
    assert submitted.ok, submitted.text
    job_id = submitted.json()["job_id"]
    status: dict[str, Any] = {}

    def finished() -> bool:
        status.update(requests.get(f"{mlflow_url}/ajax-api/3.0/jobs/{job_id}", timeout=30).json())
        return status["status"] not in {"PENDING", "RUNNING"}

    wait_for(finished, timeout=180)
    assert status["status"] == "SUCCEEDED", status


def test_every_tracking_server_reads_a_key_stored_through_the_lb(mlflow_url: str, stack: Stack) -> None:
    """One gateway passphrase for the tier: a provider key stored through the load
    balancer is decrypted by each server, asked directly."""
    api_key = f"sk-{uuid.uuid4().hex}"
    endpoint = store_key(mlflow_url, api_key)
    for name in TRACKING:
        server = f"http://{ipv4(name)}:{stack.tracking_port}"
        assert secrets_config(server)["using_default_passphrase"] is False, name
        with stand_in_provider(node(name)):
            assert read_key(server, endpoint) == api_key, name
