"""Faults the platform must survive: services killed with SIGKILL, MLflow
started while its backends are down, the whole host restarted. Nothing is lost
in any of them. (site.yml run again with other settings: test_reconfigure.py.)"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable

import pytest
import testinfra.host
from conftest import (
    PG_UNIT,
    Stack,
    answers,
    assert_seeded,
    main_pid,
    record,
    seed_model,
    units_state,
    wait_for,
)

RECOVERY_SECONDS = 15


def healthy(url: str) -> Callable[[], bool]:
    return lambda: answers(url, timeout=2)


@pytest.fixture(scope="module")
def seeded(mlflow_url: str) -> dict[str, str]:
    """A run and a registered model, made before the faults, checked after each."""
    return seed_model(mlflow_url, f"faults-{int(time.time())}", "before_faults")


@pytest.mark.parametrize(
    ("unit", "health"),
    [(PG_UNIT, None), ("minio", ("s3_port", "/minio/health/live")), ("mlflow", ("tracking_port", "/health"))],
)
def test_sigkill_brings_the_service_back(
    host: testinfra.host.Host, address: str, stack: Stack, unit: str, health: tuple[str, str] | None
) -> None:
    before = main_pid(host, unit)
    host.check_output(f"kill -9 {before}")
    seconds = wait_for(
        lambda: main_pid(host, unit) not in (0, before) and host.service(unit).is_running,
        RECOVERY_SECONDS,
    )
    record(f"{unit}: back after {seconds:.1f} s")
    if health:
        port, path = health
        wait_for(healthy(f"http://{address}:{getattr(stack, port)}{path}"), 120)
    else:
        # Running is not enough: the database answers a real query on MLflow's own tables.
        wait_for(lambda: int(experiments(host, stack)) >= 1, 60)


def experiments(host: testinfra.host.Host, stack: Stack) -> str:
    """The number of MLflow experiments, read by PostgreSQL itself."""
    sql = "SELECT count(*) FROM experiments"
    result = host.run(f"sudo -u postgres psql -tA -d {stack.database} -c {shlex.quote(sql)}")
    assert result.rc == 0, result.stderr
    return str(result.stdout).strip()


def test_mlflow_waits_for_postgresql(
    host: testinfra.host.Host, mlflow_url: str, stack: Stack, seeded: dict[str, str]
) -> None:
    """Started without its database, MLflow fails because of it (its own log says
    why) instead of answering, then comes up once PostgreSQL returns."""
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    host.check_output(f"systemctl stop {PG_UNIT} && systemctl restart mlflow")
    cause = rf"OperationalError.*port {stack.database_port} failed: Connection refused"
    seen = {"answered": False, "journal": ""}

    def answered_or_failed_for_its_database() -> bool:
        # Polled, not slept on: on a loaded host MLflow's imports alone can take
        # longer than any fixed wait. An answer meanwhile ends the wait (and the test).
        seen["answered"] = answers(f"{mlflow_url}/health", timeout=2)
        seen["journal"] = host.check_output(
            f"journalctl -u mlflow --no-pager -o cat --since {shlex.quote(since)}"
        )
        return bool(seen["answered"]) or re.search(cause, str(seen["journal"])) is not None

    try:
        wait_for(answered_or_failed_for_its_database, 120)
        assert not seen["answered"], "mlflow answered without its database"
        assert re.search(cause, str(seen["journal"])), str(seen["journal"])[-3000:]
        # And still no answer after that failure (systemd keeps restarting it).
        assert not answers(f"{mlflow_url}/health", timeout=2), "mlflow answered without its database"
    finally:
        host.check_output(f"systemctl start {PG_UNIT}")
    seconds = wait_for(healthy(f"{mlflow_url}/health"), 120)
    record(f"mlflow healthy {seconds:.1f} s after PostgreSQL came back")
    assert_seeded(mlflow_url, seeded)


def test_mlflow_starts_while_minio_is_down(
    host: testinfra.host.Host, mlflow_url: str, s3_url: str, seeded: dict[str, str]
) -> None:
    host.check_output("systemctl stop minio && systemctl restart mlflow")
    wait_for(healthy(f"{mlflow_url}/health"), 120)
    host.check_output("systemctl start minio")
    wait_for(healthy(f"{s3_url}/minio/health/live"), 60)
    assert_seeded(mlflow_url, seeded)


def test_host_restart_keeps_everything(
    host: testinfra.host.Host, mlflow_url: str, s3_url: str, seeded: dict[str, str]
) -> None:
    docker = shutil.which("docker")
    assert docker, "the docker client is needed to restart the host"
    subprocess.run([docker, "restart", host.backend.host], check=True, capture_output=True, timeout=120)
    units = (PG_UNIT, "minio", "mlflow")
    seconds = wait_for(healthy(f"{mlflow_url}/health"), 180, lambda: units_state(host, *units))
    wait_for(healthy(f"{s3_url}/minio/health/live"), 60, lambda: units_state(host, *units))
    record(f"host restart: mlflow healthy after {seconds:.1f} s")
    for unit in units:
        assert host.service(unit).is_running, unit
    assert_seeded(mlflow_url, seeded)
