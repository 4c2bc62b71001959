"""Fixtures and helpers shared by the verify tests of every scenario: the converged host, its
address, its secrets and stack wiring from the Molecule inventory, the pins from the role
defaults, service names and main PIDs, waits, S3 clients and site runs."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import boto3
import mlflow
import numpy as np
import pytest
import requests
import stack_client
import testinfra.host
import yaml
from botocore.client import BaseClient
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression

ROOT = pathlib.Path(__file__).resolve().parents[1]
MEASUREMENTS = ROOT / ".cache" / "verify-measurements.txt"
# The in-repository collection first, as ansible.cfg has it.
COLLECTIONS_PATH = f"{ROOT / 'collections'}:~/.ansible/collections:/usr/share/ansible/collections"


def record(line: str) -> None:
    """Keep a measured number for the report scripts/test prints at the end
    (scripts/test empties the file before the first scenario)."""
    MEASUREMENTS.parent.mkdir(exist_ok=True)
    scenario = os.environ.get("MOLECULE_SCENARIO_NAME", "?")
    with MEASUREMENTS.open("a") as report:
        report.write(f"[{scenario}] {line}\n")


def role_defaults(role: str) -> dict[str, Any]:
    """The defaults/main.yml of a role: the single place its pins live."""
    return role_file(role, "defaults")


def role_file(role: str, kind: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "roles" / role / kind / "main.yml").read_text())
    return data


WIRING = ROOT / "inventories" / "lab" / "group_vars" / "all" / "00-stack.yml"
# The MLflow release of the whole stack, from the one line that names it.
MLFLOW_PIN = str(yaml.safe_load(WIRING.read_text())["mlflow_stack_mlflow_version"])


# The PostgreSQL cluster unit of the test image (Debian 12), from the role's own table.
PG_VERSION = role_file("postgresql", "vars")["__postgresql_default_versions"]["Debian-12"]
PG_UNIT = f"postgresql@{PG_VERSION}-main"
PG_CONF_DIR = f"/etc/postgresql/{PG_VERSION}/main"


# What systemd-analyze security may score a unit of ours at, at most.
MAX_EXPOSURE = 2.5


def check_exposure(host: testinfra.host.Host, unit: str) -> float:
    """Asserts that `unit` scores MAX_EXPOSURE or lower, records and returns its score."""
    out = host.check_output(f"systemd-analyze security --no-pager {unit}")
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", out)
    assert match, out[-500:]
    exposure = float(match.group(1))
    record(f"{unit}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, f"{unit} exposure {exposure} > {MAX_EXPOSURE}"
    return exposure


def main_pid(host: testinfra.host.Host, unit: str) -> int:
    """The main PID systemd has for a unit; 0 when it is not running."""
    return int(host.check_output(f"systemctl show -p MainPID --value {unit}"))


def runner(host: testinfra.host.Host) -> stack_client.Runner:
    """A command runner on the host for stack_client (which runs argv lists)."""

    def run(argv: Sequence[str]) -> str:
        return str(host.check_output(shlex.join(argv)))

    return run


def deployed_record(host: testinfra.host.Host) -> stack_client.Tracking:
    """What the tracking role published after its last converge on this host
    (ansible_local.mlflow), read as every client of the stack reads it."""
    return stack_client.tracking(runner(host))


def answers(url: str, timeout: float = 5) -> bool:
    """Whether a GET of the URL answers 200."""
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def wait_for(check: Callable[[], bool], timeout: float, diagnose: Callable[[], str] | None = None) -> float:
    """Seconds until check() holds (an AssertionError counts as not yet); fails the
    test after timeout, with diagnose()'s text (the host's side of it) if given."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if check():
                return time.monotonic() - start
        except AssertionError:
            pass
        time.sleep(0.5)
    pytest.fail(f"not done within {timeout} s" + (f"\n{diagnose()}" if diagnose else ""))


def units_state(host: testinfra.host.Host, *units: str) -> str:
    """The failed units and the journal's last lines of each unit: why a service did not come back."""
    # Without the access log's lines, which would fill it on a server that answers.
    access = shlex.quote(r'HTTP/1\.[01]" [0-9]')
    journals = "; ".join(
        f"systemctl is-active {unit}; journalctl -u {unit} -n 300 --no-pager | grep -v {access} | tail -n 15"
        for unit in units
    )
    result = host.run(f"systemctl --failed --no-legend --no-pager; {journals}")
    return str(result.stdout)[-4000:] + str(result.stderr)[-500:]


def s3_client(url: str, access_key: str, secret_key: str, ca_file: str | None = None) -> BaseClient:
    """A boto3 S3 client on a MinIO endpoint."""
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        verify=ca_file or True,
    )


@pytest.fixture(scope="module")
def hostvars(host: testinfra.host.Host) -> dict[str, Any]:
    variables: dict[str, Any] = host.ansible.get_variables()
    return variables


