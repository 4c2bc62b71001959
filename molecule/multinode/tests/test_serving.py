"""The serving tier: mn-mlflow1 and mn-mlflow2 also serve registered models
(mlflow-model@<name>), behind a frontend per model on mn-lb. A scikit-learn
model registered with alias `champion` is served at the version the alias named
when it was deployed, with the predictions it makes in-process; a model that
needs a package MLflow does not bring gets it in its own venv; a killed service
comes back at the same version; moving the alias and running
playbooks/roll-model.yml switches the hosts one at a time while a client sees
no failed request; bad entries fail before anything changes.

The models are passed as extra vars (a site keeps them in
group_vars/mlflow_serving): they can only be listed once they are registered,
which the molecule converge precedes.
"""

from __future__ import annotations

import json
import pathlib
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import jmespath
import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
import scipy
import sklearn
import skops
from availability import Probe
from conftest import (
    MAX_EXPOSURE,
    MLFLOW_PIN,
    answers,
    check_exposure,
    main_pid,
    record,
    run_playbook,
    run_site,
    wait_for,
)
from sklearn.linear_model import LogisticRegression

# downloads_through_mlflow (autouse): the controller loads models in-process
# through the tracking server, not from presigned URLs naming mn-lb.
from test_multinode import GROUPS, TRACKING, check_with_lb_log, downloads_through_mlflow, ipv4, node  # noqa: F401

testinfra_hosts = ["mn-lb"]

PIN = MLFLOW_PIN
CHURN_PORT, LOOKUP_PORT = 5101, 5102
# Inputs the tests predict on: the first half is positive for version 1, the
# second half for version 2 (trained on the opposite labels).
X = np.array([[0.9, 0.2, 0.1], [0.8, 0.5, 0.3], [0.1, 0.7, 0.9], [0.05, 0.2, 0.4]])
# A bound a restart must meet, from kill -9 to /ping answering again.
RESTART_BOUND = 15.0
CONFIG, MODELS = "/etc/mlflow-serving", "/opt/mlflow-serving/models"


@dataclass(frozen=True)
class Registered:
    models: list[dict[str, Any]]
    run_seconds: float
    output: str


def log_churn(client: mlflow.MlflowClient, flipped: bool) -> str:
    """Registers a new version of `churn` and returns its number."""
    rng = np.random.default_rng(7)
    features = rng.random((200, 3))
    labels = (features[:, 0] > 0.5).astype(int)
    model = LogisticRegression().fit(features, 1 - labels if flipped else labels)
    requirements = [
        f"mlflow=={mlflow.__version__}",
        f"scikit-learn=={sklearn.__version__}",
        f"numpy=={np.__version__}",
        f"pandas=={pd.__version__}",
        f"scipy=={scipy.__version__}",
        f"skops=={skops.__version__}",
    ]
    with mlflow.start_run(experiment_id=client.create_experiment(f"serving-{uuid.uuid4().hex[:8]}")):
        info = mlflow.sklearn.log_model(
            model, name="model", registered_model_name="churn", pip_requirements=requirements
        )
    return str(info.registered_model_version)


def invoke(url: str, rows: np.ndarray | list[dict[str, Any]]) -> list[Any]:
    body = {"inputs": rows.tolist()} if isinstance(rows, np.ndarray) else {"dataframe_records": rows}
    response = requests.post(f"{url}/invocations", json=body, timeout=30)
    assert response.status_code == 200, response.text[:500]
    return list(response.json()["predictions"])


def in_process(version: str) -> list[Any]:
    return list(mlflow.pyfunc.load_model(f"models:/churn/{version}").predict(X))


