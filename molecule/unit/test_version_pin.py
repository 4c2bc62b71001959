"""One MLflow version for the whole stack: mlflow_stack_mlflow_version in the
wiring is the only place the release is written, and a site that changes it
moves the tracking servers, the served models' MLflow and the version the
backups record, together. Resolved by Ansible itself (an ad-hoc debug on the
controller, no host needed) against a site that links the wiring."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml
from conftest import MLFLOW_PIN, ROOT, WIRING

HOSTS = {
    "db": "mlflow_database",
    "s3": "mlflow_storage",
    "tracking": "mlflow_tracking",
    "serving": "mlflow_serving",
}
# What each tier reads, on a host of that tier.
FOLLOWERS = {
    "tracking": "mlflow_version",
    "serving": "mlflow_serving_mlflow_version",
    "db": "mlflow_backup_mlflow_version",
}


def resolved(tmp_path: pathlib.Path, site: dict[str, str]) -> dict[str, str]:
    """Each follower's value on its tier's host, for a site whose main.yml holds `site`."""
    inventory = tmp_path / "site"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "hosts.yml").write_text(
        yaml.safe_dump(
            {"all": {"children": {group: {"hosts": {name: None}} for name, group in HOSTS.items()}}}
        )
    )
    (inventory / "group_vars" / "all" / "00-stack.yml").symlink_to(WIRING)
    (inventory / "group_vars" / "all" / "main.yml").write_text(yaml.safe_dump(site or {}))
    pairs = ", ".join(f"'{name}': {var}" for name, var in FOLLOWERS.items())
    values = "{{ {" + pairs + "} | to_json }}"
    result = subprocess.run(
        [
            str(pathlib.Path(sys.executable).parent / "ansible"),
            "all",
            "-i",
            str(inventory / "hosts.yml"),
            "-m",
            "ansible.builtin.debug",
            "-a",
            f"msg={values}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env=dict(
            os.environ,
            ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
            ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
            ANSIBLE_COLLECTIONS_PATH=str(ROOT / "collections"),
        ),
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]
    report = json.loads(result.stdout[result.stdout.index("{") :])
    per_host = report["plays"][0]["tasks"][0]["hosts"]
    return {name: json.loads(per_host[name]["msg"])[name] for name in FOLLOWERS}


def test_every_tier_runs_the_wirings_pin(tmp_path: pathlib.Path) -> None:
    assert dict.fromkeys(FOLLOWERS, MLFLOW_PIN) == resolved(tmp_path, {})


@pytest.mark.parametrize("version", ["3.10.0", "3.16.1"])
def test_a_site_that_changes_the_pin_moves_every_tier(tmp_path: pathlib.Path, version: str) -> None:
    assert dict.fromkeys(FOLLOWERS, version) == resolved(tmp_path, {"mlflow_stack_mlflow_version": version})


def test_the_pin_is_written_in_one_place() -> None:
    """Roles, playbooks, scenarios, tests, tooling and requirements name no
    release of their own: a bump is the wiring's one line. (The docs name it
    neither: test_docs.py.)"""
    places = [ROOT / "requirements.txt"]
    for top in ("roles", "playbooks", "molecule", "bench", "scripts", "collections", "inventories"):
        places += [
            p
            for p in (ROOT / top).rglob("*")
            if p.is_file() and p.suffix in {"", ".yml", ".py", ".j2", ".sh", ".txt", ".cfg"}
        ]
    found = [
        str(p.relative_to(ROOT))
        for p in places
        if not p.is_symlink()
        and p.resolve() != WIRING.resolve()
        and MLFLOW_PIN in p.read_text(errors="ignore")
    ]
    assert found == []
    assert yaml.safe_load((ROOT / "roles/mlflow/defaults/main.yml").read_text())["mlflow_version"] == ""
    assert (
        yaml.safe_load((ROOT / "roles/mlflow_serving/defaults/main.yml").read_text())[
            "mlflow_serving_mlflow_version"
        ]
        == ""
    )
