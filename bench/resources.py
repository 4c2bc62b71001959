"""What the servers' units use of the host: the processes of a unit (its
cgroup), their CPU time, waiting until a unit is quiet before a measurement,
and their resident memory."""

from __future__ import annotations

import os
import time

from common import STOCK_UNIT, Host


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
