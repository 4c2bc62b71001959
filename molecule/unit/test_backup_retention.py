"""Which backups the backup script removes, and that it never leaves a bad
fetched copy behind: the selection rule (`doomed`), its use on the backup
directory (`prune`) and on the off-host copy (`Target.upload`, with an
in-memory S3 stand-in), and `verify` of a copy fetched from off-host that is
damaged or only partly there. No database, S3 endpoint or root needed."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import pathlib
import sys
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, Protocol

import pytest
from botocore.exceptions import ClientError

SCRIPT = pathlib.Path(__file__).resolve().parents[2] / "roles/mlflow_backup/files/mlflow-stack-backup.py"


def load_script() -> ModuleType:
    """The script as a module (its file name has a dash, so it cannot be imported by name)."""
    spec = importlib.util.spec_from_file_location("mlflow_stack_backup", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


backup_script = load_script()
doomed: Callable[[list[str], set[str], int, str], list[str]] = backup_script.doomed
BackupError: type[Exception] = backup_script.BackupError

# Seven backups a week apart, oldest first, as the script names them.
WEEK = [f"202611{day:02d}T023000Z" for day in (1, 8, 15, 22, 29)] + ["20261206T023000Z", "20261213T023000Z"]


def test_the_script_loads_without_boto3(monkeypatch: pytest.MonkeyPatch) -> None:
    """boto3 and botocore are imported only where an S3 client is made (or, for
    the types, under TYPE_CHECKING): the selection rule needs neither."""
    for name in ("boto3", "botocore", "botocore.client", "botocore.config", "botocore.exceptions"):
        monkeypatch.setitem(sys.modules, name, None)  # any import of it now raises ImportError
    with pytest.raises(ImportError):
        import boto3  # noqa: F401
    assert load_script().doomed(WEEK, set(WEEK), 7, WEEK[-1]) == []


def test_the_newest_keep_complete_backups_stay() -> None:
    current = WEEK[-1]
    assert doomed(WEEK, set(WEEK), 3, current) == WEEK[:4]
    assert doomed(WEEK, set(WEEK), 1, current) == WEEK[:6]


def test_keep_larger_than_the_count_removes_no_complete_backup() -> None:
    assert doomed(WEEK, set(WEEK), 7, WEEK[-1]) == []
    assert doomed(WEEK, set(WEEK), 30, WEEK[-1]) == []
    incomplete = WEEK[2]
    assert doomed(WEEK, set(WEEK) - {incomplete}, 30, WEEK[-1]) == [incomplete]


def test_incomplete_backups_go_whatever_their_age_and_do_not_count_toward_keep() -> None:
    """A directory without a manifest (a crashed run) is removed even when it is
    among the newest, and the newest `keep` are counted among complete ones only."""
    incomplete = {WEEK[1], WEEK[5]}  # an old one, and the newest but one
    removed = doomed(WEEK, set(WEEK) - incomplete, 2, WEEK[-1])
    # Complete: WEEK[0, 2, 3, 4, 6]; the newest two of them are WEEK[4] and WEEK[6].
    assert removed == sorted([WEEK[0], WEEK[2], WEEK[3], *incomplete])
    assert set(WEEK) - set(removed) == {WEEK[4], WEEK[6]}


def test_the_backup_being_written_is_never_removed() -> None:
    # Still without its manifest (Target.upload lists it while uploading).
    assert WEEK[-1] not in doomed(WEEK, set(WEEK[:-1]), 2, WEEK[-1])
    # Complete, but named older than the others (a clock set back): it still
    # counts as the newest, and the oldest of the others go instead.
    current = "20261001T023000Z"
    names = [*WEEK, current]
    removed = doomed(names, set(names), 2, current)
    assert current not in removed
    assert sorted(set(names) - set(removed)) == [current, WEEK[-1]]


def test_order_is_by_id_whatever_the_order_given_and_the_labels() -> None:
    """Ids sort by their UTC timestamp; a label (pre-upgrade, timer, or one a
    user gave) only follows it, and never makes an old backup look new."""
    names = [
        "20261101T023000Z-zzz-user-label",
        "20261102T023000Z-timer",
        "20261103T101500Z",
        "20261103T101501Z-pre-upgrade",
        "20261104T023000Z-aaa",
    ]
    shuffled = [names[i] for i in (3, 0, 4, 2, 1)]
    assert doomed(shuffled, set(names), 2, names[-1]) == names[:3]
    assert doomed(shuffled, set(names), 4, names[-1]) == names[:1]


def make_backup(base: pathlib.Path, name: str, complete: bool = True) -> None:
    path = base / name
    (path / "artifacts").mkdir(parents=True)
    (path / "tracking.dump").write_bytes(b"dump of " + name.encode())
    if complete:
        (path / "manifest.json").write_text("{}")


def test_prune_removes_what_doomed_names_and_nothing_else(tmp_path: pathlib.Path) -> None:
    for name in WEEK[:4]:
        make_backup(tmp_path, name)
    make_backup(tmp_path, WEEK[4], complete=False)
    make_backup(tmp_path, WEEK[5])
    # Not backups: left alone whatever their age.
    (tmp_path / "lost+found").mkdir()
    (tmp_path / "2025-notes").mkdir()
    (tmp_path / "20251231T000000Z.tar").write_text("not a directory")

    removed = backup_script.prune(tmp_path, 2, tmp_path / WEEK[5])

    assert removed == [*WEEK[:3], WEEK[4]]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([WEEK[3], WEEK[5], "lost+found", "2025-notes", "20251231T000000Z.tar"])


class FakeS3:
    """The part of an S3 client the off-host copy uses, over a dict; pages of
    two keys, so that listing has to follow the paginator."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = dict(objects)
        self.uploads: list[str] = []
        self.missing: set[str] = set()

    def upload_file(self, path: str, bucket: str, key: str) -> None:
        self.uploads.append(key)
        self.objects[key] = pathlib.Path(path).read_bytes()

    def get_paginator(self, operation: str) -> FakeS3:
        assert operation == "list_objects_v2"
        return self

    def paginate(self, Bucket: str, Prefix: str) -> Iterator[dict[str, Any]]:
        keys = sorted(k for k in self.objects if k.startswith(Prefix))
        for start in range(0, len(keys), 2):
            yield {"Contents": [{"Key": k, "Size": len(self.objects[k])} for k in keys[start : start + 2]]}

    def delete_objects(self, Bucket: str, Delete: dict[str, Any]) -> None:
        for item in Delete["Objects"]:
            self.objects.pop(item["Key"], None)

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        if Key not in self.objects:
            raise ClientError({"Error": {"Code": "NoSuchKey", "Message": "no such key"}}, "GetObject")
        return {"Body": io.BytesIO(self.objects[Key])}

    def download_file(self, bucket: str, key: str, path: str) -> None:
        if key in self.missing or key not in self.objects:
            raise ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject")
        pathlib.Path(path).write_bytes(self.objects[key])


