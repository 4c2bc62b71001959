"""End to end with the real MLflow client against the installed server: runs,
a registered model in two versions, an alias, loading and predicting, and the
artifacts landing in the MinIO bucket."""

from __future__ import annotations

from botocore.client import BaseClient
from conftest import Stack, check_client_flow


def test_experiment_run_model_registry_alias_and_artifacts(
    mlflow_url: str, s3: BaseClient, stack: Stack
) -> None:
    check_client_flow(mlflow_url, s3, stack.bucket)
