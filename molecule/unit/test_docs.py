"""The docs follow the code: each role's variable reference (docs/reference/)
is what scripts/docs_reference.py renders from its argument specs today, and
every default the hand-written docs state equals the role's or the wiring's."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml
from conftest import ROOT, WIRING, role_defaults

ROLES = ["postgresql", "minio", "mlflow", "mlflow_serving", "mlflow_backup", "haproxy"]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# "| `var` | `value` |" (a table row) and "`var` (default `value`)" (prose).
STATED = [
    re.compile(r"^\|\s*`(?P<name>[a-z][a-z0-9_]+)`\s*\|\s*`(?P<value>[^`]*)`[^|\n]*\|", re.MULTILINE),
    re.compile(r"`(?P<name>[a-z][a-z0-9_]+)`\s*\(default\s*`(?P<value>[^`]*)`\)"),
]


def known_defaults() -> dict[str, Any]:
    """Every role's defaults, and the wiring's literal mlflow_stack_* values."""
    known: dict[str, Any] = {}
    for role in ROLES:
        known.update(role_defaults(role))
    wiring = yaml.safe_load(WIRING.read_text())
    known.update({k: v for k, v in wiring.items() if k.startswith("mlflow_stack_") and "{{" not in str(v)})
    return known


def same(stated: str, actual: object) -> bool:
    if "{{" in str(actual):
        return True  # a default computed from other variables: nothing literal to compare
    try:
        parsed = yaml.safe_load(stated) if stated != "" else ""
    except yaml.YAMLError:
        parsed = stated
    if stated in ('""', "''"):
        parsed = ""
    return parsed == actual or str(parsed) == str(actual)


def test_the_variable_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "docs_reference.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def wrong_defaults(text: str) -> list[str]:
    known = known_defaults()
    return [
        f"{m.group('name')}: the docs say {m.group('value')!r}, the code {known[m.group('name')]!r}"
        for pattern in STATED
        for m in pattern.finditer(text)
        if m.group("name") in known and not same(m.group("value"), known[m.group("name")])
    ]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_default_the_docs_state_is_the_codes(page: pathlib.Path) -> None:
    assert wrong_defaults(page.read_text()) == []


def test_the_docs_name_the_pin_by_its_variable() -> None:
    """A bump is one line of the wiring: the docs say mlflow_stack_mlflow_version,
    and its value shows only in a measurement that names the version it ran."""
    pin = str(yaml.safe_load(WIRING.read_text())["mlflow_stack_mlflow_version"])
    found = [
        f"{page.relative_to(ROOT)}:{number}"
        for page in PAGES
        for number, line in enumerate(page.read_text().splitlines(), 1)
        if pin in line and "measured" not in line
    ]
    assert found == []


def test_a_wrong_default_in_either_form_is_found() -> None:
    text = (
        "| `mlflow_db_concurrency` | `32` (per server) | pools |\nworkers (`mlflow_port` (default `5001`))\n"
    )
    assert [line.split(":")[0] for line in wrong_defaults(text)] == ["mlflow_db_concurrency", "mlflow_port"]
    assert wrong_defaults("| `mlflow_port` | `5000` | the port |") == []
