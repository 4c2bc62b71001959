"""scripts/stack_client.py, the one place that finds a deployed stack and writes
a client's settings: it reads exactly the keys the roles publish, and the env
file it writes gives a shell back the exact values, whatever a secret holds."""

from __future__ import annotations

import dataclasses
import pathlib
import re
import shutil
import subprocess

import pytest
import stack_client
import yaml
from conftest import ROOT

BASH = shutil.which("bash") or "/bin/bash"


def published_keys(path: pathlib.Path, task: str) -> set[str]:
    """The keys of the dict a role's task writes as its local fact."""
    tasks = yaml.safe_load(path.read_text())
    found = [t for t in tasks if t.get("name") == task]
    found += [b for t in tasks for b in t.get("block", []) if b.get("name") == task]
    assert len(found) == 1, f"no task {task!r} in {path}"
    content = found[0]["ansible.builtin.copy"]["content"]
    return set(re.findall(r"'(\w+)':", content))


TRACKING_TASK = "Publish what this host runs as a local fact"


@pytest.mark.parametrize(
    ("record", "path", "task"),
    [
        (
            stack_client.Tracking,
            "roles/mlflow/tasks/state.yml",
            TRACKING_TASK,
        ),
        (stack_client.Balancer, "roles/haproxy/tasks/service.yml", "Write the local fact"),
    ],
)
def test_reads_exactly_what_the_role_publishes(record: type, path: str, task: str) -> None:
    assert {field.name for field in dataclasses.fields(record)} == published_keys(ROOT / path, task)


def test_tracking_reads_the_fact_through_the_runner() -> None:
    fact = (
        '{"version": "9.9.9", "venv": "/opt/mlflow/venvs/9.9.9", "port": 5000, "workers": 2,'
        ' "database": "mlflow", "artifacts_destination": "s3://mlflow",'
        ' "s3_endpoint": "http://127.0.0.1:9000", "kek_version": 1,'
        ' "workspaces": false}'
    )
    asked: list[list[str]] = []

    def run(argv: object) -> str:
        asked.append(list(argv))  # type: ignore[call-overload]
        return fact

    tracking = stack_client.tracking(run)
    assert asked == [["cat", "/etc/ansible/facts.d/mlflow.fact"]]
    assert (tracking.port, tracking.workers, tracking.workspaces) == (5000, 2, False)


@pytest.mark.parametrize("direct", [True, False])
def test_the_env_file_gives_the_shell_the_exact_values(tmp_path: pathlib.Path, direct: bool) -> None:
    secrets = {
        "vault_minio_mlflow_access_key": "mlflow",
        "vault_minio_mlflow_secret_key": "a'b\"c $HOME `x` \\d",
    }
    path = tmp_path / "secrets.yml"
    path.write_text(yaml.safe_dump(secrets))
    settings = stack_client.client_settings(
        "http://127.0.0.1:5000", "http://127.0.0.1:9000", stack_client.lab_secrets(path), direct
    )
    env = tmp_path / "env"
    env.write_text(stack_client.env_file(settings))
    names = " ".join(f'"${name}"' for name in settings)
    shown = subprocess.run(
        [BASH, "-c", f'source "$1" && printf "%s\\0" {names}', "bash", str(env)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")[:-1]
    assert dict(zip(settings, shown, strict=True)) == settings
    assert settings["AWS_SECRET_ACCESS_KEY"] == secrets["vault_minio_mlflow_secret_key"]
    assert settings["MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD"] == str(direct).lower()
