"""The stock server the deployed one is measured against: `mlflow server` with
MLflow's defaults, run beside the deployed server as a transient systemd unit
for the length of a run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from common import STOCK_PORT, STOCK_UNIT, Host, wait_healthy


@contextmanager
def stock_server(host: Host) -> Iterator[None]:
    """`mlflow server` with MLflow's defaults but for where its stores are (the
    deployed server's database and bucket, under bench-stock/, environment file
    and user) and its worker count, which is the deployed server's: the
    comparison is per worker. A transient unit, stopped at the end."""
    # Where the deployed unit runs, as systemd has it (not its unit file's text).
    shown = host.run("systemctl", "show", "-p", "User,WorkingDirectory,EnvironmentFiles", "mlflow")
    unit = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
    user, directory = unit["User"], unit["WorkingDirectory"]
    environment_file = unit["EnvironmentFiles"].split()[0]
    host.run("systemctl", "stop", STOCK_UNIT, check=False)
    host.run("systemctl", "reset-failed", STOCK_UNIT, check=False)
    host.run(
        "systemd-run", f"--unit={STOCK_UNIT}",
        "-p", f"User={user}",
        "-p", f"EnvironmentFile={environment_file}",
        "-p", f"WorkingDirectory={directory}",
        "-p", f"Environment=HOME={directory}",
        f"{host.venv}/bin/mlflow", "server",
        # Reachable from the benchmark's own host, as the deployed server is.
        "--host", "0.0.0.0",  # noqa: S104
        "--port", str(STOCK_PORT),
        "--workers", str(host.workers),
        "--artifacts-destination", f"{host.artifacts_destination}/bench-stock",
    )  # fmt: skip
    try:
        wait_healthy(host.url("stock"), timeout=180)
        yield
    finally:
        host.run("systemctl", "stop", STOCK_UNIT, check=False)
