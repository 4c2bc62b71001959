"""Upgrade in place across schema changes. Molecule converged MLflow 3.1.4 (whose
tracking schema and basic-auth schema are both behind the pin's); this module
runs first (its name sorts first) and upgrades it with site.yml, as a user who
raised mlflow_version would. test_auth.py and test_ops.py then run against the
upgraded stack."""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest
import requests
import testinfra.host
from conftest import json_report, record, role_defaults, run_site
from mlflow.tracking import MlflowClient

OLD = "3.1.4"
PIN = str(role_defaults("mlflow")["mlflow_version"])
MODEL = "upgrade-model"

# Run with the old version's own venv on the host: that version's client logs
# the data the upgrade must keep. Prints what it logged as JSON.
SEED = """
import hashlib, json, os, tempfile
import mlflow
from mlflow.tracking import MlflowClient
mlflow.set_tracking_uri("http://127.0.0.1:5000")
client = MlflowClient()
experiment = client.create_experiment("upgrade")
runs = {}
payload = os.urandom(300_000)
for name in ("first", "second"):
    with mlflow.start_run(experiment_id=experiment, run_name=name) as run:
        mlflow.log_params({"lr": "0.01", "name": name})
        for step in range(5):
            mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "weights.bin")
            open(path, "wb").write(payload + name.encode())
            mlflow.log_artifact(path, "model")
        runs[name] = run.info.run_id
client.create_registered_model("%(model)s")
for name in ("first", "second"):
    client.create_model_version("%(model)s", f"runs:/{runs[name]}/model", runs[name])
client.set_registered_model_alias("%(model)s", "champion", "2")
print(json.dumps({"experiment": experiment, "runs": runs,
                  "sha256": {n: hashlib.sha256(payload + n.encode()).hexdigest() for n in runs}}))
""".replace("%(model)s", MODEL)


def authed(hostvars: dict[str, Any]) -> tuple[str, str]:
    return "admin", str(hostvars["vault_mlflow_admin_password"])


def served_version(mlflow_url: str, hostvars: dict[str, Any]) -> str:
    return requests.get(f"{mlflow_url}/version", auth=authed(hostvars), timeout=10).text.strip()


class HealthWatch:
    """Polls /health every 0.25 s (bounded: 2400 polls, 10 minutes) and records
    the seconds during which it did not answer 200."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.failed: list[float] = []
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._start = time.monotonic()

    def _run(self) -> None:
        while not self._stop.is_set() and self.polls < 2400 and time.monotonic() - self._start < 600:
            self.polls += 1
            at = time.monotonic() - self._start
            try:
                ok = requests.get(self.url, timeout=2).status_code == 200
            except requests.RequestException:
                ok = False
            if not ok:
                self.failed.append(at)
            time.sleep(0.25)

    def __enter__(self) -> HealthWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    @property
    def downtime(self) -> float:
        return round(self.failed[-1] - self.failed[0] + 0.25, 1) if self.failed else 0.0


@pytest.fixture(scope="module")
def seeded(host: testinfra.host.Host, hostvars: dict[str, Any], mlflow_url: str) -> dict[str, Any]:
    assert served_version(mlflow_url, hostvars) == OLD, "Molecule should have converged the old version"
    admin = authed(hostvars)
    # The admin's password goes in a root-only file, not on a command line.
    script = (
        "import os\n"
        f"os.environ.update(MLFLOW_TRACKING_USERNAME={admin[0]!r}, MLFLOW_TRACKING_PASSWORD={admin[1]!r})\n"
    )
    encoded = base64.b64encode((script + SEED).encode()).decode()
    result = host.run(
        f"umask 077 && echo {encoded} | base64 -d > /root/seed.py && "
        f"/opt/mlflow/venvs/{OLD}/bin/python /root/seed.py; rc=$?; rm -f /root/seed.py; exit $rc"
    )
    assert result.rc == 0, result.stderr[-2000:]
    seeded: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return seeded


@pytest.fixture(scope="module")
def upgrade(seeded: dict[str, Any], mlflow_url: str) -> dict[str, Any]:
    started = time.monotonic()
    with HealthWatch(f"{mlflow_url}/health") as watch:
        result = run_site({})
    seconds = round(time.monotonic() - started)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    record(
        f"upgrade {OLD} -> {PIN}: site.yml {seconds} s, /health failed for {watch.downtime} s "
        f"({len(watch.failed)} of {watch.polls} polls)"
    )
    return {"output": output, "watch": watch}


@pytest.fixture(scope="module")
def client(monkeypatch_module: pytest.MonkeyPatch, hostvars: dict[str, Any], mlflow_url: str) -> MlflowClient:
    admin = authed(hostvars)
    monkeypatch_module.setenv("MLFLOW_TRACKING_USERNAME", admin[0])
    monkeypatch_module.setenv("MLFLOW_TRACKING_PASSWORD", admin[1])
    return MlflowClient(mlflow_url)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_upgrade_migrates_both_schemas_after_a_backup(upgrade: dict[str, Any]) -> None:
    output = upgrade["output"]
    assert re.search(r"tracking database: \S+ -> \S+ \(migration needed\)", output), output[-3000:]
    assert re.search(r"auth database: \S+ -> \S+ \(migration needed\)", output), output[-3000:]
    assert re.search(r"Backup \d{8}T\d{6}Z-pre-upgrade: ", output), output[-3000:]


def test_new_version_serves_and_downtime_was_bounded(
    upgrade: dict[str, Any], mlflow_url: str, hostvars: dict[str, Any]
) -> None:
    assert served_version(mlflow_url, hostvars) == PIN
    watch: HealthWatch = upgrade["watch"]
    # The servers are down from the stop to the new version's first /health only.
    assert watch.failed, "the schema moved, so the servers must have stopped"
    assert watch.downtime < 120, f"/health failed for {watch.downtime} s"


def test_every_run_metric_artifact_model_version_and_alias_survived(
    upgrade: dict[str, Any],
    seeded: dict[str, Any],
    client: MlflowClient,
    tmp_path: pathlib.Path,
    mlflow_url: str,
) -> None:
    for name, run_id in seeded["runs"].items():
        run = client.get_run(run_id)
        assert run.data.params == {"lr": "0.01", "name": name}
        history = client.get_metric_history(run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [(s, 1.0 / (s + 1)) for s in range(5)]
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id,
            artifact_path="model/weights.bin",
            dst_path=str(tmp_path / name),
            tracking_uri=mlflow_url,
        )
        with open(path, "rb") as handle:
            assert hashlib.sha256(handle.read()).hexdigest() == seeded["sha256"][name]
    versions = client.search_model_versions(f"name='{MODEL}'")
    assert sorted((v.version, v.run_id) for v in versions) == [
        ("1", seeded["runs"]["first"]),
        ("2", seeded["runs"]["second"]),
    ]
    assert client.get_model_version_by_alias(MODEL, "champion").version == "2"


def test_old_venv_is_kept_to_go_back_to(upgrade: dict[str, Any], host: testinfra.host.Host) -> None:
    assert host.file(f"/opt/mlflow/venvs/{OLD}/bin/mlflow").exists
    assert (
        f"/opt/mlflow/venvs/{PIN}/bin/mlflow server"
        in host.file("/etc/systemd/system/mlflow.service").content_string
    )


def test_second_run_after_the_upgrade_changes_nothing(upgrade: dict[str, Any]) -> None:
    result = run_site({}, env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    stats = json_report(result.stdout)["stats"]
    assert stats
    assert all(host_stats["changed"] == 0 for host_stats in stats.values()), stats