def secret_forms(hostvars: dict[str, Any], names: list[str]) -> list[str]:
    """Each secret in every form it is written in: raw, percent-encoded (the
    database URI) and escaped for an EnvironmentFile."""
    forms: set[str] = set()
    for name in names:
        value = str(hostvars[name])
        forms |= {
            value,
            urllib.parse.quote(value, safe=""),
            value.replace("\\", "\\\\").replace('"', '\\"'),
        }
    return sorted(forms)


def assert_clean(text: str, secrets: list[str], where: str) -> None:
    for secret in secrets:
        assert secret not in text, f"a secret appears in {where}"


@contextlib.contextmanager
def sampled_process_arguments(host: testinfra.host.Host, interval: float = 0.1) -> Iterator[list[str]]:
    """Record `ps -eo args` on the host every `interval` seconds while the block
    runs, to catch a secret on a command line that lives only for a moment (a
    one-off `ps` after the fact would miss it). Yields the list the samples go in."""
    flag, log = "/run/ps-sampler.on", "/root/ps-samples.log"
    host.check_output(f"rm -f {log} && touch {flag}")
    loop = f"while [ -e {flag} ]; do ps -eo args >> {log}; sleep {interval}; done"
    host.check_output(f"nohup sh -c '{loop}' >/dev/null 2>&1 &")
    samples: list[str] = []
    try:
        yield samples
    finally:
        host.check_output(f"rm -f {flag}")
        samples.append(host.check_output(f"sleep 1; cat {log}; rm -f {log}"))


def ipv4_of(host: testinfra.host.Host) -> str:
    """A host's own IPv4 address, as the other tiers and clients reach it."""
    fields = str(host.check_output("ip -4 -o route get 1.1.1.1")).split()
    return fields[fields.index("src") + 1]


@pytest.fixture(scope="module")
def address(host: testinfra.host.Host) -> str:
    return ipv4_of(host)


@pytest.fixture(scope="module")
def endpoint(address: str) -> str:
    """Where this controller reaches the host's services: the host's own address, or
    the address its ports are published on at their own numbers (the VM scenario:
    127.0.0.1, through QEMU's port forwards)."""
    return os.environ.get("MLFLOW_STACK_PUBLISHED_AT") or address


@dataclasses.dataclass(frozen=True)
class Stack:
    """The values the tiers share, as the scenario's wiring (00-stack.yml) sets them."""

    tracking_port: int
    s3_port: int
    console_port: int
    database_port: int
    database: str
    database_user: str
    bucket: str


@pytest.fixture(scope="module")
def stack(hostvars: dict[str, Any]) -> Stack:
    return Stack(
        tracking_port=int(hostvars["mlflow_stack_tracking_port"]),
        s3_port=int(hostvars["mlflow_stack_s3_port"]),
        console_port=int(hostvars["mlflow_stack_console_port"]),
        database_port=int(hostvars["mlflow_stack_database_port"]),
        database=str(hostvars["mlflow_stack_database"]),
        database_user=str(hostvars["mlflow_stack_database_user"]),
        bucket=str(hostvars["mlflow_stack_bucket"]),
    )


@pytest.fixture(scope="module")
def mlflow_url(endpoint: str, stack: Stack) -> str:
    return f"http://{endpoint}:{stack.tracking_port}"


@pytest.fixture(scope="module")
def lab_ca() -> str | None:
    """The lab CA's certificate, in the scenarios where MinIO serves TLS."""
    pki = os.environ.get("MLFLOW_STACK_PKI")
    return f"{pki}/ca.crt" if pki else None


@pytest.fixture(scope="session", autouse=True)
def trust_the_lab_ca() -> Iterator[None]:
    """Where MinIO serves TLS, MLflow's client downloads artifacts from presigned
    MinIO URLs: every test's client trusts the lab CA, as a user's would. (Session
    scope: module fixtures, such as the auth scenario's upgrade, use the client.)"""
    pki = os.environ.get("MLFLOW_STACK_PKI")
    with pytest.MonkeyPatch.context() as patch:
        if pki:
            patch.setenv("REQUESTS_CA_BUNDLE", f"{pki}/ca.crt")
        yield


@pytest.fixture(scope="module")
def s3_url(endpoint: str, lab_ca: str | None, stack: Stack) -> str:
    scheme = "https" if lab_ca else "http"
    return f"{scheme}://{endpoint}:{stack.s3_port}"


@pytest.fixture(scope="module")
def s3(s3_url: str, hostvars: dict[str, Any], lab_ca: str | None) -> BaseClient:
    """An S3 client with the root keys, to look into the artifact bucket."""
    return s3_client(s3_url, hostvars["vault_minio_root_user"], hostvars["vault_minio_root_password"], lab_ca)


