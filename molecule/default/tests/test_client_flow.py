"""End to end with the real MLflow client against the installed server: runs,
a registered model in two versions, an alias, loading and predicting, and the
artifacts landing in the MinIO bucket."""

from __future__ import annotations

import uuid

import mlflow
import numpy as np
import pytest
from botocore.client import BaseClient
from mlflow import MlflowClient
from sklearn.linear_model import LogisticRegression


@pytest.fixture(scope="module")
def client(mlflow_url: str) -> MlflowClient:
    mlflow.set_tracking_uri(mlflow_url)
    return MlflowClient(tracking_uri=mlflow_url)


def test_experiment_run_model_registry_alias_and_artifacts(client: MlflowClient, s3: BaseClient) -> None:
    suffix = uuid.uuid4().hex[:8]
    experiment_id = client.create_experiment(f"verify-{suffix}")
    model_name = f"verify-model-{suffix}"
    features = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    labels = np.array([0, 0, 0, 1, 1, 1])

    model_ids: list[str] = []
    run_ids: list[str] = []
    for c_value in (0.5, 2.0):
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_param("C", c_value)
            for step, loss in enumerate((0.9, 0.5, 0.2)):
                mlflow.log_metric("loss", loss, step=step)
            model = LogisticRegression(C=c_value).fit(features, labels)
            info = mlflow.sklearn.log_model(model, name="model", registered_model_name=model_name)
            model_ids.append(info.model_id)
            run_ids.append(run.info.run_id)

    stored = client.get_run(run_ids[1])
    assert stored.data.params["C"] == "2.0"
    assert stored.data.metrics["loss"] == pytest.approx(0.2)
    assert [m.value for m in client.get_metric_history(run_ids[1], "loss")] == [0.9, 0.5, 0.2]

    versions = sorted(int(v.version) for v in client.search_model_versions(f"name='{model_name}'"))
    assert versions == [1, 2]

    client.set_registered_model_alias(model_name, "champion", "2")
    assert client.get_model_version_by_alias(model_name, "champion").version == "2"

    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}@champion")
    predictions = loaded.predict(np.array([[0.0], [5.0]]))
    assert list(predictions) == [0, 1]

    keys = [
        obj["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket="mlflow", Prefix=f"{experiment_id}/")
        for obj in page.get("Contents", [])
    ]
    for model_id in model_ids:
        model_keys = [k for k in keys if f"/{model_id}/" in k]
        assert any(k.endswith("/MLmodel") for k in model_keys), keys
        assert any(k.endswith("/requirements.txt") for k in model_keys), keys
