"""Day-2 operations on the upgraded stack: a pin pip cannot install, backup and
restore (over data, refused without the flag, from a damaged backup, onto an
empty stack from the off-host copy alone), the backup timer's service, and
garbage collection of deleted runs."""

from __future__ import annotations

import datetime
import json
import pathlib
import re
import shlex
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
import requests
import testinfra.host
from availability import Probe
from botocore.client import BaseClient
from conftest import (
    MLFLOW_PIN,
    Stack,
    answers,
    json_report,
    record,
    role_defaults,
    run_playbook,
    run_site,
    wait_for,
)
from mlflow.entities import ViewType
from mlflow.store.entities.paged_list import PagedList
from mlflow.tracking import MlflowClient

BACKUP_DIR = str(role_defaults("mlflow_backup")["mlflow_backup_dir"])
BACKUP_SCRIPT = "/usr/local/sbin/mlflow-stack-backup"
PIN = MLFLOW_PIN
VENVS_DIR = str(role_defaults("mlflow")["mlflow_venvs_dir"])
T = TypeVar("T")
AUTH_TABLES = (
    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE 'alembic%' ORDER BY 1"
)


@pytest.fixture(scope="module")
def client(hostvars: dict[str, Any], mlflow_url: str) -> Iterator[MlflowClient]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        patch.setenv("MLFLOW_TRACKING_PASSWORD", str(hostvars["vault_mlflow_admin_password"]))
        yield MlflowClient(mlflow_url)


def offsite_objects(
    offsite: BaseClient, hostvars: dict[str, Any], backup: str
) -> dict[str, datetime.datetime]:
    """The objects of a backup's off-host copy (names within the backup), with their LastModified."""
    prefix = f"{hostvars['mlflow_backup_target_prefix']}/{backup}/"
    pages = offsite.get_paginator("list_objects_v2").paginate(
        Bucket=hostvars["mlflow_backup_target_bucket"], Prefix=prefix
    )
    return {
        item["Key"].removeprefix(prefix): item["LastModified"]
        for page in pages
        for item in page.get("Contents", [])
    }


def every(page: Callable[[str | None], PagedList[T]]) -> list[T]:
    """All items of a paged MLflow search, page after page."""
    items: list[T] = []
    token: str | None = None
    while True:
        batch = page(token)
        items += batch
        token = batch.token
        if not token:
            return items


def auth_rows(host: testinfra.host.Host, database: str) -> list[str]:
    """Every row of every table of the auth database (users, password hashes,
    admin flags, permissions, roles...), as text, but the alembic revision."""
    psql = f"sudo -u postgres psql -tA -d {database} -c"
    tables = host.check_output(f"{psql} {shlex.quote(AUTH_TABLES)}").split()
    assert "users" in tables, tables
    # The table names come from the database itself (pg_tables), not from input.
    union = " UNION ALL ".join(f"SELECT '{table}: ' || r::text FROM {table} r" for table in tables)  # noqa: S608
    return sorted(host.check_output(f"{psql} {shlex.quote(union)}").splitlines())


def snapshot(
    host: testinfra.host.Host, client: MlflowClient, s3: BaseClient, stack: Stack, auth_database: str
) -> dict[str, Any]:
    """What a restore must bring back: experiments, runs with their params,
    latest metrics and every metric's whole history, registered models with
    versions and aliases, every object's ETag (all pages of the listing), and
    every row of the auth database."""
    experiments = every(lambda token: client.search_experiments(view_type=ViewType.ALL, page_token=token))
    runs = every(
        lambda token: client.search_runs(
            [e.experiment_id for e in experiments], run_view_type=ViewType.ALL, page_token=token
        )
    )
    models = every(lambda token: client.search_registered_models(page_token=token))
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=stack.bucket)
    objects = [item for page in pages for item in page.get("Contents", [])]
    return {
        "experiments": sorted((e.experiment_id, e.name, e.lifecycle_stage) for e in experiments),
        "runs": sorted(
            (r.info.run_id, r.info.lifecycle_stage, json.dumps(r.data.params), json.dumps(r.data.metrics))
            for r in runs
        ),
        "histories": sorted(
            (
                r.info.run_id,
                key,
                sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(r.info.run_id, key)),
            )
            for r in runs
            for key in r.data.metrics
        ),
        "models": sorted(
            (
                m.name,
                json.dumps(m.aliases),
                json.dumps(sorted(v.version for v in client.search_model_versions(f"name='{m.name}'"))),
            )
            for m in models
        ),
        "objects": sorted((o["Key"], o["ETag"]) for o in objects),
        "auth": auth_rows(host, auth_database),
    }


