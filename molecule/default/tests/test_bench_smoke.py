"""The benchmark harness (bench/) works: its smoke run against this host starts
a stock `mlflow server` beside the deployed one, measures both with no failed
request, reports every measurement, and leaves the stock server stopped. (A
smoke of the harness, not a speed test: the numbers are not judged here.)"""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import testinfra.host
from conftest import ROOT


def test_the_benchmark_smoke_run_measures_both_servers(host: testinfra.host.Host) -> None:
    container = host.backend.get_hostname()
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "bench" / "bench.py"),
            "--container", container,
            "--smoke",
            "--secrets", str(ROOT / "molecule" / "shared" / "vars" / "test-host.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    found = re.search(r"^numbers: (.+\.json)$", result.stdout, re.MULTILINE)
    assert found, result.stdout[-2000:]
    report = json.loads(pathlib.Path(found.group(1)).read_text())
    for key in ("tracking_8_clients", "read_heavy"):
        for target in ("deployed", "stock"):
            assert report[key][target]["ops_per_s"] > 0, (key, target)
            assert report[key][target]["errors"] == 0, (key, target)
    for target in ("deployed", "stock", "client", "minio"):
        assert report["artifact_1mb"][target]["upload_mb_per_s"] > 0, target
    assert report["rss_mb_idle"]["deployed"] > 50
    assert report["rss_mb_idle"]["stock"] > 50
    assert "| tracking_8_clients ops_per_s |" in result.stdout
    assert host.run("systemctl is-active mlflow-bench-stock").stdout.strip() != "active"
