#!/usr/bin/python3
"""Back up and restore an mlflow-stack: its PostgreSQL databases and its bucket.

Runs as root on a database host, with Debian's python3-boto3, from the
playbooks (backup.yml, restore.yml) and from mlflow-backup.timer alike:

  mlflow-stack-backup [--config FILE] backup [--mlflow-version V] [--label L]
  mlflow-stack-backup [--config FILE] verify [--no-fetch] ID
                                                    checks the manifest and every checksum
  mlflow-stack-backup [--config FILE] status        does the stack hold data?
  mlflow-stack-backup [--config FILE] restore ID    databases and bucket as in the backup

A backup is one directory, BACKUP_DIR/<UTC timestamp>[-label], holding
tracking.dump (and auth.dump; pg_dump -Fc, taken as postgres), artifacts/ (a
copy of every object of the bucket), and manifest.json, written last: a
directory without a manifest is an incomplete backup and is never restored.
With a target bucket in the config (an off-host copy, on another S3 endpoint
or bucket), each complete backup is uploaded to <prefix>/<id>/ there, manifest
last, and the same number is kept there; verify and restore fetch a backup from
it when BACKUP_DIR does not hold it.
The S3 keys come from the root-only config file, never from a command line.
Every command prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.client import BaseClient

FORMAT = 1
ID_PATTERN = re.compile(r"^\d{8}T\d{6}Z(-[a-z0-9-]+)?$")
MANIFEST = "manifest.json"
# Keys under which the databases are dumped, and the alembic table of each (the
# auth database moved to alembic_version_auth in MLflow 3.6).
DATABASES = {"tracking": ["alembic_version"], "auth": ["alembic_version_auth", "alembic_version"]}


class BackupError(Exception):
    pass


def load_config(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        config: dict[str, Any] = json.load(handle)
    return config


def as_postgres(*argv: str, stdin: IO[bytes] | None = None, stdout: IO[bytes] | None = None) -> str:
    """Runs a PostgreSQL client as the postgres user over the local socket."""
    result = subprocess.run(
        ["/usr/sbin/runuser", "-u", "postgres", "--", *argv],
        stdin=stdin,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=False,
        text=stdout is None,
    )
    if result.returncode != 0:
        error = result.stderr if isinstance(result.stderr, str) else result.stderr.decode(errors="replace")
        raise BackupError(f"{argv[0]} failed: {error.strip()}")
    return result.stdout if stdout is None else ""


def psql(config: dict[str, Any], database: str, sql: str) -> str:
    port = str(config["postgresql_port"])
    argv = ["psql", "-X", "-p", port, "-d", database, "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql]
    return as_postgres(*argv).strip()


def databases(config: dict[str, Any]) -> dict[str, str]:
    """The databases to back up, by key: tracking, and auth when there is one."""
    wanted = {"tracking": config["database"]}
    if config.get("auth_database"):
        wanted["auth"] = config["auth_database"]
    return wanted


def revision(config: dict[str, Any], key: str, database: str) -> str | None:
    for table in DATABASES[key]:
        exists = psql(config, database, f"SELECT to_regclass('public.{table}') IS NOT NULL")
        if exists == "t":
            return psql(config, database, f"SELECT version_num FROM {table}") or None  # noqa: S608
    return None


def s3_client(config: dict[str, Any]) -> BaseClient:
    """A client of the artifact store."""
    return client_for(config["s3"])


def client_for(s3: dict[str, Any]) -> BaseClient:
    import boto3  # Debian's python3-boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=s3["endpoint_url"],
        aws_access_key_id=s3["access_key"],
        aws_secret_access_key=s3["secret_key"],
        verify=s3.get("ca_bundle") or True,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
    )


def list_objects(client: BaseClient, bucket: str, prefix: str = "") -> dict[str, int]:
    objects: dict[str, int] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            objects[item["Key"]] = int(item["Size"])
    return objects


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backups(base: Path) -> list[Path]:
    """Backup directories, oldest first (their names are UTC timestamps)."""
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and ID_PATTERN.match(p.name))


def doomed(names: list[str], complete: set[str], keep: int, current: str) -> list[str]:
    """Of the backups `names` (UTC timestamps, so they sort oldest first): the
    complete ones beyond the newest `keep`, and the incomplete ones (no
    manifest). Never `current`, the one being written: it counts as the newest
    even when a clock set back gave it an older name."""
    done = sorted(name for name in names if name in complete and name != current)
    if current in complete:
        done.append(current)
    return sorted(done[: max(0, len(done) - keep)] + [n for n in names if n not in complete and n != current])


def prune(base: Path, keep: int, current: Path) -> list[str]:
    """Removes what `doomed` names in the backup directory."""
    present = backups(base)
    names = doomed(
        [p.name for p in present], {p.name for p in present if (p / MANIFEST).is_file()}, keep, current.name
    )
    for name in names:
        shutil.rmtree(base / name)
    return names


class Target:
    """The off-host copy: a bucket (and a prefix in it) on an S3 endpoint."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.client = client_for(settings)
        self.bucket = str(settings["bucket"])
        self.prefix = str(settings.get("prefix", "")).strip("/")

    @classmethod
    def of(cls, config: dict[str, Any]) -> Target | None:
        settings = config.get("target") or {}
        return cls(settings) if settings.get("bucket") else None

    def key(self, backup_id: str, name: str = "") -> str:
        return "/".join(part for part in (self.prefix, backup_id, name) if part)

    def url(self, backup_id: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(backup_id)}"

    def backups(self) -> dict[str, list[str]]:
        """Each backup's keys, by id."""
        found: dict[str, list[str]] = {}
        start = f"{self.prefix}/" if self.prefix else ""
        for key in list_objects(self.client, self.bucket, start):
            backup_id = key[len(start) :].split("/", 1)[0]
            if ID_PATTERN.match(backup_id):
                found.setdefault(backup_id, []).append(key)
        return found

    def upload(self, source: Path, keep: int) -> dict[str, Any]:
        """Every file of a complete backup, the manifest last; then keeps the
        newest `keep` complete backups there and removes incomplete ones."""
        files = sorted(p for p in source.rglob("*") if p.is_file() and p.name != MANIFEST)
        for path in [*files, source / MANIFEST]:
            self.client.upload_file(
                str(path), self.bucket, self.key(source.name, str(path.relative_to(source)))
            )
        present = self.backups()
        complete = {i for i, keys in present.items() if self.key(i, MANIFEST) in keys}
        removed = doomed(list(present), complete, keep, source.name)
        stale = sorted(key for i in removed for key in present[i])
        for start in range(0, len(stale), 1000):
            chunk = [{"Key": key} for key in stale[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
        return {"url": self.url(source.name), "objects": len(files) + 1, "removed": removed}

    def fetch(self, backup_id: str, into: Path) -> None:
        """Downloads a backup the manifest lists, the manifest last."""
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(backup_id, MANIFEST))[
                "Body"
            ].read()
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise BackupError(f"no backup {backup_id} in {into.parent} nor in {self.url()}") from error
            raise
        manifest = json.loads(body)
        names = list(manifest.get("files", {}))
        if any(Path(name).is_absolute() or ".." in Path(name).parts for name in names):
            raise BackupError(f"{self.url(backup_id)}: the manifest names a file outside the backup")
        if into.exists():
            shutil.rmtree(into)
        try:
            for name in names:
                path = into / name
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.client.download_file(self.bucket, self.key(backup_id, name), str(path))
        except BaseException:
            # Part of a copy (an object missing or unreadable there) is not left behind.
            shutil.rmtree(into, ignore_errors=True)
            raise
        into.mkdir(mode=0o700, exist_ok=True)
        (into / MANIFEST).write_bytes(body)


def backup(config: dict[str, Any], mlflow_version: str, label: str) -> dict[str, Any]:
    started = time.monotonic()
    base = Path(config["dir"])
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ") + (f"-{label}" if label else "")
    target = base / name
    target.mkdir(mode=0o700)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "id": name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": {
            "mlflow": mlflow_version or config.get("mlflow_version", ""),
            "postgresql": psql(config, "postgres", "SHOW server_version"),
        },
        "databases": {},
    }
    for key, database in databases(config).items():
        # Dumped to a file root opens: the postgres user cannot write here.
        with (target / f"{key}.dump").open("wb") as handle:
            as_postgres("pg_dump", "-p", str(config["postgresql_port"]), "-Fc", "-d", database, stdout=handle)
        manifest["databases"][key] = {
            "name": database,
            "file": f"{key}.dump",
            "revision": revision(config, key, database),
        }
    client = s3_client(config)
    bucket = config["s3"]["bucket"]
    objects = list_objects(client, bucket)
    for key in sorted(objects):
        path = target / "artifacts" / key
        if key.endswith("/") or ".." in Path(key).parts:
            raise BackupError(f"object key {key!r} cannot be stored as a file")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        client.download_file(bucket, key, str(path))
    manifest["artifacts"] = {
        "bucket": bucket,
        "objects": len(objects),
        "bytes": sum(objects.values()),
    }
    files = sorted(p for p in target.rglob("*") if p.is_file())
    manifest["files"] = {
        str(p.relative_to(target)): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files
    }
    manifest["bytes"] = sum(f["bytes"] for f in manifest["files"].values())
    manifest["seconds"] = round(time.monotonic() - started, 1)
    # Written last, and atomically: a backup without it is known to be incomplete.
    partial = target / f".{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    partial.rename(target / MANIFEST)
    removed = prune(base, int(config["keep"]), target)
    result = {
        "id": name,
        "path": str(target),
        "bytes": manifest["bytes"],
        "objects": len(objects),
        "seconds": manifest["seconds"],
        "removed": removed,
        "offsite": None,
    }
    offsite = Target.of(config)
    if offsite:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            result["offsite"] = offsite.upload(target, int(config["keep"]))
        except (BotoCoreError, ClientError) as error:
            raise BackupError(
                f"backup {name} is complete in {base}, but its copy to {offsite.url()} failed: {error}"
            ) from error
        result["seconds"] = round(time.monotonic() - started, 1)
    return result


