"""Workspaces (mlflow_workspaces_enabled): on, the server groups resources per
workspace and what existed is in "default"; turned off again, every resource
moves into "default" with MLflow's migrate-to-default-workspace, and a name two
workspaces share stops the run before anything changes."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import mlflow
import pytest
import testinfra.host
from conftest import main_pid, run_site

UNIT = "/etc/systemd/system/mlflow.service"


def names_in(mlflow_url: str, workspace: str | None) -> set[str]:
    """Experiment names a client sees, in a workspace (None: a server without workspaces)."""
    client = mlflow.MlflowClient(mlflow_url)
    if workspace is None:
        return {e.name for e in client.search_experiments()}
    with workspace_of(workspace):
        return {e.name for e in client.search_experiments()}


@contextlib.contextmanager
def workspace_of(name: str) -> Iterator[None]:
    """The client's requests go to workspace `name` inside the block."""
    mlflow.set_workspace(name)
    try:
        yield
    finally:
        mlflow.set_workspace(None)


@pytest.fixture(autouse=True)
def tracking_uri(mlflow_url: str) -> None:
    mlflow.set_tracking_uri(mlflow_url)


def test_workspaces_on_then_off_moves_everything_into_default(
    host: testinfra.host.Host, mlflow_url: str
) -> None:
    suffix = uuid.uuid4().hex[:8]
    client = mlflow.MlflowClient(mlflow_url)
    before = client.create_experiment(f"before-workspaces-{suffix}")

    on = run_site({"mlflow_workspaces_enabled": True})
    assert on.returncode == 0, (on.stdout + on.stderr)[-3000:]
    assert host.file(UNIT).contains("--enable-workspaces")
    assert "default" in {w.name for w in mlflow.list_workspaces()}
    assert f"before-workspaces-{suffix}" in names_in(mlflow_url, "default")

    team = f"team-{suffix}"
    mlflow.create_workspace(team)
    with workspace_of(team):
        client.create_experiment(f"only-in-team-{suffix}")
        # The same name as one in "default": the two cannot both move there.
        clash = client.create_experiment(f"before-workspaces-{suffix}")
    assert f"only-in-team-{suffix}" not in names_in(mlflow_url, "default")

    pid = main_pid(host, "mlflow")
    off = run_site()
    output = off.stdout + off.stderr
    assert off.returncode != 0
    assert "mlflow_workspaces_enabled is false" in output
    assert f"before-workspaces-{suffix}" in output, output[-3000:]
    assert main_pid(host, "mlflow") == pid, "the server was restarted by a run that stopped"
    assert host.file(UNIT).contains("--enable-workspaces")
    assert f"only-in-team-{suffix}" in names_in(mlflow_url, team)

    with workspace_of(team):
        client.rename_experiment(clash, f"renamed-in-team-{suffix}")
    off = run_site()
    output = off.stdout + off.stderr
    assert off.returncode == 0, output[-3000:]
    assert "Workspaces off: Moved" in output
    assert not host.file(UNIT).contains("--enable-workspaces")
    names = names_in(mlflow_url, None)
    assert {f"before-workspaces-{suffix}", f"only-in-team-{suffix}", f"renamed-in-team-{suffix}"} <= names
    assert client.get_experiment(before).name == f"before-workspaces-{suffix}"
