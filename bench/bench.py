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
import os
import pathlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

# stack_client (where the stack is, the client settings) lives in scripts/, which
# is no package: python bench/bench.py puts only bench/ on the path, so this entry
# point adds scripts/ before the modules here import it.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "scripts"))

from artifacts import artifact_round, s3_client
from common import FULL, QUICK, ROOT, SMOKE, STOCK_UNIT, Host, Settings, find_host
from load import populate, read_round, tracking_round
from resources import rss, wait_quiet
from scale_out import scale_out
from stock import stock_server


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
