"""Serve the Prometheus metrics that MLflow's workers write to their directory.

With --expose-prometheus each uvicorn worker (and job process) writes its
counters and histograms into one multiprocess directory. This exporter sums
them, as prometheus_client's multiprocess mode prescribes, and serves them on a
port of their own, which systemd opens to the metrics clients only
(mlflow-metrics.service: IPAddressAllow=). MLflow's API port keeps no /metrics.

Usage: metrics_exporter.py DIRECTORY ADDRESS PORT
"""

from __future__ import annotations

import signal
import sys

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector


def main() -> None:
    directory, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    registry = CollectorRegistry()
    # Reads the directory on every scrape: files of workers started later count.
    MultiProcessCollector(registry, path=directory)
    server, _thread = start_http_server(port, addr=address, registry=registry)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    server.shutdown()


if __name__ == "__main__":
    main()
