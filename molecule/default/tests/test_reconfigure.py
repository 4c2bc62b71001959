"""site.yml run again with other settings, as one story told in file order:
four runs shared by every check (a run with its restarts costs about a minute;
each feature with runs of its own took eleven).

1. Moved: one worker on port 5001, direct artifacts, X-Frame-Options DENY, one
   allowed CORS origin, workspaces on. Nothing is lost; the frame header and
   the listed origin follow the variables; what existed is in "default", and a
   new workspace is isolated. A second workspace then takes a name that
   "default" has.
2. The same settings with workspaces off: the shared name stops the run before
   anything changes.
3. The name renamed; back on the scenario's port, workers and proxied
   artifacts, X-Frame-Options NONE, a new secret for MLflow's MinIO key:
   everything moves into "default", every model loads, no frame header and no
   cross-origin grant, the old key is refused and MLflow stores with the new.
4. The scenario's own settings at -v (the old key back): the default frame
   header returns, and no secret (the rotated one included) shows in the
   output or in any process's arguments during the run.
If a run fails, the module's teardown runs the scenario's settings once more."""

from __future__ import annotations

import contextlib
import pathlib
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest
import requests
import testinfra.host
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from conftest import (
    Stack,
    answers,
    assert_clean,
    assert_seeded,
    deployed_record,
    main_pid,
    run_site,
    s3_client,
    sampled_process_arguments,
    secret_forms,
    seed_model,
    wait_for,
)
from mlflow import MlflowClient
from test_secrets import SECRET_VARS

UNIT = "/etc/systemd/system/mlflow.service"
NOTEBOOKS = "https://notebooks.example"
MOVED_PORT = 5001
MOVED = {
    "mlflow_workers": 1,
    "mlflow_port": MOVED_PORT,
    "mlflow_artifacts_mode": "direct",
    "mlflow_x_frame_options": "DENY",
    "mlflow_cors_allowed_origins": [NOTEBOOKS],
}