@pytest.fixture(scope="module")
def registered(mlflow_url: str) -> Registered:
    """churn 1 (alias champion) and 2, lookup 1, and a version that is no model;
    then site.yml serves churn@champion and lookup/1."""
    mlflow.set_tracking_uri(mlflow_url)
    mlflow.set_registry_uri(mlflow_url)
    client = mlflow.MlflowClient(mlflow_url)
    assert log_churn(client, flipped=False) == "1"
    client.set_registered_model_alias("churn", "champion", "1")
    assert log_churn(client, flipped=True) == "2"
    with mlflow.start_run(experiment_id=client.create_experiment(f"lookup-{uuid.uuid4().hex[:8]}")):
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(pathlib.Path(__file__).with_name("jmespath_model.py")),
            registered_model_name="lookup",
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"pandas=={pd.__version__}",
                f"jmespath=={jmespath.__version__}",
            ],
        )
    # A registered version whose files are a plain text file, not an MLflow model.
    run = client.create_run(client.create_experiment(f"not-a-model-{uuid.uuid4().hex[:8]}"))
    client.log_text(run.info.run_id, "just text", "notes/readme.txt")
    client.create_registered_model("not-a-model")
    client.create_model_version("not-a-model", f"runs:/{run.info.run_id}/notes", run.info.run_id)
    models = [
        {"name": "churn", "model_uri": "models:/churn@champion", "port": CHURN_PORT, "workers": 2},
        {
            "name": "lookup",
            "model_uri": "models:/lookup/1",
            "port": LOOKUP_PORT,
            "environment": {"OMP_NUM_THREADS": "1"},
        },
    ]
    start = time.monotonic()
    result = run_site({"mlflow_serving_models": models})
    took = time.monotonic() - start
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    record(f"site.yml serving two models on two hosts (first deployment): {took:.0f} s")
    return Registered(models, took, output)


def served(host: str, port: int = CHURN_PORT) -> str:
    return f"http://{ipv4(host)}:{port}"


def lb(address: str, port: int = CHURN_PORT) -> str:
    return f"http://{address}:{port}"


def wait_through_lb(address: str, port: int) -> None:
    wait_for(lambda: answers(f"{lb(address, port)}/ping"), 60)


@pytest.mark.parametrize("name", list(GROUPS))
def test_models_run_exactly_on_the_serving_hosts(registered: Registered, name: str) -> None:
    """The placement matrix's last unit (test_multinode.py has the others):
    mlflow-model@<name>, one per model, on each mlflow_serving host and no other."""
    wanted = "mlflow_serving" in GROUPS[name]
    target = node(name)
    running = target.check_output(
        "systemctl list-units --type=service --state=running --no-legend --plain 'mlflow-model@*'"
    )
    units = {line.split()[0] for line in running.splitlines() if line.strip()}
    expected = {f"mlflow-model@{model['name']}.service" for model in registered.models} if wanted else set()
    assert units == expected, name
    assert target.file("/etc/systemd/system/mlflow-model@.service").exists == wanted, name


def test_champion_is_served_with_its_in_process_predictions(registered: Registered, address: str) -> None:
    expected = in_process("1")
    assert expected == [1, 1, 0, 0], expected
    for name in TRACKING:
        assert invoke(served(name), X) == expected, name
    wait_through_lb(address, CHURN_PORT)
    assert invoke(lb(address), X) == expected


def test_ping_health_and_version_answer(registered: Registered, address: str) -> None:
    for url in [served(name) for name in TRACKING] + [lb(address)]:
        for path in ("/ping", "/health"):
            assert requests.get(f"{url}{path}", timeout=10).status_code == 200, f"{url}{path}"
        assert requests.get(f"{url}/version", timeout=10).text.strip() == PIN, url


def test_the_served_version_is_visible(registered: Registered) -> None:
    """In a file, a local fact, the journal and the run's verify output."""
    assert "mlflow-model@churn: models:/churn@champion -> version 1" in registered.output
    for name in TRACKING:
        host = node(name)
        record_file = json.loads(host.file("/etc/mlflow-serving/churn.json").content_string)
        assert record_file == {"model_uri": "models:/churn@champion", "version": "1", "port": CHURN_PORT}
        facts = host.ansible("setup", "filter=ansible_local", check=False)["ansible_facts"]["ansible_local"]
        assert facts["mlflow_serving"]["churn"]["version"] == "1", facts
        journal = host.check_output("journalctl -u mlflow-model@churn --no-pager -o cat")
        assert "mlflow-model@churn: serving models:/churn@champion at version 1 on port 5101" in journal
        assert host.file(f"{MODELS}/churn/current").linked_to == f"{MODELS}/churn/1"