def verify(config: dict[str, Any], backup_id: str, fetch: bool = True) -> dict[str, Any]:
    if not ID_PATTERN.match(backup_id):
        raise BackupError(f"backup id {backup_id!r} is not a backup name such as 20261123T101500Z")
    target = Path(config["dir"]) / backup_id
    manifest_path = target / MANIFEST
    offsite = Target.of(config)
    fetched = False
    if not manifest_path.is_file() and offsite and fetch:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            offsite.fetch(backup_id, target)
        except (BotoCoreError, ClientError) as error:
            raise BackupError(f"fetching backup {backup_id} from {offsite.url()} failed: {error}") from error
        fetched = True
    if not manifest_path.is_file():
        raise BackupError(f"{target} has no {MANIFEST}: no such backup, or an incomplete one")
    try:
        manifest = check(config, backup_id, target)
    except Exception:
        if fetched:
            # A damaged copy (or one whose manifest cannot be read) is not left
            # behind as if it were a local backup.
            shutil.rmtree(target)
        raise
    return {"id": backup_id, "ok": True, "fetched": fetched, "manifest": manifest}


def check(config: dict[str, Any], backup_id: str, target: Path) -> dict[str, Any]:
    """The manifest of a backup directory, once every checksum matches it."""
    manifest_path = target / MANIFEST
    manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{manifest_path}: unknown format {manifest.get('format')!r}")
    bad = [
        name
        for name, entry in manifest["files"].items()
        if not (target / name).is_file() or sha256(target / name) != entry["sha256"]
    ]
    present = {str(p.relative_to(target)) for p in target.rglob("*") if p.is_file()} - {MANIFEST}
    extra = sorted(present - set(manifest["files"]))
    if bad or extra:
        raise BackupError(
            f"backup {backup_id} is damaged: {len(bad)} file(s) missing or with a wrong sha256 "
            f"({', '.join(sorted(bad)[:5])}), "
            f"{len(extra)} file(s) not in the manifest ({', '.join(extra[:5])})"
        )
    for key in databases(config):
        if key not in manifest["databases"]:
            raise BackupError(f"backup {backup_id} has no {key} database, which this stack has")
    return manifest


