"""The bearer token MinIO asks of a Prometheus scraping its metrics.

MinIO (MINIO_PROMETHEUS_AUTH_TYPE=jwt, its default) accepts a JWT signed with
HS512 by the secret key of a user whose policy allows admin:Prometheus, naming
that user in `sub`: what `mc admin prometheus generate` prints. Built here on
the controller, with a fixed expiry, so that the same user and key always give
the same token and a second run changes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

DOCUMENTATION = r"""
name: minio_metrics_token
short_description: Bearer token for MinIO's Prometheus metrics
description:
  - HS512 JWT with sub=access key, iss=prometheus and a fixed expiry (2100-01-01).
positional: secret_key
options:
  _input:
    description: Access key of a MinIO user allowed admin:Prometheus.
    type: str
    required: true
  secret_key:
    description: Secret key of that user.
    type: str
    required: true
"""

# 2100-01-01T00:00:00Z: fixed, so the token is the same on every run.
EXPIRY = 4102444800


def _segment(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def minio_metrics_token(access_key: str, secret_key: str) -> str:
    header = _segment(json.dumps({"alg": "HS512", "typ": "JWT"}, separators=(",", ":")).encode())
    claims = {"exp": EXPIRY, "iss": "prometheus", "sub": access_key}
    payload = _segment(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{header}.{payload}".encode("ascii")
    signature = hmac.new(secret_key.encode(), signing_input, hashlib.sha512).digest()
    return f"{header}.{payload}.{_segment(signature)}"


class FilterModule:
    def filters(self) -> dict[str, object]:
        return {"minio_metrics_token": minio_metrics_token}
