"""The request loads on the tracking API: clients that write (log_batch, with a
search_runs now and then) on a fresh experiment, and readers (search_runs and
get_run) over an experiment populated first; each client a process of its own."""

from __future__ import annotations

import multiprocessing
import random
import time
import uuid
from typing import Any

import requests
from common import Host, Outcome, Settings, run_clients, summary, timed_requests

API = "/api/2.0/mlflow"
# Load data, not secrets: the standard generator is what is wanted.
RNG = random.Random(20261130)  # noqa: S311

# --- tracking load -------------------------------------------------------------


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