def converged(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def preflight(url: str, origin: str) -> requests.Response:
    """A browser's CORS preflight for a POST from `origin`."""
    return requests.options(
        f"{url}/api/2.0/mlflow/experiments/search",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )


def frame_header(url: str) -> str | None:
    return requests.get(f"{url}/health", timeout=10).headers.get("X-Frame-Options")


@contextlib.contextmanager
def workspace_of(name: str) -> Iterator[None]:
    """The client's requests go to workspace `name` inside the block."""
    mlflow.set_workspace(name)
    try:
        yield
    finally:
        mlflow.set_workspace(None)


def names_in(url: str, workspace: str | None) -> set[str]:
    """Experiment names a client sees, in a workspace (None: a server without workspaces)."""
    client = MlflowClient(url)
    if workspace is None:
        return {e.name for e in client.search_experiments()}
    with workspace_of(workspace):
        return {e.name for e in client.search_experiments()}


@pytest.fixture(scope="module")
def story(mlflow_url: str) -> Iterator[dict[str, Any]]:
    """What the runs leave for the checks; the scenario's settings come back at
    the end whatever failed (a run that stopped half way included: the shared
    workspace name is renamed first, or the run back would stop on it)."""
    told: dict[str, Any] = {"restored": False, "suffix": uuid.uuid4().hex[:8]}
    yield told
    if told["restored"]:
        return
    if "clash" in told and "team" in told:
        with contextlib.suppress(Exception), workspace_of(told["team"]):
            MlflowClient(told["moved"]).rename_experiment(told["clash"], f"renamed-in-team-{told['suffix']}")
    mlflow.set_tracking_uri(mlflow_url)
    converged(run_site({}))
    wait_for(lambda: answers(f"{mlflow_url}/health"), timeout=120)


@pytest.fixture(scope="module")
def seeded(mlflow_url: str, story: dict[str, Any]) -> dict[str, str]:
    """A run with a metric and a registered model, in an experiment named like
    the one the second workspace takes (run 1), made before the runs."""
    return seed_model(mlflow_url, f"before-workspaces-{story['suffix']}", "before_reconfiguring")


@pytest.fixture(scope="module")
def moved(address: str, seeded: dict[str, str], story: dict[str, Any]) -> str:
    """Run 1; the URL of the moved server."""
    converged(run_site({**MOVED, "mlflow_workspaces_enabled": True}))
    url = f"http://{address}:{MOVED_PORT}"
    story["moved"] = url
    wait_for(lambda: answers(f"{url}/health"), timeout=120)
    return url


@pytest.fixture(scope="module")
def clashing(moved: str, story: dict[str, Any]) -> str:
    """A second workspace with an experiment of its own, and one named like an
    experiment in "default" (the two cannot both move there). Its name."""
    mlflow.set_tracking_uri(moved)
    team = f"team-{story['suffix']}"
    mlflow.create_workspace(team)
    story["team"] = team
    client = MlflowClient(moved)
    with workspace_of(team):
        client.create_experiment(f"only-in-team-{story['suffix']}")
        story["clash"] = client.create_experiment(f"before-workspaces-{story['suffix']}")
    return team


@pytest.fixture(scope="module")
def stopped(host: testinfra.host.Host, clashing: str) -> dict[str, Any]:
    """Run 2: run 1's settings with workspaces off. The server's PID before it."""
    pid = main_pid(host, "mlflow")
    result = run_site(MOVED)
    return {"pid": pid, "returncode": result.returncode, "output": result.stdout + result.stderr}


@pytest.fixture(scope="module")
def rotated(
    mlflow_url: str, moved: str, stopped: dict[str, Any], clashing: str, story: dict[str, Any]
) -> dict[str, str]:
    """Run 3 (after the shared name is renamed). The new secret and the output."""
    mlflow.set_tracking_uri(moved)
    with workspace_of(clashing):
        MlflowClient(moved).rename_experiment(story["clash"], f"renamed-in-team-{story['suffix']}")
    secret = f"rotated-{uuid.uuid4().hex[:16]}"
    output = converged(run_site({"mlflow_x_frame_options": "NONE", "vault_minio_mlflow_secret_key": secret}))
    wait_for(lambda: answers(f"{mlflow_url}/health"), timeout=120)
    mlflow.set_tracking_uri(mlflow_url)
    return {"secret": secret, "output": output}


@pytest.fixture(scope="module")
def restored(
    host: testinfra.host.Host,
    mlflow_url: str,
    rotated: dict[str, str],
    hostvars: dict[str, Any],
    story: dict[str, Any],
) -> dict[str, Any]:
    """Run 4: the scenario's settings at -v, with ps sampled throughout."""
    with sampled_process_arguments(host) as samples:
        result = run_site(None, "-v")
    output = converged(result)
    story["restored"] = True
    wait_for(lambda: answers(f"{mlflow_url}/health"), timeout=120)
    secrets = secret_forms({**hostvars, "rotated": rotated["secret"]}, [*SECRET_VARS, "rotated"])
    return {"output": output, "ps": samples[0], "secrets": secrets}


# Run 1


def test_moved_to_another_port_with_direct_artifacts_nothing_is_lost(
    moved: str,
    mlflow_url: str,
    s3: BaseClient,
    stack: Stack,
    seeded: dict[str, str],
    host: testinfra.host.Host,
) -> None:
    assert not answers(f"{mlflow_url}/health", timeout=2), "the old port still answers"
    assert host.file(UNIT).contains(r"--workers 1 \\$")
    # Direct mode: the server serves no artifacts, and a new experiment's
    # artifacts go to the bucket itself, not through the server.
    assert host.file(UNIT).contains("--no-serve-artifacts")
    client = MlflowClient(moved)
    fresh = client.get_experiment(client.create_experiment(f"direct-{uuid.uuid4().hex[:8]}"))
    assert fresh.artifact_location.startswith(f"s3://{stack.bucket}"), fresh.artifact_location
    # The metadata here; the seeded model's objects in the bucket.
    assert_seeded(moved, seeded, load_model=False)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=stack.bucket).get("Contents", [])]
    assert any(k.endswith("/MLmodel") for k in keys)


def test_the_frame_header_and_a_listed_origin_follow_the_variables(moved: str) -> None:
    """SAMEORIGIN is MLflow's own default: DENY and a granted origin show that the
    variables reach the server."""
    assert frame_header(moved) == "DENY"
    granted = preflight(moved, NOTEBOOKS)
    assert granted.ok, granted.text
    assert granted.headers.get("Access-Control-Allow-Origin") == NOTEBOOKS
    assert "POST" in granted.headers.get("Access-Control-Allow-Methods", "")
    refused = preflight(moved, "https://evil.example")
    assert refused.headers.get("Access-Control-Allow-Origin") in (None, ""), refused.headers


def test_workspaces_on_keep_what_existed_in_default_and_isolate_a_new_one(
    moved: str, host: testinfra.host.Host, clashing: str, story: dict[str, Any]
) -> None:
    suffix = story["suffix"]
    assert host.file(UNIT).contains("--enable-workspaces")
    assert deployed_record(host).workspaces is True
    assert "default" in {w.name for w in mlflow.list_workspaces()}
    assert f"before-workspaces-{suffix}" in names_in(moved, "default")
    assert f"only-in-team-{suffix}" not in names_in(moved, "default")
    assert f"only-in-team-{suffix}" in names_in(moved, clashing)


