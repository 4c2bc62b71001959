"""Benchmark of the deployed tracking tier against a stock `mlflow server`.

Both run on the same host (the lab's container, or a Molecule scenario's),
against the same PostgreSQL database and MinIO bucket: the stock server is
MLflow's own command with its default flags, started beside the deployed one as
a transient systemd unit with the deployed server's environment file and user.
Rounds alternate between the two, so that noise hits both alike. Every request
loop is bounded in count and in time, and goes only to the container named.

    bench/bench.py --container mlflow-lab            # the full run
    bench/bench.py --container mlflow-lab --smoke    # a short check that it works

Prints a Markdown table (deployed, stock, ratio) and writes the numbers as JSON
into .cache/bench/. Exits 1 when a request failed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import pathlib
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import requests
import yaml
from botocore.client import BaseClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCKER = shutil.which("docker") or "/usr/bin/docker"
STOCK_PORT = 5099
STOCK_UNIT = "mlflow-bench-stock"
API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
# Load data, not secrets: the standard generator is what is wanted.
RNG = random.Random(20261130)  # noqa: S311

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


def unit_setting(unit: str, prefix: str) -> str:
    """The first word after `prefix` in a systemd unit's text."""
    for line in unit.splitlines():
        stripped = line.strip()
        if stripped.startswith(prefix):
            return stripped[len(prefix) :].split()[0].rstrip("\\")
    raise RuntimeError(f"no {prefix!r} in the unit")


def find_host(container: str) -> Host:
    address = container_address(container)
    probe = Host(container, address, 0, "", "", 0)
    unit = probe.run("systemctl", "cat", "mlflow")
    environment = probe.run("cat", "/etc/mlflow/mlflow.env")
    uri = unit_setting(environment.replace("=", " ", 1), "MLFLOW_BACKEND_STORE_URI").strip('"')
    return Host(
        container=container,
        address=address,
        deployed_port=int(unit_setting(unit, "--port")),
        venv=unit_setting(unit, "ExecStart=").rsplit("/bin/", 1)[0],
        database=uri.rsplit("/", 1)[1],
        workers=int(unit_setting(unit, "--workers")),
    )


def artifact_destination(host: Host) -> str:
    """The deployed server's s3://bucket[/prefix]."""
    unit = host.run("systemctl", "cat", "mlflow")
    return next(word for word in unit.split() if word.startswith("s3://"))


