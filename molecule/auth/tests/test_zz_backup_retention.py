"""Backup retention, on the backup host and in the off-host copy, and a copy
fetched from off-host that fails its checksums.

This module runs last in the auth scenario (pytest runs the files in
alphabetical order: test_00_upgrade, test_auth, test_ops, test_tls, then this
one). It leaves mlflow_backup_keep at 2 in the host's root-only backup
configuration, which the timer's service would read; no test runs after it, so
it needs no further playbook run to put the default (7) back."""

from __future__ import annotations

import json
import re
import time
from typing import Any

import testinfra.host
from botocore.client import BaseClient
from conftest import record, role_defaults, run_playbook

BACKUP_DIR = str(role_defaults("mlflow_backup")["mlflow_backup_dir"])
SCRIPT = "/usr/local/sbin/mlflow-stack-backup"
CONFIG = "/etc/mlflow-backup/backup.json"
KEEP = 2


def local_entries(host: testinfra.host.Host) -> list[str]:
    """Everything in the backup directory."""
    return sorted(str(host.check_output(f"ls -1A {BACKUP_DIR}")).split())


def complete_here(host: testinfra.host.Host) -> list[str]:
    """The backups in the backup directory that have a manifest, oldest first."""
    found = host.check_output(
        f"find {BACKUP_DIR} -mindepth 2 -maxdepth 2 -name manifest.json -printf '%P\\n'"
    )
    return sorted(line.split("/")[0] for line in str(found).split())


def offsite_backups(offsite: BaseClient, hostvars: dict[str, Any]) -> dict[str, set[str]]:
    """Each backup id under the off-host prefix, with the names of its objects."""
    prefix = f"{hostvars['mlflow_backup_target_prefix']}/"
    pages = offsite.get_paginator("list_objects_v2").paginate(
        Bucket=hostvars["mlflow_backup_target_bucket"], Prefix=prefix
    )
    found: dict[str, set[str]] = {}
    for page in pages:
        for item in page.get("Contents", []):
            backup, _, name = item["Key"].removeprefix(prefix).partition("/")
            found.setdefault(backup, set()).add(name)
    return found


def complete_there(offsite: BaseClient, hostvars: dict[str, Any]) -> list[str]:
    return sorted(i for i, names in offsite_backups(offsite, hostvars).items() if "manifest.json" in names)


def test_keep_removes_older_and_incomplete_backups_here_and_off_host(
    host: testinfra.host.Host, offsite: BaseClient, hostvars: dict[str, Any]
) -> None:
    """With mlflow_backup_keep: 2 given to playbooks/backup.yml, the role writes 2
    into the host's configuration, and after the backup exactly the 2 newest
    complete backups remain in the backup directory and in the off-host copy:
    the older complete ones are gone, and so is an incomplete backup planted in
    each place (named newer than every complete one but the new backup, so that
    only its missing manifest condemns it)."""
    bucket, prefix = hostvars["mlflow_backup_target_bucket"], hostvars["mlflow_backup_target_prefix"]
    # Three backups or more: two now, with the script as the timer runs it, and
    # the playbook's; earlier tests' backups may add to them.
    for label in ("retention-1", "retention-2"):
        host.check_output(f"{SCRIPT} backup --label {label}")
    time.sleep(1.1)
    stamp = str(host.check_output("date -u +%Y%m%dT%H%M%SZ")).strip()
    planted_here, planted_there = f"{stamp}-planted-here", f"{stamp}-planted-there"
    # A backup cut short: a dump, and no manifest.
    partial = f"{BACKUP_DIR}/{planted_here}"
    host.check_output(f"mkdir -m 700 {partial} && printf partial > {partial}/tracking.dump")
    offsite.put_object(Bucket=bucket, Key=f"{prefix}/{planted_there}/tracking.dump", Body=b"partial")
    before_here, before_there = complete_here(host), complete_there(offsite, hostvars)
    assert len(before_here) >= KEEP
    assert len(before_there) >= KEEP
    assert planted_here > before_here[-1]
    assert planted_there > before_there[-1]

    started = time.monotonic()
    result = run_playbook("playbooks/backup.yml", {"mlflow_backup_keep": KEEP})
    # Whitespace made single spaces: the callback may wrap a long message.
    output = " ".join((result.stdout + result.stderr).split())
    assert result.returncode == 0, output[-3000:]
    record(f"backup with mlflow_backup_keep={KEEP}: playbooks/backup.yml {time.monotonic() - started:.0f} s")
    new = re.search(r"Backup (\d{8}T\d{6}Z(?:-[a-z0-9-]+)?): \d+ objects", output)
    assert new, output[-3000:]
    assert new.group(1) > planted_here
    assert int(json.loads(host.check_output(f"cat {CONFIG}"))["keep"]) == KEEP

    newest = [*before_here, new.group(1)][-KEEP:]
    assert complete_here(host) == newest
    assert local_entries(host) == newest, "an older or incomplete backup was left in the backup directory"
    there = offsite_backups(offsite, hostvars)
    assert complete_there(offsite, hostvars) == [*before_there, new.group(1)][-KEEP:] == newest
    assert sorted(there) == newest, "an older or incomplete backup was left in the off-host copy"
    assert len(newest) == KEEP


def test_a_fetched_copy_whose_checksums_fail_is_removed(
    host: testinfra.host.Host, offsite: BaseClient, hostvars: dict[str, Any]
) -> None:
    """A backup the host no longer holds is fetched from the off-host copy by
    `verify` (as restore.yml does it); when one of its objects was changed
    there, verify fails naming the file, and no local copy of it remains. Once
    the object is intact again, the same command fetches and keeps it."""
    bucket, prefix = hostvars["mlflow_backup_target_bucket"], hostvars["mlflow_backup_target_prefix"]
    victim = complete_here(host)[0]
    assert victim in offsite_backups(offsite, hostvars)
    manifest = json.loads(host.check_output(f"cat {BACKUP_DIR}/{victim}/manifest.json"))
    name = next(n for n in sorted(manifest["files"]) if n.startswith("artifacts/"))
    key = f"{prefix}/{victim}/{name}"
    original = offsite.get_object(Bucket=bucket, Key=key)["Body"].read()
    host.check_output(f"rm -rf {BACKUP_DIR}/{victim}")
    offsite.put_object(Bucket=bucket, Key=key, Body=original + b"!")
    try:
        damaged = host.run(f"{SCRIPT} verify {victim}")
    finally:
        offsite.put_object(Bucket=bucket, Key=key, Body=original)
    assert damaged.rc != 0
    assert f"backup {victim} is damaged" in damaged.stderr, damaged.stderr
    assert name in damaged.stderr
    assert not host.file(f"{BACKUP_DIR}/{victim}").exists, "the damaged copy was left in the backup directory"

    intact = host.run(f"{SCRIPT} verify {victim}")
    assert intact.rc == 0, intact.stderr
    assert json.loads(intact.stdout)["fetched"] is True
    assert host.file(f"{BACKUP_DIR}/{victim}/manifest.json").exists
