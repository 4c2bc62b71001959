"""Scale-out: tracking throughput through HAProxy's MLflow frontend with all of
the tracking servers, then with one (MLflow stopped on the others), each
container held to a share of CPU; where HAProxy listens, and its runtime API,
come from the local fact the haproxy role publishes (stack_client)."""

from __future__ import annotations

import statistics
import subprocess
import time
from typing import Any

import stack_client
from common import DOCKER, Host, Settings, find_host, find_host_plain, wait_healthy
from load import tracking_load
from resources import wait_quiet


def serve_with(servers: list[Host], count: int, lb: Host, balancer: stack_client.Balancer) -> None:
    """Runs MLflow on the first `count` tracking servers only, and waits until
    HAProxy (through its runtime API) sees it that way and the started
    servers are quiet."""
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
    stats = stack_client.runtime_api(
        lambda argv: lb.run(*argv), balancer, "show servers state mlflow_tracking"
    )
    up = sum(1 for line in stats.splitlines()[2:] if len(line.split()) > 5 and line.split()[5] == "2")
    if up != count:
        raise RuntimeError(f"HAProxy has {up} tracking servers up, expected {count}")


def scale_out(lb_name: str, server_names: list[str], cpus: float, settings: Settings) -> dict[str, Any]:
    """Throughput through HAProxy with 1, then 2 (or more) tracking servers,
    each container held to `cpus` CPUs (docker update --cpus), rounds
    alternating: the ratio is what a second server adds."""
    lb = find_host_plain(lb_name)
    servers = [find_host(name) for name in server_names]
    balancer = stack_client.balancer(lambda argv: lb.run(*argv))
    url = f"http://{lb.address}:{balancer.mlflow_port}"
    clients = 8 * len(servers)
    counts = (len(servers), 1, 1, len(servers)) if settings.rounds > 1 else (len(servers), 1)
    samples: dict[int, list[dict[str, float]]] = {1: [], len(servers): []}
    for server in servers:
        subprocess.run(
            [DOCKER, "update", "--cpus", str(cpus), server.container], check=True, capture_output=True
        )
    try:
        for count in counts:
            serve_with(servers, count, lb, balancer)
            samples[count].append(tracking_load(url, clients, settings)[0])
    finally:
        for server in servers:
            subprocess.run(
                [DOCKER, "update", "--cpus", "0", server.container], check=True, capture_output=True
            )
        serve_with(servers, len(servers), lb, balancer)
    medians = {
        f"{count}_servers": {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        for count, rows in samples.items()
    }
    one, many = medians["1_servers"]["ops_per_s"], medians[f"{len(servers)}_servers"]["ops_per_s"]
    return {"cpus_per_server": cpus, "clients": clients, **medians, "ratio": many / one}
