"""Upgrade in place across schema changes. Molecule converged MLflow 3.1.4 (whose
tracking schema and basic-auth schema are both behind the pin's); this module
runs first (its name sorts first) and upgrades it with site.yml, as a user who
raised mlflow_version would. Before that, two upgrades fail in the migration
(the tracking database's revision table is made read-only for MLflow): one with
mlflow_upgrade_backup false, one that prints the restore that puts the old
version back, which is then run. After it, the pre-upgrade backup (the old
schema) is restored onto the new version. test_auth.py and test_ops.py then run
against the upgraded stack."""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import re
import shlex
import threading
import time
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest
import requests
import testinfra.host
import yaml
from conftest import (
    MLFLOW_PIN,
    Stack,
    answers,
    deployed_record,
    json_report,
    record,
    role_defaults,
    run_playbook,
    run_site,
    wait_for,
)
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

OLD = "3.1.4"
PIN = MLFLOW_PIN
MODEL = "upgrade-model"
BACKUP_DIR = str(role_defaults("mlflow_backup")["mlflow_backup_dir"])
VENVS_DIR = str(role_defaults("mlflow")["mlflow_venvs_dir"])
UNIT = "/etc/systemd/system/mlflow.service"
# What Molecule converged the old version with (molecule.yml's extra-vars): a
# site running 3.1.4 has these in its inventory, and a restore that goes back
# to 3.1.4 needs them too (its venv cannot import SQLAlchemy 2.1).
OLD_VARS: dict[str, Any] = json.loads(
    yaml.safe_load((pathlib.Path(__file__).parents[1] / "molecule.yml").read_text())["provisioner"][
        "options"
    ]["extra-vars"]
)
SCHEMA_REPORT = re.compile(r"(tracking|auth) database: (\S+) -> (\S+) \(migration needed\)")


def flat(output: str) -> str:
    """Ansible's output with every run of whitespace made one space: a message
    reads the same whether the callback printed it on one line or wrapped it."""
    return " ".join(output.split())


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
def upgrade(
    seeded: dict[str, Any], mlflow_url: str, host: testinfra.host.Host, stack: Stack
) -> dict[str, Any]:
    # The failed-migration tests before it leave the revision table MLflow's again
    # (the restore recreates it); made sure of here, whichever of them ran.
    unlock_the_tracking_revision(host, stack)
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


def psql(host: testinfra.host.Host, database: str, sql: str) -> str:
    return str(host.check_output(f"sudo -u postgres psql -tA -d {database} -c {shlex.quote(sql)}")).strip()


def lock_the_tracking_revision(host: testinfra.host.Host, stack: Stack) -> None:
    """Makes the next migration of the tracking database fail, deterministically
    and without harm: its alembic_version table goes to postgres, and MLflow's
    user may only read it. Every migration step ends by updating that table,
    and MLflow migrates in one transaction, so the first step's update is
    refused and everything rolls back. Reading the revision (the schema check,
    the old server) still works."""
    user = stack.database_user
    psql(
        host,
        stack.database,
        f"ALTER TABLE alembic_version OWNER TO postgres; GRANT SELECT ON alembic_version TO {user}",
    )


def unlock_the_tracking_revision(host: testinfra.host.Host, stack: Stack) -> None:
    psql(host, stack.database, f"ALTER TABLE alembic_version OWNER TO {stack.database_user}")


def backup_dirs(host: testinfra.host.Host) -> list[str]:
    return sorted(str(host.check_output(f"ls -1A {BACKUP_DIR}")).split())


def failed_upgrade(host: testinfra.host.Host, stack: Stack, extra_vars: dict[str, Any]) -> dict[str, Any]:
    """site.yml with the pin while the migration cannot succeed: the run's
    output and what it left (the revision, the backups, the unit)."""
    lock_the_tracking_revision(host, stack)
    revision = psql(host, stack.database, "SELECT version_num FROM alembic_version")
    backups = backup_dirs(host)
    started = time.monotonic()
    result = run_site(extra_vars)
    output = flat(result.stdout + result.stderr)
    record(f"failed migration {OLD} -> {PIN} {extra_vars}: site.yml {time.monotonic() - started:.0f} s")
    assert result.returncode != 0, output[-3000:]
    assert f"The migration to MLflow {PIN} failed" in output, output[-3000:]
    assert f"MLflow {OLD} is still installed" in output
    # The old version's venv is still the one the unit runs, and the server is stopped.
    assert f"{VENVS_DIR}/{OLD}/bin/mlflow server" in host.file(UNIT).content_string
    assert host.file(f"{VENVS_DIR}/{OLD}/bin/mlflow").exists
    assert deployed_record(host).version == OLD, "the record must name what runs"
    assert not host.service("mlflow").is_running
    # The database was left at the old revision: the migration rolled back.
    assert psql(host, stack.database, "SELECT version_num FROM alembic_version") == revision
    return {"output": output, "new_backups": sorted(set(backup_dirs(host)) - set(backups))}


