"""Fixtures shared by the verify tests: the converged host, its address, its
secrets from the Molecule inventory, and the pins from the role defaults."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import testinfra.host
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[3]


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