class OffsiteCopy(Protocol):
    """What the tests call of the script's Target."""

    def upload(self, source: pathlib.Path, keep: int) -> dict[str, Any]: ...


def target_on(fake: FakeS3, prefix: str = "lab") -> OffsiteCopy:
    """A Target whose client is the stand-in (its constructor would make a boto3 client)."""
    target: OffsiteCopy = backup_script.Target.__new__(backup_script.Target)
    vars(target).update(client=fake, bucket="offsite", prefix=prefix)
    return target


def test_upload_sends_the_manifest_last_then_keeps_the_newest_complete_copies(tmp_path: pathlib.Path) -> None:
    old = {f"lab/{name}/{file}": b"x" for name in WEEK[:3] for file in ("tracking.dump", "manifest.json")}
    partial = {f"lab/{WEEK[3]}/tracking.dump": b"x"}  # newer than every complete one, no manifest
    foreign = {"lab/README": b"x", "other/20261101T023000Z/manifest.json": b"x", "lab/notes/a": b"x"}
    fake = FakeS3({**old, **partial, **foreign})
    current = tmp_path / WEEK[4]
    make_backup(tmp_path, WEEK[4])
    (current / "artifacts" / "0" / "r1").mkdir(parents=True)
    (current / "artifacts" / "0" / "r1" / "model.pkl").write_bytes(b"model")

    result = target_on(fake).upload(current, 2)

    assert fake.uploads[-1] == f"lab/{WEEK[4]}/manifest.json"
    assert sorted(fake.uploads[:-1]) == [
        f"lab/{WEEK[4]}/artifacts/0/r1/model.pkl",
        f"lab/{WEEK[4]}/tracking.dump",
    ]
    assert result["removed"] == [WEEK[0], WEEK[1], WEEK[3]]
    ids = {key.split("/")[1] for key in fake.objects if key.startswith("lab/2")}
    assert ids == {WEEK[2], WEEK[4]}
    assert set(foreign) <= set(fake.objects), "keys that are not backups were removed"