@contextmanager
def stock_server(host: Host) -> Iterator[None]:
    """`mlflow server` with MLflow's defaults but for where its stores are (the
    deployed server's database and bucket, under bench-stock/, environment file
    and user) and its worker count, which is the deployed server's: the
    comparison is per worker. A transient unit, stopped at the end."""
    host.run("systemctl", "stop", STOCK_UNIT, check=False)
    host.run("systemctl", "reset-failed", STOCK_UNIT, check=False)
    host.run(
        "systemd-run", f"--unit={STOCK_UNIT}",
        "-p", "User=mlflow",
        "-p", "EnvironmentFile=/etc/mlflow/mlflow.env",
        "-p", "WorkingDirectory=/var/lib/mlflow",
        "-p", "Environment=HOME=/var/lib/mlflow",
        f"{host.venv}/bin/mlflow", "server",
        # Reachable from the benchmark's own host, as the deployed server is.
        "--host", "0.0.0.0",  # noqa: S104
        "--port", str(STOCK_PORT),
        "--workers", str(host.workers),
        "--artifacts-destination", f"{artifact_destination(host)}/bench-stock",
    )  # fmt: skip
    try:
        wait_healthy(host.url("stock"), timeout=180)
        yield
    finally:
        host.run("systemctl", "stop", STOCK_UNIT, check=False)


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
    their latencies, failures and the wall time they took together."""
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


# --- tracking load -------------------------------------------------------------


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


def tracking_client(
    url: str, experiment_id: str, seconds: float, max_ops: int, results: multiprocessing.Queue[Outcome]
) -> None:
    """One client: log_batch of 10 metrics, and search_runs every 20th call."""
    session = requests.Session()
    created = session.post(f"{url}{API}/runs/create", json={"experiment_id": experiment_id}, timeout=30)
    run_id = created.json()["run"]["info"]["run_id"]
    search: dict[str, Any] = {"experiment_ids": [experiment_id], "max_results": 50}

    def request(step: int) -> requests.Response:
        if step % 20 == 19:
            return session.post(f"{url}{API}/runs/search", json=search, timeout=30)
        now = int(time.time() * 1000)
        metrics: list[dict[str, Any]] = [
            {"key": f"m{k}", "value": RNG.random(), "timestamp": now, "step": step} for k in range(10)
        ]
        return session.post(
            f"{url}{API}/runs/log-batch", json={"run_id": run_id, "metrics": metrics}, timeout=30
        )

    results.put(timed_requests(request, seconds, max_ops))


def tracking_load(url: str, clients: int, settings: Settings) -> tuple[dict[str, float], float]:
    """`clients` tracking clients on a fresh experiment: their summary, and
    the wall time they took."""
    name = f"bench-{uuid.uuid4().hex[:8]}"
    experiment = requests.post(f"{url}{API}/experiments/create", json={"name": name}, timeout=30).json()
    args = (url, experiment["experiment_id"], settings.round_seconds, settings.max_ops_per_client)
    latencies, errors, elapsed = run_clients(clients, tracking_client, args, settings.round_seconds)
    return summary(latencies, errors, elapsed), elapsed


def tracking_round(host: Host, target: str, clients: int, settings: Settings) -> dict[str, float]:
    sessions = host.sessions_opened()
    result, elapsed = tracking_load(host.url(target), clients, settings)
    result["pg_connections_per_s"] = (host.sessions_opened() - sessions) / elapsed
    return result


# --- read-heavy load -----------------------------------------------------------


def populate_client(
    url: str, experiment: str, indexes: range, results: multiprocessing.Queue[list[str]]
) -> None:
    session = requests.Session()
    run_ids = []
    for index in indexes:
        created = session.post(f"{url}{API}/runs/create", json={"experiment_id": experiment}, timeout=30)
        run_id: str = created.json()["run"]["info"]["run_id"]
        batch: dict[str, Any] = {
            "run_id": run_id,
            "params": [{"key": "lr", "value": str(index % 7)}],
            "metrics": [{"key": "loss", "value": 1.0 / (index + 1), "timestamp": 0, "step": 0}],
            "tags": [{"key": "team", "value": f"t{index % 5}"}],
        }
        session.post(f"{url}{API}/runs/log-batch", json=batch, timeout=30).raise_for_status()
        run_ids.append(run_id)
    results.put(run_ids)


def populate(host: Host, runs: int, clients: int = 8) -> tuple[str, list[str]]:
    """An experiment with `runs` runs (a param, a metric, a tag each), written
    through the deployed server by `clients` processes; both servers read it
    from the same database."""
    url = host.url("deployed")
    name = f"bench-read-{uuid.uuid4().hex[:8]}"
    created = requests.post(f"{url}{API}/experiments/create", json={"name": name}, timeout=30)
    experiment: str = created.json()["experiment_id"]
    results: multiprocessing.Queue[list[str]] = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(
            target=populate_client, args=(url, experiment, range(k, runs, clients), results)
        )
        for k in range(clients)
    ]
    for worker in workers:
        worker.start()
    run_ids = [run_id for _ in workers for run_id in results.get(timeout=1800)]
    for worker in workers:
        worker.join(timeout=30)
    if len(run_ids) != runs:
        raise RuntimeError(f"populated {len(run_ids)} runs of {runs}")
    return experiment, run_ids


def read_client(
    url: str,
    experiment_id: str,
    run_ids: list[str],
    seconds: float,
    max_ops: int,
    results: multiprocessing.Queue[Outcome],
) -> None:
    """One reader: a filtered search_runs, then a get_run, in turn."""
    session = requests.Session()
    search: dict[str, Any] = {
        "experiment_ids": [experiment_id],
        "filter": "params.lr = '3'",
        "max_results": 100,
    }

    def request(step: int) -> requests.Response:
        if step % 2 == 0:
            return session.post(f"{url}{API}/runs/search", json=search, timeout=30)
        return session.get(f"{url}{API}/runs/get", params={"run_id": RNG.choice(run_ids)}, timeout=30)

    results.put(timed_requests(request, seconds, max_ops))


def read_round(host: Host, target: str, data: tuple[str, list[str]], settings: Settings) -> dict[str, float]:
    args = (host.url(target), data[0], data[1], settings.round_seconds, settings.max_ops_per_client)
    latencies, errors, elapsed = run_clients(8, read_client, args, settings.round_seconds)
    return summary(latencies, errors, elapsed)


# --- artifacts -----------------------------------------------------------------


# What a client sets to upload large artifacts straight to MinIO through
# presigned URLs, in parallel parts (MLflow 3.17 servers offer them for S3
# stores; clients use them from 500 MB by default). Downloads keep MLflow's
# default: through the server below 500 MB (presigned downloads measured no
# faster here). scripts/lab writes the same into .lab/env, and the README's
# Performance section explains them.
CLIENT_ENV = {
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "true",
    "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(64 << 20),
}


@contextmanager
def client_environment() -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in CLIENT_ENV}
    os.environ.update(CLIENT_ENV)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def client_transfer(host: Host, path: pathlib.Path, scratch: pathlib.Path) -> tuple[float, float, int]:
    """Upload and download through MLflow's own client (mlflow-artifacts:) on
    the deployed server, with CLIENT_ENV: seconds each, bytes received."""
    # Imported here: MLflow's import is slow, and only this measurement needs it.
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    root = f"mlflow-artifacts://{host.address}:{host.deployed_port}/bench/client-{uuid.uuid4().hex[:8]}"
    with client_environment():
        repository = MlflowArtifactsRepository(root, tracking_uri=host.url("deployed"))
        start = time.perf_counter()
        repository.log_artifact(str(path))  # type: ignore[no-untyped-call]
        upload = time.perf_counter() - start
        target = scratch / f"download-{uuid.uuid4().hex[:8]}"
        target.mkdir()
        start = time.perf_counter()
        local = repository.download_artifacts(path.name, str(target))  # type: ignore[no-untyped-call]
        download = time.perf_counter() - start
    received = pathlib.Path(local).stat().st_size
    shutil.rmtree(target)
    return upload, download, received


def artifact_round(
    host: Host, target: str, path: pathlib.Path, size_mb: int, s3: BaseClient, bucket: str
) -> dict[str, float]:
    """Upload then download one file: through a server's artifact proxy with
    plain HTTP, through MLflow's client with CLIENT_ENV (target "client", the
    deployed server), or straight to MinIO with MLflow's keys ("minio")."""
    key = f"bench/{target}-{uuid.uuid4().hex[:8]}.bin"
    # Every download lands in a file, as a client's does.
    copy = path.with_name(f"copy-{uuid.uuid4().hex[:8]}")
    if target == "client":
        upload, download, received = client_transfer(host, path, path.parent)
    elif target == "minio":
        start = time.perf_counter()
        s3.upload_file(str(path), bucket, key)
        upload = time.perf_counter() - start
        start = time.perf_counter()
        s3.download_file(bucket, key, str(copy))
        download = time.perf_counter() - start
        received = copy.stat().st_size
    else:
        url = f"{host.url(target)}{ARTIFACTS}/{key}"
        start = time.perf_counter()
        with path.open("rb") as body:
            requests.put(url, data=body, timeout=600).raise_for_status()
        upload = time.perf_counter() - start
        start = time.perf_counter()
        with requests.get(url, timeout=600, stream=True) as response, copy.open("wb") as out:
            response.raise_for_status()
            for chunk in response.iter_content(1 << 20):
                out.write(chunk)
        download = time.perf_counter() - start
        received = copy.stat().st_size
    copy.unlink(missing_ok=True)
    if received != size_mb << 20:
        raise RuntimeError(f"{target}: downloaded {received} bytes of {size_mb << 20}")
    return {"upload_mb_per_s": size_mb / upload, "download_mb_per_s": size_mb / download}


