"""Unit tests of the minio_metrics_token filter: a JWT that MinIO's parser
accepts (HS512 over header.payload with the user's secret, sub and a future
exp), and the same token for the same user on every run."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

from ansible_collections.mlflow_stack.platform.plugins.filter.minio_metrics import (
    FilterModule,
    minio_metrics_token,
)


def _decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def test_the_token_is_signed_with_the_users_secret_and_names_the_user() -> None:
    token = minio_metrics_token("metrics", "s3cr3t-key-of-the-user")
    header, payload, signature = token.split(".")
    assert json.loads(_decode(header)) == {"alg": "HS512", "typ": "JWT"}
    claims = json.loads(_decode(payload))
    assert claims["sub"] == "metrics"
    assert claims["iss"] == "prometheus"
    assert claims["exp"] > time.time() + 50 * 365 * 86400
    expected = hmac.new(b"s3cr3t-key-of-the-user", f"{header}.{payload}".encode(), hashlib.sha512).digest()
    assert _decode(signature) == expected
    assert "=" not in token


def test_the_same_user_gets_the_same_token_and_another_key_another() -> None:
    assert minio_metrics_token("metrics", "key-one-123") == minio_metrics_token("metrics", "key-one-123")
    assert minio_metrics_token("metrics", "key-one-123") != minio_metrics_token("metrics", "key-two-123")


def test_the_filter_is_registered_under_its_name() -> None:
    assert FilterModule().filters()["minio_metrics_token"] is minio_metrics_token
