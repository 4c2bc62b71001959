#!/usr/bin/env python3
"""How busy the machine's cores were in each phase of scripts/test.

    cpu_phases.py sample FILE [SECONDS]   append "time busy total" (from /proc/stat) every SECONDS
    cpu_phases.py report SAMPLES MARKS    per phase between the marks ("time label" lines):
                                          minutes and the mean number of busy cores

CI's time is one budget on two cores: this tells a phase that waits (cores
idle) from one that computes (both busy), which is where a cut has to aim.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def cores() -> int:
    return len([line for line in Path("/proc/stat").read_text().splitlines() if line[:3] == "cpu"]) - 1


def read_stat() -> tuple[int, int]:
    """Busy and total jiffies over all cores since boot (iowait counts as idle)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def sample(out: Path, interval: float) -> None:
    with out.open("a") as handle:
        while True:
            busy, total = read_stat()
            handle.write(f"{time.time():.0f} {busy} {total}\n")
            handle.flush()
            time.sleep(interval)


def report(samples_file: Path, marks_file: Path) -> list[str]:
    count = cores()
    samples = [tuple(int(x) for x in line.split()) for line in samples_file.read_text().splitlines() if line]
    marks = [line.split(" ", 1) for line in marks_file.read_text().splitlines() if line]
    rows = []
    for (start, label), (end, _) in zip(marks, [*marks[1:], [str(int(time.time())), ""]], strict=True):
        inside = [s for s in samples if int(start) <= s[0] <= int(end)]
        if len(inside) < 2:
            rows.append(f"{label}: {(int(end) - int(start)) / 60:.1f} min, too short to sample")
            continue
        busy = inside[-1][1] - inside[0][1]
        total = inside[-1][2] - inside[0][2]
        minutes = (int(end) - int(start)) / 60
        rows.append(f"{label}: {minutes:.1f} min, {count * busy / max(total, 1):.2f} of {count} cores busy")
    return rows


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "sample":
        sample(Path(argv[1]), float(argv[2]) if len(argv) > 2 else 10.0)
        return 0
    if len(argv) == 3 and argv[0] == "report":
        print("\n".join(report(Path(argv[1]), Path(argv[2]))))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