def s3_client(host: Host, secrets: pathlib.Path) -> tuple[BaseClient, str]:
    """MLflow's own MinIO keys (the site's vault values), and its bucket."""
    values = yaml.safe_load(secrets.read_text())
    client = boto3.client(
        "s3",
        endpoint_url=f"http://{host.address}:9000",
        aws_access_key_id=values["vault_minio_mlflow_access_key"],
        aws_secret_access_key=values["vault_minio_mlflow_secret_key"],
        region_name="us-east-1",
    )
    return client, artifact_destination(host)[len("s3://") :].split("/")[0]


# --- resources -----------------------------------------------------------------


def unit_pids(host: Host, unit: str) -> list[str]:
    group = host.run("systemctl", "show", "-p", "ControlGroup", "--value", unit)
    return host.run("cat", f"/sys/fs/cgroup/systemd{group}/cgroup.procs").split()


def service_cpu_seconds(host: Host, unit: str) -> float:
    """CPU time (user + system) of the unit's live processes."""
    total = 0
    for pid in unit_pids(host, unit):
        fields = host.run("cat", f"/proc/{pid}/stat", check=False).rsplit(")", 1)[-1].split()
        if len(fields) > 12:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def wait_quiet(host: Host, unit: str, timeout: float = 240, window: float = 5, cores: float = 0.15) -> float:
    """Seconds until the unit uses less than `cores` CPU over `window` seconds:
    a server's start-up (MLflow's job consumers import it for ~20 CPU-seconds
    after /health) must not overlap a measurement."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = service_cpu_seconds(host, unit)
        time.sleep(window)
        if service_cpu_seconds(host, unit) - before < cores * window:
            return time.monotonic() - started
    raise RuntimeError(f"{unit} still busy after {timeout} s")


def rss(host: Host) -> dict[str, float]:
    return {"deployed": service_rss_mb(host, "mlflow"), "stock": service_rss_mb(host, STOCK_UNIT)}


def service_rss_mb(host: Host, unit: str) -> float:
    """Resident memory of every process of a unit (its cgroup), in MB."""
    total_kb = 0
    for pid in unit_pids(host, unit):
        for line in host.run("cat", f"/proc/{pid}/status", check=False).splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


# --- the run -------------------------------------------------------------------


def alternate(rounds: int, measure: Callable[[str], dict[str, float]]) -> dict[str, dict[str, float]]:
    """Medians over `rounds` rounds of each target, deployed and stock taking turns."""
    samples: dict[str, list[dict[str, float]]] = {"deployed": [], "stock": []}
    for index in range(rounds):
        for target in ("deployed", "stock") if index % 2 == 0 else ("stock", "deployed"):
            samples[target].append(measure(target))
    return {
        target: {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        for target, rows in samples.items()
    }


def measure(host: Host, settings: Settings, secrets: pathlib.Path) -> dict[str, Any]:
    report: dict[str, Any] = {"settings": dataclasses.asdict(settings), "container": host.container}
    with stock_server(host):
        report["settle_s"] = {"deployed": wait_quiet(host, "mlflow"), "stock": wait_quiet(host, STOCK_UNIT)}
        report["rss_mb_idle"] = rss(host)
        for clients in settings.client_counts:

            def tracking(target: str, clients: int = clients) -> dict[str, float]:
                return tracking_round(host, target, clients, settings)

            report[f"tracking_{clients}_clients"] = alternate(settings.rounds, tracking)
        data = populate(host, settings.read_runs)
        report["read_heavy"] = alternate(
            settings.rounds, lambda target: read_round(host, target, data, settings)
        )
        s3, bucket = s3_client(host, secrets)
        with tempfile.TemporaryDirectory() as scratch:
            for size in settings.artifact_sizes_mb:
                path = pathlib.Path(scratch) / f"{size}.bin"
                with path.open("wb") as out:
                    for _ in range(size):
                        out.write(os.urandom(1 << 20))
                targets = ("deployed", "stock", "client", "minio")
                report[f"artifact_{size}mb"] = {
                    t: artifact_round(host, t, path, size, s3, bucket) for t in targets
                }
        report["rss_mb_loaded"] = rss(host)
    return report


# --- scale-out ------------------------------------------------------------------


def container_address(container: str) -> str:
    inspect = [
        DOCKER,
        "inspect",
        "-f",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        container,
    ]
    return subprocess.run(inspect, capture_output=True, text=True, check=True).stdout.split()[0]


def balancer_url(lb: Host) -> str:
    """HAProxy's MLflow frontend: the port bound in its `frontend mlflow`."""
    config = lb.run("cat", "/etc/haproxy/haproxy.cfg").split("frontend mlflow", 1)[1]
    port = unit_setting(config, "bind :")
    return f"http://{lb.address}:{port}"