def offsite_backup(name: str, files: dict[str, bytes], damage: str = "") -> dict[str, bytes]:
    """A backup's objects under lab/<name>/ with a manifest of their checksums;
    `damage` names a file whose stored bytes then differ from the manifest's."""
    manifest = {
        "format": 1,
        "id": name,
        "databases": {"tracking": {"name": "mlflow", "file": "tracking.dump", "revision": "abc"}},
        "files": {
            f: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for f, data in files.items()
        },
    }
    objects = {f"lab/{name}/{f}": data + (b"!" if f == damage else b"") for f, data in files.items()}
    objects[f"lab/{name}/manifest.json"] = json.dumps(manifest).encode()
    return objects


FILES = {"tracking.dump": b"dump", "artifacts/1/run/weights.bin": b"weights"}


@pytest.fixture
def offsite(monkeypatch: pytest.MonkeyPatch) -> FakeS3:
    fake = FakeS3({})
    monkeypatch.setattr(backup_script.Target, "of", classmethod(lambda cls, config: target_on(fake)))
    return fake


def test_verify_fetches_an_intact_copy_and_keeps_it(offsite: FakeS3, tmp_path: pathlib.Path) -> None:
    offsite.objects.update(offsite_backup(WEEK[0], FILES))
    result = backup_script.verify({"dir": str(tmp_path), "database": "mlflow"}, WEEK[0])
    assert result["ok"]
    assert result["fetched"]
    assert (tmp_path / WEEK[0] / "manifest.json").is_file()
    assert (tmp_path / WEEK[0] / "artifacts/1/run/weights.bin").read_bytes() == b"weights"


def test_verify_removes_a_fetched_copy_whose_checksums_fail(offsite: FakeS3, tmp_path: pathlib.Path) -> None:
    offsite.objects.update(offsite_backup(WEEK[0], FILES, damage="artifacts/1/run/weights.bin"))
    with pytest.raises(BackupError, match=r"is damaged: 1 file\(s\) .*artifacts/1/run/weights\.bin"):
        backup_script.verify({"dir": str(tmp_path), "database": "mlflow"}, WEEK[0])
    assert not (tmp_path / WEEK[0]).exists()


def test_verify_removes_a_partly_fetched_copy(offsite: FakeS3, tmp_path: pathlib.Path) -> None:
    """An object of the copy that cannot be downloaded: the files fetched before it go too."""
    offsite.objects.update(offsite_backup(WEEK[0], FILES))
    offsite.missing.add(f"lab/{WEEK[0]}/artifacts/1/run/weights.bin")  # tracking.dump comes first
    with pytest.raises(BackupError, match=r"fetching backup .* failed"):
        backup_script.verify({"dir": str(tmp_path), "database": "mlflow"}, WEEK[0])
    assert not (tmp_path / WEEK[0]).exists()


def test_verify_leaves_a_damaged_local_backup_in_place(tmp_path: pathlib.Path) -> None:
    """Only a copy verify itself fetched is removed: a local backup that fails
    its checksums stays for a person to look at (restore refuses it)."""
    for key, data in offsite_backup(WEEK[0], FILES, damage="tracking.dump").items():
        path = tmp_path / key.removeprefix("lab/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    with pytest.raises(BackupError, match="is damaged"):
        backup_script.verify({"dir": str(tmp_path), "database": "mlflow"}, WEEK[0], fetch=False)
    assert (tmp_path / WEEK[0] / "manifest.json").is_file()


def test_verify_removes_a_fetched_copy_whose_manifest_lacks_its_parts(
    offsite: FakeS3, tmp_path: pathlib.Path
) -> None:
    """A manifest off-host that names no databases and no files (cut short, or
    written by something else): reading it fails with no BackupError of its
    own, and the fetched copy goes all the same."""
    offsite.objects[f"lab/{WEEK[0]}/manifest.json"] = json.dumps({"format": 1, "id": WEEK[0]}).encode()
    with pytest.raises(KeyError):
        backup_script.verify({"dir": str(tmp_path), "database": "mlflow"}, WEEK[0])
    assert not (tmp_path / WEEK[0]).exists()