def status(config: dict[str, Any]) -> dict[str, Any]:
    """What the stack holds: anything beyond a fresh install's Default experiment."""
    database = config["database"]
    counts: dict[str, int] = {}
    tables = {"experiments": "experiment_id <> 0", "runs": "true", "registered_models": "true"}
    for table, where in tables.items():
        exists = psql(config, database, f"SELECT to_regclass('public.{table}') IS NOT NULL") == "t"
        query = f"SELECT count(*) FROM {table} WHERE {where}"  # noqa: S608
        counts[table] = int(psql(config, database, query)) if exists else 0
    counts["objects"] = len(list_objects(s3_client(config), config["s3"]["bucket"]))
    return {"counts": counts, "has_data": any(counts.values())}


def restore(config: dict[str, Any], backup_id: str) -> dict[str, Any]:
    started = time.monotonic()
    manifest = verify(config, backup_id)["manifest"]
    target = Path(config["dir"]) / backup_id
    port = str(config["postgresql_port"])
    for key, database in databases(config).items():
        entry = manifest["databases"][key]
        owner = config["owner"]
        # A database as it was at the backup, not the backup laid over what is
        # there now: tables a newer schema added would confuse the migration.
        as_postgres("dropdb", "-p", port, "--if-exists", "--force", database)
        as_postgres("createdb", "-p", port, "-O", owner, database)
        with (target / entry["file"]).open("rb") as handle:
            as_postgres(
                "pg_restore", "-p", port, "--exit-on-error", "--no-owner", f"--role={owner}", "-d", database,
                stdin=handle,
            )  # fmt: skip
    client = s3_client(config)
    bucket = config["s3"]["bucket"]
    wanted = {name.removeprefix("artifacts/") for name in manifest["files"] if name.startswith("artifacts/")}
    stale = sorted(set(list_objects(client, bucket)) - wanted)
    for start in range(0, len(stale), 1000):
        chunk = [{"Key": key} for key in stale[start : start + 1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": chunk, "Quiet": True})
    for key in sorted(wanted):
        client.upload_file(str(target / "artifacts" / key), bucket, key)
    return {
        "id": backup_id,
        "restored_objects": len(wanted),
        "deleted_objects": len(stale),
        "revisions": {key: entry["revision"] for key, entry in manifest["databases"].items()},
        "seconds": round(time.monotonic() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", default="/etc/mlflow-backup/backup.json")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("backup")
    run.add_argument("--mlflow-version", default="")
    run.add_argument("--label", default="", type=lambda s: re.sub(r"[^a-z0-9-]", "-", s.lower()))
    commands.add_parser("status")
    commands.add_parser("verify").add_argument("id")
    commands.choices["verify"].add_argument(
        "--no-fetch", action="store_true", help="only a local backup (check mode changes nothing)"
    )
    commands.add_parser("restore").add_argument("id")
    args = parser.parse_args()
    config = load_config(args.config)
    os.umask(0o077)
    try:
        if args.command == "backup":
            result = backup(config, args.mlflow_version, args.label)
        elif args.command == "verify":
            result = verify(config, args.id, fetch=not args.no_fetch)
            result.pop("manifest")
        elif args.command == "status":
            result = status(config)
        else:
            result = restore(config, args.id)
    except BackupError as error:
        print(json.dumps({"error": str(error)}))
        sys.exit(f"mlflow-stack-backup: {error}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
