"""The lab's client flow, as a user runs it after `source .lab/env`: a run with
a parameter, a metric history and an artifact, a scikit-learn model registered
in two versions, an alias, the champion loaded back and predicting, and the
artifact downloaded equal to what was logged. Prints one line per step and
exits non-zero on the first failure. Used by scripts/check-lab.

  .venv/bin/python scripts/lab_client_flow.py        (with .lab/env sourced)
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
import time
import uuid

import mlflow
import numpy as np
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression


def step(message: str) -> None:
    print(f"  ok  {message}", flush=True)


def main() -> None:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        sys.exit("MLFLOW_TRACKING_URI is not set: source .lab/env first")
    start = time.monotonic()
    client = MlflowClient(uri)
    suffix = uuid.uuid4().hex[:8]
    experiment_id = client.create_experiment(f"lab-check-{suffix}")
    model_name = f"lab-check-model-{suffix}"
    features = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    labels = np.array([0, 0, 0, 1, 1, 1])
    payload = f"lab check {suffix}\n" * 1000

    run_ids = []
    for c_value in (0.5, 2.0):
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_param("C", c_value)
            for index, loss in enumerate((0.9, 0.5, 0.2)):
                mlflow.log_metric("loss", loss, step=index)
            mlflow.log_text(payload, "notes/payload.txt")
            model = LogisticRegression(C=c_value).fit(features, labels)
            mlflow.sklearn.log_model(model, name="model", registered_model_name=model_name)
            run_ids.append(run.info.run_id)
    step(f"two runs logged in experiment {experiment_id}")

    stored = client.get_run(run_ids[1])
    assert stored.data.params["C"] == "2.0", stored.data.params
    history = [m.value for m in client.get_metric_history(run_ids[1], "loss")]
    assert history == [0.9, 0.5, 0.2], history
    step("parameters and the metric history read back")

    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{model_name}'"))
    assert versions == [1, 2], versions
    client.set_registered_model_alias(model_name, "champion", "2")
    assert client.get_model_version_by_alias(model_name, "champion").version == "2"
    step(f"{model_name}: versions 1 and 2, alias champion -> 2")

    predictions = mlflow.pyfunc.load_model(f"models:/{model_name}@champion").predict(np.array([[0.0], [5.0]]))
    assert list(predictions) == [0, 1], predictions
    step("the champion loaded and predicted [0, 1]")

    with tempfile.TemporaryDirectory() as scratch:
        local = mlflow.artifacts.download_artifacts(
            run_id=run_ids[0], artifact_path="notes/payload.txt", dst_path=scratch
        )
        assert pathlib.Path(local).read_text() == payload
    step("the artifact downloaded equal to what was logged")
    print(f"client flow passed in {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