def add_data(client: MlflowClient, tmp: pathlib.Path) -> dict[str, str]:
    experiment = client.create_experiment(f"ops-{time.time_ns()}")
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "kind", "ops")
    client.log_metric(run.info.run_id, "score", 0.5)
    path = tmp / "table.csv"
    path.write_text("a,b\n1,2\n")
    client.log_artifact(run.info.run_id, str(path))
    model = f"ops-model-{time.time_ns()}"
    client.create_registered_model(model)
    client.create_model_version(model, f"runs:/{run.info.run_id}/table.csv", run.info.run_id)
    client.set_terminated(run.info.run_id)
    return {"experiment": experiment, "run": run.info.run_id, "model": model}


def backup_ids(host: testinfra.host.Host) -> list[str]:
    listing = host.check_output(f"ls -1 {BACKUP_DIR}")
    return sorted(name for name in listing.split() if re.match(r"^\d{8}T\d{6}Z", name))


def take_backup(host: testinfra.host.Host) -> str:
    before = set(backup_ids(host))
    started = time.monotonic()
    result = run_playbook("playbooks/backup.yml")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    (new,) = set(backup_ids(host)) - before
    size = host.check_output(f"du -sb {BACKUP_DIR}/{new} | cut -f1")
    record(f"backup {new}: playbooks/backup.yml {time.monotonic() - started:.0f} s, {size} bytes")
    return new


def restore(backup: str, *extra: str) -> tuple[int, str]:
    extra_vars: dict[str, Any] = {"backup": backup}
    for item in extra:
        key, value = item.split("=", 1)
        extra_vars[key] = value
    started = time.monotonic()
    result = run_playbook("playbooks/restore.yml", extra_vars)
    record(
        f"restore {backup} {' '.join(extra)}: {time.monotonic() - started:.0f} s (exit {result.returncode})"
    )
    return result.returncode, result.stdout + result.stderr


def users_api(
    hostvars: dict[str, Any], mlflow_url: str, method: str, action: str, body: dict[str, str]
) -> None:
    """A call of MLflow's basic-auth user API (/api/2.0/mlflow/users/<action>) as the admin."""
    response = requests.request(
        method,
        f"{mlflow_url}/api/2.0/mlflow/users/{action}",
        json=body,
        auth=("admin", str(hostvars["vault_mlflow_admin_password"])),
        timeout=30,
    )
    assert response.status_code == 200, f"users/{action}: {response.status_code} {response.text[:500]}"