@pytest.fixture(scope="module")
def offsite(s3_url: str, hostvars: dict[str, Any], lab_ca: str | None) -> BaseClient:
    """The backups' off-host copy (the auth scenario's second bucket), with its own keys
    (molecule/auth/host_vars: offsite.yml)."""
    return s3_client(
        s3_url,
        str(hostvars["mlflow_backup_target_access_key"]),
        str(hostvars["vault_backup_target_secret_key"]),
        lab_ca,
    )


def check_client_flow(mlflow_url: str, s3: BaseClient, bucket: str) -> None:
    """End to end with the real MLflow client: runs, a registered model in two
    versions, an alias, loading and predicting, and the artifacts in the bucket."""
    mlflow.set_tracking_uri(mlflow_url)
    client = MlflowClient(tracking_uri=mlflow_url)
    suffix = uuid.uuid4().hex[:8]
    experiment_id = client.create_experiment(f"verify-{suffix}")
    model_name = f"verify-model-{suffix}"
    features = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    labels = np.array([0, 0, 0, 1, 1, 1])

    model_ids: list[str] = []
    run_ids: list[str] = []
    for c_value in (0.5, 2.0):
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_param("C", c_value)
            for step, loss in enumerate((0.9, 0.5, 0.2)):
                mlflow.log_metric("loss", loss, step=step)
            model = LogisticRegression(C=c_value).fit(features, labels)
            info = mlflow.sklearn.log_model(model, name="model", registered_model_name=model_name)
            model_ids.append(info.model_id)
            run_ids.append(run.info.run_id)

    stored = client.get_run(run_ids[1])
    assert stored.data.params["C"] == "2.0"
    assert stored.data.metrics["loss"] == pytest.approx(0.2)
    assert [m.value for m in client.get_metric_history(run_ids[1], "loss")] == [0.9, 0.5, 0.2]

    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{model_name}'"))
    assert versions == [1, 2]

    client.set_registered_model_alias(model_name, "champion", "2")
    assert client.get_model_version_by_alias(model_name, "champion").version == "2"

    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    predictions = loaded.predict(np.array([[0.0], [5.0]]))
    assert list(predictions) == [0, 1]

    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{experiment_id}/")
        for obj in page.get("Contents", [])
    ]
    for model_id in model_ids:
        model_keys = [k for k in keys if f"/{model_id}/" in k]
        assert any(k.endswith("/MLmodel") for k in model_keys), keys
        assert any(k.endswith("/requirements.txt") for k in model_keys), keys


def seed_model(url: str, experiment_name: str, metric: str) -> dict[str, str]:
    """A run with `metric` = 1.0 and a registered scikit-learn model (version 1),
    made before a disruption and checked after it (assert_seeded)."""
    mlflow.set_tracking_uri(url)
    experiment = mlflow.set_experiment(experiment_name)
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.log_metric(metric, 1.0)
        features = np.array([[0.0], [1.0], [4.0], [5.0]])
        model = LogisticRegression().fit(features, np.array([0, 0, 1, 1]))
        name = f"{experiment_name}-model-{run.info.run_id[:8]}"
        mlflow.sklearn.log_model(model, name="model", registered_model_name=name)
    return {
        "run_id": run.info.run_id,
        "model": name,
        "metric": metric,
        "experiment_id": experiment.experiment_id,
    }


def assert_seeded(url: str, seeded: dict[str, str], *, load_model: bool = True) -> None:
    """The seeded run's metric and model version are there; the model loads and
    predicts (load_model: not where the server serves no artifacts)."""
    client = MlflowClient(tracking_uri=url)
    assert client.get_run(seeded["run_id"]).data.metrics[seeded["metric"]] == 1.0
    assert client.get_model_version(seeded["model"], "1").status == "READY"
    if load_model:
        mlflow.set_tracking_uri(url)
        model = mlflow.pyfunc.load_model(f"models:/{seeded['model']}/1")
        assert list(model.predict(np.array([[0.0], [5.0]]))) == [0, 1]


def json_report(stdout: str) -> dict[str, Any]:
    """The report a run with ANSIBLE_STDOUT_CALLBACK=ansible.posix.json printed."""
    report: dict[str, Any] = json.loads(stdout[stdout.index("{") :])
    return report


def run_site(
    extra_vars: dict[str, Any] | None = None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run site.yml against the scenario's inventory, as a user would."""
    return run_playbook("site.yml", extra_vars, *args, env=env)


def run_playbook(
    playbook: str, extra_vars: dict[str, Any] | None = None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a playbook of this repository (path from its root) against the scenario's inventory,
    with `env` added to the environment."""
    command = [
        str(pathlib.Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(ROOT / playbook),
        *args,
    ]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=dict(
            os.environ,
            ANSIBLE_ROLES_PATH=str(ROOT / "roles"),
            ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH,
            # Molecule forces colour on; the tests read the output as text.
            ANSIBLE_FORCE_COLOR="0",
            ANSIBLE_NOCOLOR="1",
            **(env or {}),
        ),
        timeout=900,
        check=False,
    )
