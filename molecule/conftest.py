"""Fixtures shared by the verify tests: the converged host, its address, its
secrets from the Molecule inventory, and the pins from the role defaults."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

import boto3
import pytest
import testinfra.host
import yaml
from botocore.client import BaseClient

ROOT = pathlib.Path(__file__).resolve().parents[3]
MEASUREMENTS = ROOT / ".cache" / "verify-measurements.txt"


def pytest_sessionstart() -> None:
    MEASUREMENTS.parent.mkdir(exist_ok=True)
    MEASUREMENTS.write_text("")


def record(line: str) -> None:
    """Keep a measured number for the report scripts/test prints at the end."""
    with MEASUREMENTS.open("a") as report:
        report.write(line + "\n")


def role_defaults(role: str) -> dict[str, Any]:
    """The defaults/main.yml of a role: the single place its pins live."""
    text = (ROOT / "roles" / role / "defaults" / "main.yml").read_text()
    data: dict[str, Any] = yaml.safe_load(text)
    return data


@pytest.fixture(scope="module")
def hostvars(host: testinfra.host.Host) -> dict[str, Any]:
    variables: dict[str, Any] = host.ansible.get_variables()
    return variables


@pytest.fixture(scope="module")
def address(host: testinfra.host.Host) -> str:
    """The host's own IPv4 address, as the other tiers and clients reach it."""
    fields = str(host.check_output("ip -4 -o route get 1.1.1.1")).split()
    return fields[fields.index("src") + 1]


@pytest.fixture(scope="module")
def mlflow_url(address: str) -> str:
    return f"http://{address}:{role_defaults('mlflow')['mlflow_port']}"


@pytest.fixture(scope="module")
def s3_url(address: str) -> str:
    return f"http://{address}:{role_defaults('minio')['minio_api_port']}"


@pytest.fixture(scope="module")
def s3(s3_url: str, hostvars: dict[str, Any]) -> BaseClient:
    """An S3 client on the MinIO API, to look into the artifact bucket."""
    return boto3.client(
        "s3",
        endpoint_url=s3_url,
        aws_access_key_id=hostvars["vault_minio_root_user"],
        aws_secret_access_key=hostvars["vault_minio_root_password"],
        region_name="us-east-1",
    )


def run_site(extra_vars: dict[str, Any] | None = None, *args: str) -> subprocess.CompletedProcess[str]:
    """Run site.yml against the scenario's inventory, as a user would."""
    command = [
        str(pathlib.Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        os.environ["MOLECULE_INVENTORY_FILE"],
        str(ROOT / "site.yml"),
        *args,
    ]
    if extra_vars:
        command += ["-e", json.dumps(extra_vars)]
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=dict(os.environ, ANSIBLE_ROLES_PATH=str(ROOT / "roles"), ANSIBLE_NOCOLOR="1"),
        timeout=900,
        check=False,
    )
