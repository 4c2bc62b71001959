"""The default scenario's bad-input cases (molecule/bad_input_cases.py), counted
before any host exists: a lost case fails here, not after an hour of converges."""

from __future__ import annotations

import json

from bad_input_cases import CASES


def test_at_least_thirty_eight_distinct_cases() -> None:
    assert len({json.dumps(case[2], sort_keys=True) for case in CASES}) >= 38
