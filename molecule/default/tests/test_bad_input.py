"""Bad input fails before anything changes: for each case site.yml must fail,
its message must name the variable, and the host must be left as it was
(same files, same service processes)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import testinfra.host
from conftest import run_site

# (variable named in the error, extra vars)
CASES: list[tuple[str, dict[str, Any]]] = [
    ("mlflow_port", {"mlflow_port": 70000}),
    ("mlflow_port", {"mlflow_port": "abc"}),
    ("mlflow_port", {"mlflow_port": 9000}),  # taken by MinIO on the same host
    ("mlflow_workers", {"mlflow_workers": 0}),
    ("mlflow_artifacts_mode", {"mlflow_artifacts_mode": "ftp"}),
    ("mlflow_version", {"mlflow_version": "latest"}),
    ("mlflow_s3_bucket", {"mlflow_s3_bucket": "Bad_Bucket"}),
    ("mlflow_s3_endpoint_url", {"mlflow_s3_endpoint_url": "minio:9000"}),
    ("mlflow_backend_host", {"mlflow_backend_host": ""}),
    ("mlflow_backend_password", {"mlflow_backend_password": ""}),
    ("mlflow_pip_ca_bundle", {"mlflow_pip_ca_bundle": "/nonexistent/ca.pem"}),
    ("mlflow_health_timeout", {"mlflow_health_timeout": "soon"}),
    ("minio_root_password", {"minio_root_password": "short"}),
    ("minio_root_user", {"minio_root_user": "ab"}),
    ("minio_api_port", {"minio_api_port": 9001}),
    ("minio_console_port", {"minio_console_port": 0}),
    ("minio_binary_source", {"minio_binary_source": "ftp"}),
    (
        "minio_binary_sha256",
        {"minio_binary_source": "url", "minio_binary_url": "http://example.invalid/minio"},
    ),
    ("minio_release", {"minio_release": "latest"}),
    ("minio_source_commit", {"minio_source_commit": "xyz"}),
    ("minio_buckets", {"minio_buckets": ["Bad..Name"]}),
    ("minio_data_dirs", {"minio_data_dirs": ["relative/path"]}),
    ("minio_mc_release", {"minio_mc_release": "latest"}),
    (
        "minio_mc_binary_url",
        {
            "minio_binary_source": "url",
            "minio_binary_url": "http://example.invalid/minio",
            "minio_binary_sha256": "0" * 64,
        },
    ),
    ("minio_policies", {"minio_policies": [{"name": "no-statement", "document": {"Version": "2012-10-17"}}]}),
    ("minio_users", {"minio_users": [{"access_key": "ab", "secret_key": "long-enough-1"}]}),
    ("minio_users", {"minio_users": [{"access_key": "app-user", "secret_key": "short"}]}),
    (
        "minio_users",
        {"minio_users": [{"access_key": "app-user", "secret_key": "long-enough-1", "policies": ["nope"]}]},
    ),
    ("minio_tls_private_key", {"minio_tls_certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n"}),
    ("mlflow_s3_ca_certificate", {"mlflow_s3_ca_certificate": "not a certificate"}),
    (
        "mlflow_auth_admin_password",
        {
            "mlflow_stack_auth": True,
            "vault_mlflow_admin_password": "short",
            "vault_mlflow_flask_secret_key": "k" * 40,
        },
    ),
    ("mlflow_auth_default_permission", {"mlflow_auth_default_permission": "ALL"}),
    ("postgresql_mlflow_auth_database", {"postgresql_mlflow_auth_database": "mlflow"}),
    ("postgresql_mlflow_password", {"postgresql_mlflow_password": "short"}),
    ("postgresql_port", {"postgresql_port": 0}),
    ("postgresql_hba_clients", {"postgresql_hba_clients": ["not-an-ip"]}),
    ("postgresql_mlflow_user", {"postgresql_mlflow_user": "postgres"}),
    ("postgresql_version", {"postgresql_version": "9"}),
]

FINGERPRINT = (
    "sha256sum /etc/mlflow/* /etc/default/minio /etc/systemd/system/mlflow.service "
    "/etc/systemd/system/minio.service /usr/local/bin/minio /usr/local/bin/mcli /root/.mcli/config.json "
    "/etc/postgresql/*/main/*.conf "
    "/etc/postgresql/*/main/conf.d/*; "
    "systemctl show -p MainPID --value postgresql@15-main minio mlflow; "
    "ls /opt/mlflow/venv/lib/python3*/site-packages | sha256sum"
)


@pytest.fixture(scope="module")
def baseline(host: testinfra.host.Host) -> str:
    return str(host.check_output(FINGERPRINT))


def test_at_least_twenty_distinct_cases() -> None:
    assert len({json.dumps(v, sort_keys=True) for _, v in CASES}) >= 20


@pytest.mark.parametrize(("variable", "extra_vars"), CASES, ids=[json.dumps(c[1]) for c in CASES])
def test_bad_input_fails_early_and_names_the_variable(
    host: testinfra.host.Host, baseline: str, variable: str, extra_vars: dict[str, Any]
) -> None:
    result = run_site(extra_vars)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    assert variable in output, output[-2000:]
    assert "changed=0" in output, output[-2000:]
    assert host.check_output(FINGERPRINT) == baseline
