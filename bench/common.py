"""What every measurement of the benchmark shares: the repository's paths and
docker, how much work a run does (Settings), the host the servers run in (Host,
found through the local fact the mlflow role publishes: stack_client), waiting
for a server's /health, and the client processes and timed request loops the
loads are made of, with their summary."""

from __future__ import annotations

import dataclasses
import multiprocessing
import pathlib
import queue
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import requests
import stack_client

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCKER = shutil.which("docker") or "/usr/bin/docker"
STOCK_PORT = 5099
STOCK_UNIT = "mlflow-bench-stock"

# What a client process sends back: its latencies (s) and its failed requests.
Outcome = tuple[list[float], int]


@dataclasses.dataclass(frozen=True)
class Settings:
    """How much work each measurement does (--smoke shrinks all of it)."""

    rounds: int
    round_seconds: float
    client_counts: tuple[int, ...]
    read_runs: int
    artifact_sizes_mb: tuple[int, ...]
    max_ops_per_client: int


FULL = Settings(3, 20.0, (1, 8, 32), 10_000, (1, 256), 20_000)
SMOKE = Settings(1, 3.0, (8,), 50, (1,), 2_000)
# For comparing one setting against another: 8 clients, reads, 256 MB.
QUICK = Settings(3, 10.0, (8,), 2_000, (256,), 20_000)


@dataclasses.dataclass(frozen=True)
class Host:
    """The container both servers run in, and how to reach them."""

    container: str
    address: str
    deployed_port: int
    venv: str
    database: str
    workers: int
    # The deployed server's s3://bucket[/prefix], and MinIO's port.
    artifacts_destination: str
    s3_port: int

    def run(self, *command: str, user: str = "root", check: bool = True) -> str:
        result = subprocess.run(
            [DOCKER, "exec", "-u", user, self.container, *command],
            capture_output=True,
            text=True,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
        return result.stdout.strip()

    def url(self, target: str) -> str:
        port = self.deployed_port if target == "deployed" else STOCK_PORT
        return f"http://{self.address}:{port}"

    def sessions_opened(self) -> int:
        """Connections PostgreSQL has opened to the database so far."""
        query = "SELECT datname, sessions FROM pg_stat_database"
        rows = self.run("psql", "-AtF", " ", "-c", query, user="postgres").splitlines()
        counts = dict(row.split() for row in rows if " " in row)
        return int(counts[self.database])


def container_address(container: str) -> str:
    inspect = [
        DOCKER,
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        container,
    ]
    return subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.split()[0]


def find_host(container: str) -> Host:
    """A container that runs the deployed tracking server, as its local fact
    (ansible_local.mlflow) records it."""
    address = container_address(container)
    probe = Host(container, address, 0, "", "", 0, "", 0)
    info = stack_client.tracking(lambda argv: probe.run(*argv))
    return Host(
        container=container,
        address=address,
        deployed_port=info.port,
        venv=info.venv,
        database=info.database,
        workers=info.workers,
        artifacts_destination=info.artifacts_destination,
        s3_port=urllib.parse.urlsplit(info.s3_endpoint).port or 9000,
    )


def find_host_plain(container: str) -> Host:
    """A container that runs no tracking server (the load balancer)."""
    return Host(container, container_address(container), 0, "", "", 0, "", 0)


def wait_healthy(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} did not answer /health within {timeout} s")


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(latencies: list[float], errors: int, elapsed: float) -> dict[str, float]:
    return {
        "ops_per_s": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": float(errors),
    }


def run_clients(
    count: int, client: Callable[..., None], args: tuple[Any, ...], seconds: float
) -> tuple[list[float], int, float]:
    """`count` client processes, each bounded by `seconds` and its own op count;
    their latencies, failures and the wall time they took together. `client`
    must be a module's top-level function: a spawned process imports it."""
    results: multiprocessing.Queue[Outcome] = multiprocessing.Queue()
    workers = [multiprocessing.Process(target=client, args=(*args, results)) for _ in range(count)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    latencies: list[float] = []
    errors = 0
    for _ in workers:
        try:
            batch, failed = results.get(timeout=seconds + 120)
        except queue.Empty:
            errors += 1
            continue
        latencies.extend(batch)
        errors += failed
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join(timeout=30)
        if worker.is_alive():
            worker.kill()
    return latencies, errors, elapsed


def timed_requests(request: Callable[[int], requests.Response], seconds: float, max_ops: int) -> Outcome:
    """Calls request(step) until `seconds` have passed or `max_ops` calls were
    made: each call's latency, and how many failed."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    for step in range(max_ops):
        if time.monotonic() >= deadline:
            break
        start = time.perf_counter()
        try:
            ok = request(step).status_code == 200
        except requests.RequestException:
            ok = False
        latencies.append(time.perf_counter() - start)
        errors += 0 if ok else 1
    return latencies, errors
