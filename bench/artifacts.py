"""Artifact transfers: one file up and down through a server's artifact proxy
with plain HTTP, through MLflow's own client with the lab's client settings
(stack_client), and straight to MinIO with MLflow's keys, in MB/s."""

from __future__ import annotations

import os
import pathlib
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import boto3
import requests
import stack_client
from botocore.client import BaseClient
from common import Host

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


@contextmanager
def client_environment() -> Iterator[None]:
    """The lab's multipart settings (stack_client, as scripts/lab writes them
    into .lab/env): large uploads go straight to MinIO through presigned URLs,
    in parallel parts (MLflow 3.17 servers offer them for S3 stores; clients use
    them from 500 MB by default). Downloads keep MLflow's default: through the
    server below 500 MB (presigned downloads measured no faster here). The
    README's Performance section explains them."""
    settings = stack_client.multipart_settings(True)
    saved = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def client_transfer(host: Host, path: pathlib.Path, scratch: pathlib.Path) -> tuple[float, float, int]:
    """Upload and download through MLflow's own client (mlflow-artifacts:) on
    the deployed server, with the lab's client settings: seconds each, bytes
    received."""
    # Imported here: MLflow's import is slow, and only this measurement needs it.
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    root = f"mlflow-artifacts://{host.address}:{host.deployed_port}/bench/client-{uuid.uuid4().hex[:8]}"
    with client_environment():
        repository = MlflowArtifactsRepository(root, tracking_uri=host.url("deployed"))
        start = time.perf_counter()
        repository.log_artifact(str(path))  # type: ignore[no-untyped-call]
        upload = time.perf_counter() - start
        target = scratch / f"download-{uuid.uuid4().hex[:8]}"
        target.mkdir()
        start = time.perf_counter()
        local = repository.download_artifacts(path.name, str(target))  # type: ignore[no-untyped-call]
        download = time.perf_counter() - start
    received = pathlib.Path(local).stat().st_size
    shutil.rmtree(target)
    return upload, download, received


def artifact_round(
    host: Host, target: str, path: pathlib.Path, size_mb: int, s3: BaseClient, bucket: str
) -> dict[str, float]:
    """Upload then download one file: through a server's artifact proxy with
    plain HTTP, through MLflow's client with the lab's client settings (target
    "client", the deployed server), or straight to MinIO with MLflow's keys
    ("minio")."""
    key = f"bench/{target}-{uuid.uuid4().hex[:8]}.bin"
    # Every download lands in a file, as a client's does.
    copy = path.with_name(f"copy-{uuid.uuid4().hex[:8]}")
    if target == "client":
        upload, download, received = client_transfer(host, path, path.parent)
    elif target == "minio":
        start = time.perf_counter()
        s3.upload_file(str(path), bucket, key)
        upload = time.perf_counter() - start
        start = time.perf_counter()
        s3.download_file(bucket, key, str(copy))
        download = time.perf_counter() - start
        received = copy.stat().st_size
    else:
        url = f"{host.url(target)}{ARTIFACTS}/{key}"
        start = time.perf_counter()
        with path.open("rb") as body:
            requests.put(url, data=body, timeout=600).raise_for_status()
        upload = time.perf_counter() - start
        start = time.perf_counter()
        with requests.get(url, timeout=600, stream=True) as response, copy.open("wb") as out:
            response.raise_for_status()
            for chunk in response.iter_content(1 << 20):
                out.write(chunk)
        download = time.perf_counter() - start
        received = copy.stat().st_size
    copy.unlink(missing_ok=True)
    if received != size_mb << 20:
        raise RuntimeError(f"{target}: downloaded {received} bytes of {size_mb << 20}")
    return {"upload_mb_per_s": size_mb / upload, "download_mb_per_s": size_mb / download}


def s3_client(host: Host, secrets: pathlib.Path) -> tuple[BaseClient, str]:
    """MLflow's own MinIO keys (the site's vault values), and its bucket."""
    values = stack_client.lab_secrets(secrets)
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{host.address}:{host.s3_port}",
        aws_access_key_id=values["vault_minio_mlflow_access_key"],
        aws_secret_access_key=values["vault_minio_mlflow_secret_key"],
        region_name="us-east-1",
    )
    return client, host.artifacts_destination[len("s3://") :].split("/")[0]
