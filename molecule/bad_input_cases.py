"""The bad inputs of the default scenario's test_bad_input.py, in a module of their
own: the unit phase checks how many there are before any host exists."""

from __future__ import annotations

from typing import Any

# (variable the error must name, what it must say is wrong, extra vars)
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("mlflow_port", "1-65535", {"mlflow_port": 70000}),
    ("mlflow_port", "unable to convert to int", {"mlflow_port": "abc"}),
    ("mlflow_port", "share a port", {"mlflow_port": 9000}),  # taken by MinIO on the same host
    ("mlflow_workers", r"0 \(one per vCPU\) or more", {"mlflow_workers": -1}),
    ("mlflow_db_concurrency", "exceeds mlflow_backend_max_connections", {"mlflow_db_concurrency": 4000}),
    ("postgresql_settings", "may not set", {"postgresql_settings": {"fsync": "off"}}),
    ("mlflow_artifacts_mode", "must be one of", {"mlflow_artifacts_mode": "ftp"}),
    ("mlflow_version", "exact version", {"mlflow_version": "latest"}),
    # The stack's one pin: the tracking role refuses it first, naming it.
    ("mlflow_stack_mlflow_version", "exact version", {"mlflow_stack_mlflow_version": "latest"}),
    ("mlflow_s3_bucket", "not a valid S3 bucket name", {"mlflow_s3_bucket": "Bad_Bucket"}),
    ("mlflow_s3_endpoint_url", r"http\(s\) URL", {"mlflow_s3_endpoint_url": "minio:9000"}),
    ("mlflow_backend_host", "must be set", {"mlflow_backend_host": ""}),
    ("mlflow_backend_password", "must be set", {"mlflow_backend_password": ""}),
    ("mlflow_pip_ca_bundle", "not a file on the controller", {"mlflow_pip_ca_bundle": "/nonexistent/ca.pem"}),
    ("mlflow_health_timeout", "unable to convert to int", {"mlflow_health_timeout": "soon"}),
    ("minio_root_password", r"12\+ characters", {"minio_root_password": "short"}),
    ("minio_root_user", r"3\+ characters", {"minio_root_user": "ab"}),
    ("minio_api_port", "distinct ports", {"minio_api_port": 9001}),
    ("minio_console_port", "1-65535", {"minio_console_port": 0}),
    ("minio_binary_source", "must be one of", {"minio_binary_source": "ftp"}),
    (
        "minio_binary_sha256",
        "64-hex",
        {"minio_binary_source": "url", "minio_binary_url": "http://example.invalid/minio"},
    ),
    ("minio_release", "must look like RELEASE", {"minio_release": "latest"}),
    ("minio_source_commit", "12 lower-case hex digits", {"minio_source_commit": "xyz"}),
    ("minio_buckets", "not a valid S3 bucket name", {"minio_buckets": ["Bad..Name"]}),
    ("minio_data_dirs", "absolute paths", {"minio_data_dirs": ["relative/path"]}),
    ("minio_mc_release", "must look like RELEASE", {"minio_mc_release": "latest"}),
    (
        "minio_mc_binary_url",
        "needs",
        {
            "minio_binary_source": "url",
            "minio_binary_url": "http://example.invalid/minio",
            "minio_binary_sha256": "0" * 64,
        },
    ),
    (
        "minio_policies",
        "non-empty Statement",
        {"minio_policies": [{"name": "no-statement", "document": {"Version": "2012-10-17"}}]},
    ),
    ("minio_users", "3-20 letters", {"minio_users": [{"access_key": "ab", "secret_key": "long-enough-1"}]}),
    ("minio_users", "8-40 characters", {"minio_users": [{"access_key": "app-user", "secret_key": "short"}]}),
    (
        "minio_users",
        "policies among",
        {"minio_users": [{"access_key": "app-user", "secret_key": "long-enough-1", "policies": ["nope"]}]},
    ),
    (
        "minio_tls_private_key",
        "given together",
        {"minio_tls_certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n"},
    ),
    ("mlflow_s3_ca_certificate", "PEM certificates", {"mlflow_s3_ca_certificate": "not a certificate"}),
    (
        "mlflow_auth_admin_password",
        r"12\+ characters",
        {
            "mlflow_stack_auth": True,
            "vault_mlflow_admin_password": "short",
            "vault_mlflow_flask_secret_key": "k" * 40,
        },
    ),
    ("vault_mlflow_kek_passphrase", r"32\+ characters", {"vault_mlflow_kek_passphrase": "too short"}),
    ("mlflow_gateway_kek_passphrase", "must be set", {"vault_mlflow_kek_passphrase": ""}),
    ("mlflow_jobs_periodic_host", "host of the mlflow_tracking group", {"mlflow_jobs_periodic_host": "db1"}),
    ("mlflow_cors_allowed_origins", "(no path)", {"mlflow_cors_allowed_origins": ["https://nb.example/lab"]}),
    (
        "mlflow_cors_allowed_origins",
        r"not '\*' with basic auth",
        {
            "mlflow_stack_auth": True,
            "vault_mlflow_admin_password": "a" * 16,
            "vault_mlflow_flask_secret_key": "k" * 40,
            "mlflow_cors_allowed_origins": ["*"],
        },
    ),
    ("mlflow_x_frame_options", "must be one of", {"mlflow_x_frame_options": "ALLOWALL"}),
    (
        "mlflow_workspaces_enabled",
        "3.10.0 or later",
        {"mlflow_workspaces_enabled": True, "mlflow_version": "3.9.0"},
    ),
    (
        "mlflow_stack_metrics_clients",
        "addresses or CIDRs",
        {"mlflow_stack_metrics": True, "mlflow_stack_metrics_clients": ["prometheus.example"]},
    ),
    (
        "vault_minio_metrics_secret_key",
        "8-40 characters",
        {
            "mlflow_stack_metrics": True,
            "mlflow_stack_metrics_clients": ["10.0.0.5"],
            "vault_minio_metrics_secret_key": "",
        },
    ),
    ("mlflow_auth_default_permission", "must be one of", {"mlflow_auth_default_permission": "ALL"}),
    ("postgresql_mlflow_auth_database", "distinct", {"postgresql_mlflow_auth_database": "mlflow"}),
    ("postgresql_mlflow_password", "12 characters or more", {"postgresql_mlflow_password": "short"}),
    ("postgresql_port", "1-65535", {"postgresql_port": 0}),
    ("postgresql_hba_clients", "not an IP address or CIDR", {"postgresql_hba_clients": ["not-an-ip"]}),
    ("postgresql_mlflow_user", "must not be postgres", {"postgresql_mlflow_user": "postgres"}),
    ("postgresql_version", "13 or newer", {"postgresql_version": "9"}),
    (
        "mlflow_backup_target_bucket",
        "other than the artifact bucket",
        {
            "mlflow_backup_target_bucket": "{{ mlflow_stack_bucket }}",
            "mlflow_backup_target_endpoint_url": "{{ mlflow_s3_endpoint_url }}",
            "mlflow_backup_target_access_key": "backup-user",
            "mlflow_backup_target_secret_key": "backup-secret-key",
        },
    ),
    # The wiring's own values are checked before the roles they feed.
    ("mlflow_stack_s3_port", "1-65535", {"mlflow_stack_s3_port": 70000}),
    ("mlflow_stack_database", "SQL identifier", {"mlflow_stack_database": "Bad-Name"}),
    ("mlflow_stack_bucket", "not a valid S3 bucket name", {"mlflow_stack_bucket": "x"}),
]