def serve_with(servers: list[Host], count: int, lb: Host) -> None:
    """Runs MLflow on the first `count` tracking servers only, and waits until
    HAProxy sees it that way and the started servers are quiet."""
    for index, server in enumerate(servers):
        state = server.run("systemctl", "is-active", "mlflow", check=False)
        if index < count and state != "active":
            server.run("systemctl", "start", "mlflow")
            wait_healthy(f"http://{server.address}:{server.deployed_port}", timeout=180)
            wait_quiet(server, "mlflow")
        elif index >= count and state == "active":
            server.run("systemctl", "stop", "mlflow")
    # HAProxy's checks (fall 2, rise 2, every 2 s) follow within seconds.
    time.sleep(10)
    stats = lb.run(
        "sh",
        "-c",
        "echo 'show servers state mlflow_tracking' | socat stdio /run/haproxy/admin.sock",
        check=False,
    )
    if stats:
        up = sum(1 for line in stats.splitlines()[2:] if len(line.split()) > 5 and line.split()[5] == "2")
        if up != count:
            raise RuntimeError(f"HAProxy has {up} tracking servers up, expected {count}")


def scale_out(lb_name: str, server_names: list[str], cpus: float, settings: Settings) -> dict[str, Any]:
    """Throughput through HAProxy with 1, then 2 (or more) tracking servers,
    each container held to `cpus` CPUs (docker update --cpus), rounds
    alternating: the ratio is what a second server adds."""
    lb = find_host_plain(lb_name)
    servers = [find_host(name) for name in server_names]
    url = balancer_url(lb)
    clients = 8 * len(servers)
    counts = (len(servers), 1, 1, len(servers)) if settings.rounds > 1 else (len(servers), 1)
    samples: dict[int, list[dict[str, float]]] = {1: [], len(servers): []}
    for server in servers:
        subprocess.run(
            [DOCKER, "update", "--cpus", str(cpus), server.container], check=True, capture_output=True
        )
    try:
        for count in counts:
            serve_with(servers, count, lb)
            samples[count].append(tracking_load(url, clients, settings)[0])
    finally:
        for server in servers:
            subprocess.run(
                [DOCKER, "update", "--cpus", "0", server.container], check=True, capture_output=True
            )
        serve_with(servers, len(servers), lb)
    medians = {
        f"{count}_servers": {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        for count, rows in samples.items()
    }
    one, many = medians["1_servers"]["ops_per_s"], medians[f"{len(servers)}_servers"]["ops_per_s"]
    return {"cpus_per_server": cpus, "clients": clients, **medians, "ratio": many / one}


def find_host_plain(container: str) -> Host:
    """A container that runs no tracking server (the load balancer)."""
    return Host(container, container_address(container), 0, "", "", 0)


def print_table(report: dict[str, Any]) -> None:
    print("| measurement | deployed | stock | deployed / stock |")
    print("|---|---|---|---|")
    for key, value in report.items():
        if not isinstance(value, dict) or "deployed" not in value:
            continue
        deployed, stock = value["deployed"], value["stock"]
        if isinstance(deployed, float):
            print(f"| {key} | {deployed:.0f} | {stock:.0f} | {deployed / stock:.2f} |")
            continue
        for metric in deployed:
            ratio = deployed[metric] / stock[metric] if stock[metric] else float("nan")
            print(f"| {key} {metric} | {deployed[metric]:.1f} | {stock[metric]:.1f} | {ratio:.2f} |")
        for metric, direct in value.get("minio", {}).items():
            client = value["client"][metric]
            print(f"| {key} {metric}, MinIO direct | {direct:.1f} | | |")
            print(f"| {key} {metric}, deployed proxy / direct | | | {deployed[metric] / direct:.2f} |")
            print(f"| {key} {metric}, MLflow client, lab settings | {client:.1f} | | {client / direct:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--container", default="mlflow-lab", help="the container running the deployed stack")
    parser.add_argument(
        "--secrets", default=str(ROOT / ".lab" / "secrets.yml"), help="the site's vault values"
    )
    parser.add_argument("--smoke", action="store_true", help="one short round of each measurement")
    parser.add_argument(
        "--quick", action="store_true", help="8 clients, reads over 2,000 runs, 256 MB: A/B checks"
    )
    parser.add_argument(
        "--scale-out",
        metavar="LB:SERVER,SERVER",
        help="instead: throughput through HAProxy (container LB) with 1, then all of the tracking servers",
    )
    parser.add_argument("--cpus", type=float, default=0.5, help="--scale-out: CPUs per tracking container")
    args = parser.parse_args()
    settings = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.scale_out:
        lb, servers = args.scale_out.split(":", 1)
        report = scale_out(lb, servers.split(","), args.cpus, settings)
        print(json.dumps(report, indent=2))
        out = ROOT / ".cache" / "bench" / f"scale-out-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        print(f"\nnumbers: {out}")
        rows = [value for key, value in report.items() if key.endswith("_servers")]
        sys.exit(1 if any(row["errors"] for row in rows) else 0)
    report = measure(find_host(args.container), settings, pathlib.Path(args.secrets))
    print_table(report)
    out = ROOT / ".cache" / "bench" / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nnumbers: {out}")
    loads = [value for key, value in report.items() if key.startswith(("tracking", "read"))]
    sys.exit(1 if any(row["errors"] for load in loads for row in load.values()) else 0)


if __name__ == "__main__":
    main()
