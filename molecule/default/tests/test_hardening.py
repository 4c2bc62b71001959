"""The minio and mlflow units run sandboxed: systemd-analyze security must
score each at 2.5 or lower."""

from __future__ import annotations

import re

import pytest
import testinfra.host
from conftest import main_pid, record

MAX_EXPOSURE = 2.5


@pytest.mark.parametrize("unit", ["minio.service", "mlflow.service"])
def test_exposure_is_low(host: testinfra.host.Host, unit: str) -> None:
    out = host.check_output(f"systemd-analyze security --no-pager {unit}")
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", out)
    assert match, out[-500:]
    exposure = float(match.group(1))
    record(f"{unit}: exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, f"{unit} exposure {exposure} > {MAX_EXPOSURE}"


@pytest.mark.parametrize(("unit", "user"), [("minio", "minio"), ("mlflow", "mlflow")])
def test_runs_as_its_own_user_without_capabilities(host: testinfra.host.Host, unit: str, user: str) -> None:
    pid = main_pid(host, unit)
    status = host.check_output(f"cat /proc/{pid}/status")
    assert re.search(r"^CapEff:\s+0+$", status, re.MULTILINE), status
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.MULTILINE), status
    assert host.check_output(f"ps -o user= -p {pid}") == user