def check_seeded_data(client: MlflowClient, seeded: dict[str, Any]) -> None:
    for name, run_id in seeded["runs"].items():
        run = client.get_run(run_id)
        assert run.data.params == {"lr": "0.01", "name": name}
        history = client.get_metric_history(run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [(s, 1.0 / (s + 1)) for s in range(5)]
    assert client.get_model_version_by_alias(MODEL, "champion").version == "2"


def test_a_failed_migration_without_a_backup_leaves_the_old_version_to_start_again(
    host: testinfra.host.Host,
    seeded: dict[str, Any],
    stack: Stack,
    client: MlflowClient,
    mlflow_url: str,
    hostvars: dict[str, Any],
) -> None:
    """mlflow_upgrade_backup: false: the schema moves with no backup (the run
    says so, and no backup directory appears), and when the migration fails the
    message says there is none; the old venv is still the unit's, and started
    again the old version serves every seeded run and model. (About 1 minute of
    CI beyond the upgrade itself: the run installs the pin's venv, which the
    upgrade then reuses.)"""
    failed = failed_upgrade(host, stack, {"mlflow_upgrade_backup": False})
    output = failed["output"]
    assert "mlflow_upgrade_backup is false; the schema moves with no backup to go back to." in output
    assert "No backup was taken (mlflow_upgrade_backup is false)" in output
    assert not re.search(r"Backup \d{8}T\d{6}Z-pre-upgrade", output)
    assert failed["new_backups"] == []
    host.check_output("systemctl start mlflow")
    wait_for(lambda: answers(f"{mlflow_url}/health"), 120)
    assert served_version(mlflow_url, hostvars) == OLD
    check_seeded_data(client, seeded)


def test_a_failed_migration_prints_the_restore_that_puts_the_old_version_back(
    host: testinfra.host.Host,
    seeded: dict[str, Any],
    stack: Stack,
    client: MlflowClient,
    mlflow_url: str,
    hostvars: dict[str, Any],
) -> None:
    """With the default mlflow_upgrade_backup, a failed migration leaves the
    pre-upgrade backup on the backup host and prints the restore command that
    goes back; run as printed (with the site's pins for the old version), it
    brings back the old version serving every seeded run and model. (About 2
    minutes of CI: the failed run, then the restore.)"""
    failed = failed_upgrade(host, stack, {})
    output = failed["output"]
    printed = re.search(
        r"ansible-playbook -i <inventory> playbooks/restore\.yml -e backup=(\S+)"
        r" -e restore_overwrite=true -e mlflow_version=([0-9][\w.]*)",
        output,
    )
    assert printed, output[-3000:]
    backup, version = printed.groups()
    assert version == OLD
    assert failed["new_backups"] == [backup]
    assert re.fullmatch(r"\d{8}T\d{6}Z-pre-upgrade", backup)
    manifest = json.loads(host.check_output(f"cat {BACKUP_DIR}/{backup}/manifest.json"))
    assert manifest["versions"]["mlflow"] == OLD

    started = time.monotonic()
    result = run_playbook(
        "playbooks/restore.yml",
        {**OLD_VARS, "backup": backup, "restore_overwrite": "true", "mlflow_version": version},
    )
    record(
        f"restore {backup} back to {version}: {time.monotonic() - started:.0f} s (exit {result.returncode})"
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert served_version(mlflow_url, hostvars) == OLD
    assert f"{VENVS_DIR}/{OLD}/bin/mlflow server" in host.file(UNIT).content_string
    check_seeded_data(client, seeded)


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
    assert deployed_record(host).version == PIN


def test_second_run_after_the_upgrade_changes_nothing(upgrade: dict[str, Any]) -> None:
    result = run_site({}, env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    stats = json_report(result.stdout)["stats"]
    assert stats
    assert all(host_stats["changed"] == 0 for host_stats in stats.values()), stats


def test_a_backup_of_the_old_schema_is_restored_and_migrated_to_the_new_version(
    upgrade: dict[str, Any],
    seeded: dict[str, Any],
    host: testinfra.host.Host,
    stack: Stack,
    client: MlflowClient,
    mlflow_url: str,
    hostvars: dict[str, Any],
) -> None:
    """restore.yml with the pin puts back the pre-upgrade backup, which 3.1.4
    wrote with both schemas behind the pin's: it migrates both databases to the
    pin's heads before the servers start, the pin serves, and the data are the
    backup's (an experiment created since is gone, the seeded runs, metric
    histories and model are there). (About 1.5 minutes of CI.)"""
    backup = re.search(r"Backup (\d{8}T\d{6}Z-pre-upgrade): ", flat(upgrade["output"]))
    assert backup
    heads = {name: head for name, _, head in SCHEMA_REPORT.findall(flat(upgrade["output"]))}
    assert set(heads) == {"tracking", "auth"}
    manifest = json.loads(host.check_output(f"cat {BACKUP_DIR}/{backup.group(1)}/manifest.json"))
    assert manifest["versions"]["mlflow"] == OLD
    since = f"since-the-upgrade-{time.time_ns()}"
    client.create_experiment(since)

    started = time.monotonic()
    result = run_playbook("playbooks/restore.yml", {"backup": backup.group(1), "restore_overwrite": True})
    output = result.stdout + result.stderr
    record(
        f"restore {backup.group(1)} onto {PIN}: {time.monotonic() - started:.0f} s (exit {result.returncode})"
    )
    assert result.returncode == 0, output[-3000:]
    moved = {name: (current, head) for name, current, head in SCHEMA_REPORT.findall(flat(output))}
    assert moved == {
        key: (str(manifest["databases"][key]["revision"]), heads[key]) for key in ("tracking", "auth")
    }, output[-3000:]
    assert served_version(mlflow_url, hostvars) == PIN
    assert psql(host, stack.database, "SELECT version_num FROM alembic_version") == heads["tracking"]
    auth_database = str(hostvars["mlflow_stack_auth_database"])
    assert psql(host, auth_database, "SELECT version_num FROM alembic_version_auth") == heads["auth"]
    assert client.search_experiments(view_type=ViewType.ALL, filter_string=f"name = '{since}'") == []
    check_seeded_data(client, seeded)
