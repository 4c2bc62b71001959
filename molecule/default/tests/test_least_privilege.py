"""Least privilege on the storage tier: MLflow reaches MinIO with a user of its
own whose policy covers its bucket only, and the root keys never reach the
tracking tier. (A new secret in the inventory rotates the user's key:
test_reconfigure.py.)"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import testinfra.host
from botocore.client import BaseClient
from botocore.exceptions import ClientError
from conftest import Stack, main_pid, s3_client

MCLI = "/usr/local/bin/mcli --config-dir /root/.mcli --json"


@pytest.fixture(scope="module")
def bucket(stack: Stack) -> str:
    return stack.bucket


@pytest.fixture(scope="module")
def mlflow_s3(s3_url: str, hostvars: dict[str, Any]) -> BaseClient:
    return s3_client(
        s3_url, hostvars["vault_minio_mlflow_access_key"], hostvars["vault_minio_mlflow_secret_key"]
    )


@pytest.fixture
def other_bucket(s3: BaseClient) -> Iterator[str]:
    """Another team's bucket, made with the root keys."""
    name = f"other-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    s3.put_object(Bucket=name, Key="theirs.txt", Body=b"not for mlflow")
    yield name
    s3.delete_object(Bucket=name, Key="theirs.txt")
    s3.delete_bucket(Bucket=name)


def denied(call: Callable[..., object], **kwargs: object) -> bool:
    try:
        call(**kwargs)
    except ClientError as err:
        return bool(err.response["Error"]["Code"] == "AccessDenied")
    return False


def mlflow_environment(host: testinfra.host.Host) -> str:
    return str(host.check_output(f"tr '\\0' '\\n' < /proc/{main_pid(host, 'mlflow')}/environ"))


def test_mlflow_uses_its_own_keys(host: testinfra.host.Host, hostvars: dict[str, Any]) -> None:
    for where, text in [
        ("/etc/mlflow/mlflow.env", host.file("/etc/mlflow/mlflow.env").content_string),
        ("the mlflow process", mlflow_environment(host)),
    ]:
        key = re.escape(hostvars["vault_minio_mlflow_access_key"])
        assert re.search(rf'^AWS_ACCESS_KEY_ID="?{key}"?$', text, re.MULTILINE), where
        assert hostvars["vault_minio_root_user"] not in text, where
        assert hostvars["vault_minio_root_password"] not in text, where


def test_mlflow_user_has_exactly_its_bucket_policy(
    host: testinfra.host.Host, hostvars: dict[str, Any], bucket: str
) -> None:
    user = json.loads(
        host.check_output(f"{MCLI} admin user info local {hostvars['vault_minio_mlflow_access_key']}")
    )
    assert user["userStatus"] == "enabled"
    assert user["policyName"] == f"{bucket}-readwrite"
    policy = json.loads(host.check_output(f"{MCLI} admin policy info local {bucket}-readwrite"))
    resources = {r for s in policy["policyInfo"]["Policy"]["Statement"] for r in s["Resource"]}
    assert resources == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}


def test_mlflow_keys_work_in_their_bucket(mlflow_s3: BaseClient, bucket: str) -> None:
    key = f"probes/{uuid.uuid4().hex}.txt"
    mlflow_s3.put_object(Bucket=bucket, Key=key, Body=b"probe")
    assert mlflow_s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"probe"
    assert any(
        o["Key"] == key for o in mlflow_s3.list_objects_v2(Bucket=bucket, Prefix="probes/")["Contents"]
    )
    mlflow_s3.delete_object(Bucket=bucket, Key=key)


def test_mlflow_keys_reach_nothing_else(mlflow_s3: BaseClient, other_bucket: str, bucket: str) -> None:
    assert denied(mlflow_s3.get_object, Bucket=other_bucket, Key="theirs.txt")
    assert denied(mlflow_s3.put_object, Bucket=other_bucket, Key="mine.txt", Body=b"x")
    assert denied(mlflow_s3.list_objects_v2, Bucket=other_bucket)
    assert denied(mlflow_s3.delete_object, Bucket=other_bucket, Key="theirs.txt")
    assert denied(mlflow_s3.create_bucket, Bucket=f"new-{uuid.uuid4().hex[:8]}")
    assert denied(mlflow_s3.delete_bucket, Bucket=bucket)