def test_a_model_with_its_own_requirement_is_served(registered: Registered, address: str) -> None:
    """jmespath is in neither MLflow nor the base: its own venv has the pinned version."""
    rows = [{"x": 3}, {"x": 5}]
    for name in TRACKING:
        assert invoke(served(name, LOOKUP_PORT), rows) == [
            f"jmespath {jmespath.__version__}: 3",
            f"jmespath {jmespath.__version__}: 5",
        ], name
        venvs = {node(name).file(f"{MODELS}/{model}/1/venv").linked_to for model in ("churn", "lookup")}
        assert len(venvs) == 2, f"{name}: the two models share a venv: {venvs}"
    wait_through_lb(address, LOOKUP_PORT)


@pytest.mark.parametrize("unit", ["mlflow-model@churn.service", "mlflow-model@lookup.service"])
def test_model_services_are_sandboxed(registered: Registered, unit: str) -> None:
    host = node("mn-mlflow1")
    assert check_exposure(host, unit) <= MAX_EXPOSURE
    pid = main_pid(host, unit)
    status = host.check_output(f"cat /proc/{pid}/status")
    assert re.search(r"^Uid:\s+([1-9]\d+)", status, re.M), "runs as root"
    assert re.search(r"^CapEff:\s+0+$", status, re.M), "has capabilities"
    # Its files are readable to it and to nobody else outside root and its group.
    assert host.file(f"{MODELS}/churn/1/model/MLmodel").mode == 0o640


def test_kill_9_comes_back_at_the_same_version(registered: Registered) -> None:
    host = node("mn-mlflow2")
    before = main_pid(host, "mlflow-model@churn")
    host.check_output(f"kill -9 {before}")
    start = time.monotonic()
    took = wait_for(
        lambda: (
            main_pid(host, "mlflow-model@churn") not in (0, before)
            and answers(f"{served('mn-mlflow2')}/ping", timeout=2)
        ),
        RESTART_BOUND + 15,
    )
    record(f"mlflow-model@churn back {took:.1f} s after kill -9")
    assert took <= RESTART_BOUND, f"back after {took:.1f} s"
    assert time.monotonic() - start <= RESTART_BOUND + 1
    assert invoke(served("mn-mlflow2"), X) == in_process("1")


def fingerprint() -> str:
    """What a failed run must leave as it was on the serving hosts."""
    parts = []
    for name in TRACKING:
        host = node(name)
        parts.append(host.check_output(f"ls -lR --time-style=full-iso {CONFIG} {MODELS}"))
        parts.append(host.check_output("md5sum /etc/mlflow-serving/*.env /etc/mlflow-serving/*.json"))
        parts.append(" ".join(str(main_pid(host, f"mlflow-model@{m}")) for m in ("churn", "lookup")))
    return "\n".join(parts)


# Entries the registry or the host rules out, all in one run: the check reports
# every problem at once, each with its entry.
BAD = [
    ("does not have", {"name": "bad1", "model_uri": "models:/no-such-model@champion", "port": 5111}),
    ("has no alias 'nosuch'", {"name": "bad2", "model_uri": "models:/churn@nosuch", "port": 5112}),
    ("has no version 99", {"name": "bad3", "model_uri": "models:/churn/99", "port": 5113}),
    ("has no MLmodel", {"name": "bad4", "model_uri": "models:/not-a-model/1", "port": 5114}),
    # A program outside the stack listens there (started by the test).
    ("in use on mn-mlflow1 by python3", {"name": "bad5", "model_uri": "models:/churn/1", "port": 5199}),
]
# The tracking server's port (on the same host, and a frontend on the load
# balancer's): the inventory check stops it first, naming the stack's port.
CLASH = (
    "which the stack uses (mlflow_stack_tracking_port)",
    {"name": "churn", "model_uri": "models:/churn/1", "port": 5050},
)


