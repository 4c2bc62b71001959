"""The minio and mlflow units run sandboxed: systemd-analyze security must
score each at 2.5 or lower."""

from __future__ import annotations

import re

import pytest
import testinfra.host
from conftest import MAX_EXPOSURE, check_exposure, main_pid


@pytest.mark.parametrize("unit", ["minio.service", "mlflow.service"])
def test_exposure_is_low(host: testinfra.host.Host, unit: str) -> None:
    assert check_exposure(host, unit) <= MAX_EXPOSURE


@pytest.mark.parametrize(("unit", "user"), [("minio", "minio"), ("mlflow", "mlflow")])
def test_runs_as_its_own_user_without_capabilities(host: testinfra.host.Host, unit: str, user: str) -> None:
    pid = main_pid(host, unit)
    status = host.check_output(f"cat /proc/{pid}/status")
    assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE), status
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE), status
    assert host.check_output(f"ps -o user= -p {pid}") == user
