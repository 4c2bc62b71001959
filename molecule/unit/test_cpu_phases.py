"""scripts/cpu_phases.py, the load per phase that scripts/test prints: the mean
of busy cores between two marks comes from the samples inside them only."""

from __future__ import annotations

import pathlib

import cpu_phases


def test_each_phase_counts_only_its_own_samples(tmp_path: pathlib.Path) -> None:
    cores = (
        len([line for line in pathlib.Path("/proc/stat").read_text().splitlines() if line[:3] == "cpu"]) - 1
    )
    samples = tmp_path / "samples"
    marks = tmp_path / "marks"
    # Phase one: every jiffy busy; phase two: a quarter of them.
    samples.write_text("100 0 0\n160 600 600\n200 700 1000\n220 800 1400\n")
    marks.write_text("100 one\n160 two\n220 end\n")
    rows = cpu_phases.report(samples, marks)
    assert rows[0] == f"one: 1.0 min, {cores:.2f} of {cores} cores busy"
    assert rows[1] == f"two: 1.0 min, {cores * 200 / 800:.2f} of {cores} cores busy"
    assert rows[2].startswith("end: ")
    assert rows[2].endswith("too short to sample")


def test_a_sample_reads_busy_below_total() -> None:
    busy, total = cpu_phases.read_stat()
    assert 0 < busy < total
