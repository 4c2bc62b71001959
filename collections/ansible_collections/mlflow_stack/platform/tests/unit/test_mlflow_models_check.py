"""The mlflow_models_check module's checks against a real MLflow registry: the
controller's MLflow (the stack's pin) serving on 127.0.0.1 with a SQLite store
and proxied artifacts in a temporary directory."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from ansible_collections.mlflow_stack.platform.plugins.modules.mlflow_models_check import (
    check,
    entry_of,
    http_get,
    listing_path,
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tracking server with: churn v1 (an MLflow model, alias champion), and
    plain-file v1 (a version whose files are no MLflow model)."""
    import mlflow
    from mlflow import MlflowClient

    home = tmp_path_factory.mktemp("registry")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (home / "server.log").open("w")
    server = subprocess.Popen(
        [
            str(pathlib.Path(sys.executable).parent / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{home}/mlflow.db",
            "--artifacts-destination",
            str(home / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        # No job consumers: the registry is all the tests need.
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)  # noqa: S310 (http, built above)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError((home / "server.log").read_text()[-3000:]) from None
                time.sleep(0.5)
        mlflow.set_tracking_uri(url)
        client = MlflowClient(url)
        experiment = client.create_experiment("models-check")
        # What the check looks for is the MLmodel at the root of the version's files.
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_text("flavors: {}\n", "model/MLmodel")
        client.create_registered_model("churn")
        client.create_model_version("churn", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
        client.set_registered_model_alias("churn", "champion", "1")
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_text("not a model", "files/readme.txt")
        client.create_registered_model("plain-file")
        client.create_model_version("plain-file", f"runs:/{run.info.run_id}/files", run_id=run.info.run_id)
        # Registered from a bucket of its own: the registry points there, not at itself.
        client.create_registered_model("elsewhere")
        client.create_model_version("elsewhere", "s3://another-bucket/models/elsewhere")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def entry(name: str, uri: str, **extra: object) -> dict[str, Any]:
    return {"name": name, "model_uri": uri, "port": 5100, **extra}


def test_a_model_uri_is_taken_apart() -> None:
    assert entry_of(entry("a", "models:/churn@champion"), 2) == {
        **entry("a", "models:/churn@champion"),
        "model": "churn",
        "alias": "champion",
        "version": "",
        "workers": 2,
        "environment": {},
    }
    parsed = entry_of(entry("b", "models:/churn/12", workers=3), 1)
    assert (parsed["model"], parsed["alias"], parsed["version"], parsed["workers"]) == ("churn", "", "12", 3)


def test_listing_paths_for_both_kinds_of_proxied_uri() -> None:
    assert listing_path("runs:/abc/files") == "/api/2.0/mlflow/artifacts/list?run_id=abc&path=files"
    assert listing_path("mlflow-artifacts:/1/models/m-1/artifacts") == (
        "/api/2.0/mlflow-artifacts/artifacts?path=1%2Fmodels%2Fm-1%2Fartifacts"
    )


def test_an_alias_and_a_version_resolve_to_pins(registry: str) -> None:
    models = [entry("by-alias", "models:/churn@champion"), entry("by-version", "models:/churn/1")]
    result = check(models, http_get(registry, "", "", None), registry, 1)
    assert result["problems"] == []
    assert [(p["name"], p["model"], p["version"]) for p in result["pins"]] == [
        ("by-alias", "churn", "1"),
        ("by-version", "churn", "1"),
    ]


def test_every_problem_is_reported_at_once_naming_its_entry(registry: str) -> None:
    models = [
        entry("bad1", "models:/no-such-model@champion"),
        entry("bad2", "models:/churn@nosuch"),
        entry("bad3", "models:/churn/99"),
        entry("bad4", "models:/plain-file/1"),
        entry("bad5", "models:/elsewhere/1"),
        entry("good", "models:/churn@champion"),
    ]
    result = check(models, http_get(registry, "", "", None), registry, 1)
    problems = result["problems"]
    assert len(problems) == 5, problems
    assert "(bad1) names model 'no-such-model', which the registry at" in problems[0]
    assert "(bad2): model 'churn' has no alias 'nosuch'" in problems[1]
    assert "(bad3): model 'churn' has no version 99" in problems[2]
    assert "bad4) has no MLmodel at runs:/" in problems[3]
    assert problems[3].endswith("it is not an MLflow model")
    assert (
        "(bad5) is stored at s3://another-bucket/models/elsewhere, which the serving hosts cannot reach"
        in (problems[4])
    )
    assert problems[4].endswith("(mlflow_artifacts_mode: proxied)")
    # Resolved entries are pinned even when their files are wrong (bad4, bad5).
    assert [p["name"] for p in result["pins"]] == ["bad4", "bad5", "good"]
