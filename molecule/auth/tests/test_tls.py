"""MinIO over TLS with a certificate from variables, signed by the lab CA:
MinIO serves only HTTPS, its client on the host and MLflow trust the CA, and a
client that trusts it runs the whole MLflow flow and reads the bucket. (On the
auth scenario's host: the MLflow client logs in as the admin.)"""

from __future__ import annotations

import json
import ssl

import pytest
import requests
import testinfra.host
from botocore.client import BaseClient
from conftest import Stack, check_client_flow, s3_client


def test_api_and_console_serve_https_trusted_by_the_lab_ca(
    address: str, stack: Stack, lab_ca: str | None
) -> None:
    assert lab_ca
    for port, path in ((stack.s3_port, "/minio/health/live"), (stack.console_port, "/")):
        assert requests.get(f"https://{address}:{port}{path}", verify=lab_ca, timeout=10).status_code == 200


def test_served_certificate_is_the_one_from_the_variables(
    host: testinfra.host.Host, address: str, stack: Stack
) -> None:
    served = ssl.get_server_certificate((address, stack.s3_port))
    installed = host.file("/etc/minio/certs/public.crt").content_string
    assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(installed)
    assert host.file("/etc/minio/certs/private.key").mode == 0o640


def test_a_client_without_the_ca_refuses_the_connection(
    monkeypatch: pytest.MonkeyPatch, address: str, stack: Stack
) -> None:
    # requests' own CA bundle, not the lab CA conftest makes every test trust.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://{address}:{stack.s3_port}/minio/health/live", timeout=10)


@pytest.mark.parametrize(("port", "path"), [("s3_port", "/minio/health/live"), ("console_port", "/")])
def test_plain_http_is_refused_on_the_api_and_the_console(
    address: str, stack: Stack, port: str, path: str
) -> None:
    response = requests.get(f"http://{address}:{getattr(stack, port)}{path}", timeout=10)
    assert response.status_code == 400
    assert "HTTPS" in response.text


def test_mlflow_trusts_the_ca(host: testinfra.host.Host, address: str, stack: Stack) -> None:
    env = host.file("/etc/mlflow/mlflow.env").content_string
    assert f'MLFLOW_S3_ENDPOINT_URL="https://{address}:{stack.s3_port}"' in env
    assert 'AWS_CA_BUNDLE="/etc/mlflow/s3-ca.pem"' in env
    assert "BEGIN CERTIFICATE" in host.file("/etc/mlflow/s3-ca.pem").content_string


def test_the_minio_client_on_the_host_speaks_https(host: testinfra.host.Host) -> None:
    info = json.loads(
        host.check_output("/usr/local/bin/mcli --config-dir /root/.mcli --json admin info local")
    )
    assert info["status"] == "success"
    alias = json.loads(host.check_output("cat /root/.mcli/config.json"))["aliases"]["local"]
    assert alias["url"].startswith("https://localhost:")


def test_mlflow_client_flow_over_tls(
    monkeypatch: pytest.MonkeyPatch,
    mlflow_url: str,
    s3: BaseClient,
    stack: Stack,
    lab_ca: str | None,
    hostvars: dict[str, str],
) -> None:
    """Proxied artifacts: MLflow writes to MinIO over HTTPS, verifying the CA. The
    client downloads through presigned MinIO URLs, so it trusts the CA too."""
    assert lab_ca
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", lab_ca)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", hostvars["vault_mlflow_admin_password"])
    check_client_flow(mlflow_url, s3, stack.bucket)


def test_direct_client_with_mlflow_keys_trusts_the_ca(
    s3_url: str, lab_ca: str | None, stack: Stack, hostvars: dict[str, str]
) -> None:
    assert lab_ca
    client = s3_client(
        s3_url, hostvars["vault_minio_mlflow_access_key"], hostvars["vault_minio_mlflow_secret_key"], lab_ca
    )
    client.put_object(Bucket=stack.bucket, Key="tls-probe.txt", Body=b"over tls")
    assert client.get_object(Bucket=stack.bucket, Key="tls-probe.txt")["Body"].read() == b"over tls"
    client.delete_object(Bucket=stack.bucket, Key="tls-probe.txt")