def test_bad_entries_fail_early_name_the_variable_and_change_nothing(registered: Registered) -> None:
    squatter = node("mn-mlflow1")
    squatter.check_output("systemd-run --unit squatter /usr/bin/python3 -m http.server 5199 --bind 0.0.0.0")
    try:
        wait_for(lambda: squatter.socket("tcp://0.0.0.0:5199").is_listening, 20)
        before = fingerprint()
        runs = [[entry for _, entry in BAD], [CLASH[1]]]
        with ThreadPoolExecutor(len(runs)) as pool:
            bad, clash = pool.map(lambda models: run_site({"mlflow_serving_models": models}), runs)
        after = fingerprint()
    finally:
        squatter.run("systemctl stop squatter")
    for result, cases in ((bad, BAD), (clash, [CLASH])):
        output = result.stdout + result.stderr
        assert result.returncode != 0, f"{[entry for _, entry in cases]} were accepted"
        assert "Download the version" not in output, "the run went past the checks"
        lines = [line for line in output.splitlines() if "mlflow_serving_models" in line]
        for phrase, entry in cases:
            assert any(phrase in line for line in lines), (
                f"{entry}: no message naming mlflow_serving_models with '{phrase}':\n{output[-3000:]}"
            )
    assert before == after


def test_a_restart_keeps_the_version_after_the_alias_moved(registered: Registered, mlflow_url: str) -> None:
    """The alias names version 2 now; a restart (or a site run) still serves 1."""
    mlflow.MlflowClient(mlflow_url).set_registered_model_alias("churn", "champion", "2")
    host = node("mn-mlflow1")
    host.check_output("systemctl restart mlflow-model@churn")
    wait_for(lambda: answers(f"{served('mn-mlflow1')}/ping", timeout=2), 60)
    assert invoke(served("mn-mlflow1"), X) == in_process("1")


def test_roll_model_switches_with_no_failed_request(
    registered: Registered, address: str, mlflow_url: str
) -> None:
    client = mlflow.MlflowClient(mlflow_url)
    client.set_registered_model_alias("churn", "champion", "2")
    moved = time.monotonic()
    wait_through_lb(address, CHURN_PORT)
    probe = Probe(f"{lb(address)}/invocations", "POST", lambda _: {"inputs": X.tolist()}, max_seconds=400)
    lookup_pids = {name: main_pid(node(name), "mlflow-model@lookup") for name in TRACKING}
    assert all(lookup_pids.values()), lookup_pids
    since = node("mn-lb").check_output("date '+%Y-%m-%d %H:%M:%S'")
    probe.start()
    time.sleep(2)
    probe.mark("roll")
    result = run_playbook(
        "playbooks/roll-model.yml", {"mlflow_serving_models": registered.models}, "-e", "model=churn"
    )
    probe.mark("rolled")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    time.sleep(2)
    probe.stop()
    rolled = time.monotonic() - moved
    expected = in_process("2")
    assert expected != in_process("1")
    for name in TRACKING:
        assert invoke(served(name), X) == expected, name
    assert invoke(lb(address), X) == expected
    # Drained and put back one host at a time, the other model untouched.
    assert len(re.findall(r"\(item=mn-lb: drain mn-mlflow\d in model_", output)) == 2, output[-3000:]
    assert "mlflow-model@lookup: models:/lookup/1 -> version 1" in output
    assert {name: main_pid(node(name), "mlflow-model@lookup") for name in TRACKING} == lookup_pids, (
        "the roll of churn restarted lookup"
    )
    took = probe.marks["rolled"] - probe.marks["roll"]
    record(
        f"roll-model.yml churn 1 -> 2 ({took:.0f} s; alias moved -> version 2 served"
        f" everywhere {rolled:.0f} s): {len(probe.outcomes)} requests, {len(probe.failures)} failed,"
        f" {probe.during(('roll', 'rolled'))} during the roll"
    )
    check_with_lb_log(probe, ("roll", "rolled"), since)
    # Version 1 stays to go back to (mlflow_serving_versions_keep: 1); both share one venv.
    for name in TRACKING:
        host = node(name)
        assert host.file(f"{MODELS}/churn/1/model/MLmodel").exists
        assert host.file(f"{MODELS}/churn/1/venv").linked_to == host.file(f"{MODELS}/churn/2/venv").linked_to


def test_a_second_roll_changes_nothing(registered: Registered) -> None:
    result = run_playbook(
        "playbooks/roll-model.yml", {"mlflow_serving_models": registered.models}, "-e", "model=churn"
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    recap = re.findall(r"^(mn-\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M)
    assert recap, output[-2000:]
    assert all(changed == "0" for _, changed in recap), recap