def failed_tasks(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(task name, host) of every task result a JSON report marks as failed, in run order."""
    return [
        (task["task"]["name"], host)
        for play in report["plays"]
        for task in play["tasks"]
        for host, result in task["hosts"].items()
        if result.get("failed")
    ]


# Valid for the role (x.y.z), never published, and not the stack's pin or a
# variant of it (the pin is written in one place: test_version_pin).
BAD_PIN = "3.999.0"


def test_a_pin_pip_cannot_install_fails_and_the_server_keeps_answering(
    host: testinfra.host.Host, mlflow_url: str
) -> None:
    """A pin no index serves (3.999.0; 3.18.0, used before, became
    installable when mlflow-tracing 3.18.0 was published): the install
    into the new version's venv fails, the run stops at that task (the JSON
    report's last task for the host), the venv is left without the stamp that
    marks a complete install, and the server keeps answering with its unit
    unchanged."""
    unit = host.file("/etc/systemd/system/mlflow.service").content_string
    probe = Probe(f"{mlflow_url}/health", max_seconds=400).start()
    try:
        probe.mark("start")
        result = run_site({"mlflow_version": BAD_PIN}, env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})
        probe.mark("end")
        # The probe runs on past the end, so that the window's last (partial)
        # second is judged on the requests of a whole second.
        time.sleep(1)
    finally:
        probe.stop()
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    report = json_report(result.stdout)
    failed = failed_tasks(report)
    install = re.compile(r"Install MLflow and its drivers into the venv of this version with (uv|pip)$")
    assert failed, output[-3000:]
    assert install.search(failed[-1][0]), failed
    ran = [task["task"]["name"] for play in report["plays"] for task in play["tasks"] if task["hosts"]]
    assert install.search(ran[-1]), f"tasks ran after the failed install: {ran[-5:]}"
    venv = f"{VENVS_DIR}/{BAD_PIN}"
    assert not host.file(f"{venv}/.mlflow-stack-requirements").exists, "the failed venv is stamped complete"
    assert not host.file(f"{venv}/bin/mlflow").exists
    probe.check(("start", "end"), max_latency=2.0)
    assert host.file("/etc/systemd/system/mlflow.service").content_string == unit
    assert host.service("mlflow").is_running


def test_backup_has_a_manifest_written_last_with_checksums(
    host: testinfra.host.Host, offsite: BaseClient, hostvars: dict[str, Any]
) -> None:
    """A backup's manifest (versions, revisions, a sha256 for every file) is
    written after every other file of the backup, root-only, and its off-host
    copy holds the same files with the manifest uploaded last."""
    backup = take_backup(host)
    manifest = json.loads(host.check_output(f"cat {BACKUP_DIR}/{backup}/manifest.json"))
    assert manifest["versions"]["mlflow"] == PIN
    assert set(manifest["databases"]) == {"tracking", "auth"}
    assert all(db["revision"] for db in manifest["databases"].values())
    assert manifest["artifacts"]["objects"] > 0
    assert manifest["files"]["tracking.dump"]["sha256"]
    # Every file is in the manifest, and the directory is root's alone.
    files = host.check_output(f"cd {BACKUP_DIR}/{backup} && find . -type f ! -name manifest.json | wc -l")
    assert int(files) == len(manifest["files"])
    assert host.file(f"{BACKUP_DIR}/{backup}").mode == 0o700
    assert host.file("/etc/mlflow-backup/backup.json").mode == 0o600
    # Written last: no file of the backup is newer than the manifest.
    stamps = host.check_output(f"cd {BACKUP_DIR}/{backup} && find . -type f -printf '%T@ %P\\n'")
    mtimes = {name: float(at) for at, name in (line.split(" ", 1) for line in stamps.splitlines())}
    written = mtimes.pop("manifest.json")
    assert sorted(mtimes) == sorted(manifest["files"])
    newer = sorted(name for name, at in mtimes.items() if at > written)
    assert not newer, f"written after the manifest: {newer[:5]}"
    # The off-host copy holds the same files and the manifest, uploaded last.
    copy = offsite_objects(offsite, hostvars, backup)
    assert sorted(copy) == sorted([*manifest["files"], "manifest.json"])
    uploaded = copy.pop("manifest.json")
    later = sorted(name for name, at in copy.items() if at > uploaded)
    assert not later, f"uploaded after the manifest: {later[:5]}"


def test_restore_brings_back_what_was_deleted_and_refuses_without_the_flag(
    host: testinfra.host.Host,
    client: MlflowClient,
    s3: BaseClient,
    stack: Stack,
    hostvars: dict[str, Any],
    mlflow_url: str,
    tmp_path: pathlib.Path,
) -> None:
    """After a backup, an experiment, a registered model, objects and a user are
    deleted, a metric history grows (its latest value unchanged) and a user is
    added. A restore without restore_overwrite=true changes nothing; with it,
    everything is as at the backup: the tracking data, every metric history,
    every object, and every row of the auth database."""
    auth_database = str(hostvars["mlflow_stack_auth_database"])
    kept_user, later_user = f"ops-kept-{time.time_ns()}", f"ops-later-{time.time_ns()}"
    users_api(hostvars, mlflow_url, "POST", "create", {"username": kept_user, "password": f"{kept_user}-pw"})
    added = add_data(client, tmp_path)
    before = snapshot(host, client, s3, stack, auth_database)
    backup = take_backup(host)
    # An older point at the same step: the history grows, the latest value stays.
    # (First: the run is deleted with its experiment next.)
    client.log_metric(added["run"], "score", 0.9, timestamp=1, step=0)
    client.delete_experiment(added["experiment"])
    client.delete_registered_model(added["model"])
    for key, _ in before["objects"][:3]:
        s3.delete_object(Bucket=stack.bucket, Key=key)
    users_api(hostvars, mlflow_url, "DELETE", "delete", {"username": kept_user})
    users_api(
        hostvars, mlflow_url, "POST", "create", {"username": later_user, "password": f"{later_user}-pw"}
    )
    damaged = snapshot(host, client, s3, stack, auth_database)
    for part in ("experiments", "histories", "models", "objects", "auth"):
        assert damaged[part] != before[part], f"nothing changed in {part}"

    rc, output = restore(backup)
    assert rc != 0
    assert "restore_overwrite=true" in output
    assert snapshot(host, client, s3, stack, auth_database) == damaged, "a refused restore changed something"

    rc, output = restore(backup, "restore_overwrite=true")
    assert rc == 0, output[-3000:]
    assert snapshot(host, client, s3, stack, auth_database) == before


def test_a_damaged_backup_is_refused_before_anything_changes(
    host: testinfra.host.Host, client: MlflowClient, s3: BaseClient, stack: Stack, hostvars: dict[str, Any]
) -> None:
    latest = backup_ids(host)[-1]
    damaged = f"{latest[:16]}-damaged"
    artifact = host.check_output(f"cd {BACKUP_DIR}/{latest} && find artifacts -type f | head -n1")
    host.check_output(f"cp -a {BACKUP_DIR}/{latest} {BACKUP_DIR}/{damaged}")
    auth_database = str(hostvars["mlflow_stack_auth_database"])
    try:
        host.check_output(f"printf x >> {shlex.quote(f'{BACKUP_DIR}/{damaged}/{artifact}')}")
        before = snapshot(host, client, s3, stack, auth_database)
        rc, output = restore(damaged, "restore_overwrite=true")
        assert rc != 0
        assert "is damaged" in output
        assert artifact in output
        assert snapshot(host, client, s3, stack, auth_database) == before
    finally:
        host.check_output(f"rm -rf {BACKUP_DIR}/{damaged}")


def test_restore_onto_an_empty_stack(
    host: testinfra.host.Host,
    client: MlflowClient,
    s3: BaseClient,
    stack: Stack,
    hostvars: dict[str, Any],
    mlflow_url: str,
) -> None:
    """Disaster recovery: the databases, the bucket and the backup host's own
    backups are gone (the databases recreated empty, as a fresh install leaves
    them). The restore fetches the backup from the off-host copy, and needs no
    overwrite flag."""
    backup = backup_ids(host)[-1]
    auth_database = str(hostvars["mlflow_stack_auth_database"])
    before = snapshot(host, client, s3, stack, auth_database)
    host.check_output("systemctl stop mlflow")
    for database in (stack.database, auth_database):
        host.check_output(f"sudo -u postgres dropdb --force {database}")
        host.check_output(f"sudo -u postgres createdb -O {stack.database_user} {database}")
    for key, _ in before["objects"]:
        s3.delete_object(Bucket=stack.bucket, Key=key)
    host.check_output(f"rm -rf {BACKUP_DIR}/*")
    host.check_output("systemctl start mlflow")
    # As a fresh install leaves them: the server creates both schemas, the
    # admin and the Default experiment.
    wait_for(lambda: answers(f"{mlflow_url}/health"), 120)
    assert len(client.search_experiments()) == 1

    rc, output = restore(backup)
    assert rc == 0, output[-3000:]
    assert snapshot(host, client, s3, stack, auth_database) == before
    assert backup_ids(host) == [backup], "the backup was not fetched from the off-host copy"


def test_the_backup_timer_service_takes_a_complete_backup(
    host: testinfra.host.Host, offsite: BaseClient, hostvars: dict[str, Any]
) -> None:
    """mlflow-backup.timer waits on mlflow_backup_schedule, and the service it
    starts (started here at once, as the timer would) exits successfully after
    writing a complete, intact backup labelled "timer" with its off-host copy."""
    timer = host.service("mlflow-backup.timer")
    assert timer.is_enabled
    assert timer.is_running
    calendar = host.check_output("systemctl show -p TimersCalendar --value mlflow-backup.timer")
    assert str(hostvars["mlflow_backup_schedule"]) in calendar, calendar
    before = set(backup_ids(host))
    started = time.monotonic()
    run = host.run("systemctl start mlflow-backup.service")
    journal = host.check_output("journalctl -u mlflow-backup.service --no-pager -o cat -n 30")
    assert run.rc == 0, f"{run.stderr}\n{journal}"
    state = host.check_output("systemctl show -p Result -p ExecMainStatus mlflow-backup.service")
    assert sorted(state.split()) == ["ExecMainStatus=0", "Result=success"], journal
    (new,) = set(backup_ids(host)) - before
    record(f"backup {new}: mlflow-backup.service {time.monotonic() - started:.0f} s")
    assert new.endswith("-timer")
    verified = host.run(f"{BACKUP_SCRIPT} verify --no-fetch {new}")
    assert verified.rc == 0, verified.stderr
    manifest = json.loads(host.check_output(f"cat {BACKUP_DIR}/{new}/manifest.json"))
    assert sorted(offsite_objects(offsite, hostvars, new)) == sorted([*manifest["files"], "manifest.json"])


def test_gc_purges_runs_deleted_long_ago_and_keeps_the_others(
    host: testinfra.host.Host, client: MlflowClient, s3: BaseClient, stack: Stack, tmp_path: pathlib.Path
) -> None:
    assert host.service("mlflow-gc.timer").is_enabled
    experiment = client.create_experiment(f"gc-{time.time_ns()}")
    runs = {}
    for name in ("live", "old", "recent"):
        run = client.create_run(experiment, run_name=name)
        path = tmp_path / f"{name}.txt"
        path.write_text(name)
        client.log_artifact(run.info.run_id, str(path))
        runs[name] = run.info.run_id
    client.delete_run(runs["old"])
    client.delete_run(runs["recent"])
    # Deleted two hours ago, beyond mlflow_gc_older_than (1h); "recent" just now.
    psql = f"sudo -u postgres psql -tA -d {stack.database} -c"
    host.check_output(
        f"{psql} \"UPDATE runs SET deleted_time = deleted_time - 7200000 WHERE run_uuid = '{runs['old']}'\""  # noqa: S608
    )

    def objects(run_id: str) -> list[str]:
        listing = s3.list_objects_v2(Bucket=stack.bucket).get("Contents", [])
        return [o["Key"] for o in listing if run_id in o["Key"]]

    assert all(objects(run_id) for run_id in runs.values())
    host.check_output("systemctl start mlflow-gc.service")
    journal = host.check_output("journalctl -u mlflow-gc.service --no-pager -o cat")
    count = f"{psql} \"SELECT count(*) FROM runs WHERE run_uuid = '%s'\""  # noqa: S608
    assert host.check_output(count % runs["old"]) == "0", journal[-2000:]
    assert objects(runs["old"]) == [], journal[-2000:]
    for kept in ("live", "recent"):
        assert host.check_output(count % runs[kept]) == "1"
        assert objects(runs[kept])
    assert client.get_run(runs["live"]).info.lifecycle_stage == "active"