# Run 2


def test_workspaces_off_with_a_shared_name_stops_before_anything_changes(
    stopped: dict[str, Any], host: testinfra.host.Host, moved: str, clashing: str, story: dict[str, Any]
) -> None:
    output = stopped["output"]
    assert stopped["returncode"] != 0
    assert "mlflow_workspaces_enabled is false" in output
    assert f"before-workspaces-{story['suffix']}" in output, output[-3000:]
    assert main_pid(host, "mlflow") == stopped["pid"], "the server was restarted by a run that stopped"
    assert host.file(UNIT).contains("--enable-workspaces")
    assert deployed_record(host).workspaces is True
    assert f"only-in-team-{story['suffix']}" in names_in(moved, clashing)


# Run 3


def test_workspaces_off_moves_everything_into_default(
    rotated: dict[str, str],
    host: testinfra.host.Host,
    mlflow_url: str,
    seeded: dict[str, str],
    story: dict[str, Any],
) -> None:
    suffix = story["suffix"]
    assert "Workspaces off: Moved" in rotated["output"]
    assert not host.file(UNIT).contains("--enable-workspaces")
    assert deployed_record(host).workspaces is False
    names = names_in(mlflow_url, None)
    assert {f"before-workspaces-{suffix}", f"only-in-team-{suffix}", f"renamed-in-team-{suffix}"} <= names
    assert (
        MlflowClient(mlflow_url).get_experiment(seeded["experiment_id"]).name == f"before-workspaces-{suffix}"
    )


def test_back_on_its_port_every_model_loads(
    rotated: dict[str, str], address: str, mlflow_url: str, seeded: dict[str, str]
) -> None:
    assert not answers(f"http://{address}:{MOVED_PORT}/health", timeout=2), "the moved port still answers"
    assert_seeded(mlflow_url, seeded, load_model=True)


def test_frame_header_none_and_no_cross_origin_grant(rotated: dict[str, str], mlflow_url: str) -> None:
    assert frame_header(mlflow_url) is None
    assert "Access-Control-Allow-Origin" not in preflight(mlflow_url, NOTEBOOKS).headers


def test_a_new_secret_rotates_mlflows_minio_key(
    rotated: dict[str, str],
    host: testinfra.host.Host,
    s3_url: str,
    mlflow_url: str,
    hostvars: dict[str, Any],
    stack: Stack,
) -> None:
    access_key = hostvars["vault_minio_mlflow_access_key"]
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        s3_client(s3_url, access_key, hostvars["vault_minio_mlflow_secret_key"]).list_objects_v2(
            Bucket=stack.bucket
        )
    s3_client(s3_url, access_key, rotated["secret"]).list_objects_v2(Bucket=stack.bucket)
    # MLflow was restarted with the new key and stores artifacts with it (proxied).
    assert rotated["secret"] in host.file("/etc/mlflow/mlflow.env").content_string
    tracking = MlflowClient(mlflow_url)
    run = tracking.create_run(tracking.create_experiment(f"rotation-{uuid.uuid4().hex[:8]}"))
    text = f"after rotation {uuid.uuid4().hex}"
    tracking.log_text(run.info.run_id, text, "rotation.txt")
    assert pathlib.Path(tracking.download_artifacts(run.info.run_id, "rotation.txt")).read_text() == text


# Run 4


def test_the_default_frame_header_and_the_old_key_return(
    restored: dict[str, Any], mlflow_url: str, s3_url: str, hostvars: dict[str, Any], stack: Stack
) -> None:
    assert frame_header(mlflow_url) == "SAMEORIGIN"
    access_key = hostvars["vault_minio_mlflow_access_key"]
    s3_client(s3_url, access_key, hostvars["vault_minio_mlflow_secret_key"]).list_objects_v2(
        Bucket=stack.bucket
    )


def test_no_secret_in_the_output_or_the_process_list_of_a_run_that_changes_them(
    restored: dict[str, Any],
) -> None:
    """At -v Ansible prints every task's result; this run rotates a key back, so
    its changed tasks are in the output too."""
    assert "changed=0" not in restored["output"]
    assert_clean(restored["output"], restored["secrets"], "ansible-playbook -v output")
    # ps prints its COMMAND header once per sample: the sampler ran throughout.
    assert restored["ps"].count("COMMAND") >= 50, "the ps sampler hardly ran"
    assert_clean(restored["ps"], restored["secrets"], "ps during the run")
