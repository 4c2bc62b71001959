"""Each role's input contract: meta/argument_specs.yml lists exactly the
variables of defaults/main.yml, with the same defaults, every variable carries
the role's prefix, and every secret is marked no_log."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from conftest import ROOT, role_defaults

ROLES = ["postgresql", "minio", "mlflow", "haproxy", "mlflow_backup", "mlflow_serving"]


def spec_options(role: str) -> dict[str, dict[str, Any]]:
    text = (ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text()
    options: dict[str, dict[str, Any]] = yaml.safe_load(text)["argument_specs"]["main"]["options"]
    return options


@pytest.mark.parametrize("role", ROLES)
def test_specs_mirror_defaults(role: str) -> None:
    defaults = role_defaults(role)
    options = spec_options(role)
    assert set(options) == set(defaults)
    for name, option in options.items():
        assert option.get("description"), f"{name} has no description"
        if "{{" not in str(defaults[name]):
            assert option.get("default") == defaults[name], name


@pytest.mark.parametrize("role", ROLES)
def test_variables_carry_the_role_prefix(role: str) -> None:
    assert all(name.startswith(f"{role}_") for name in role_defaults(role))


@pytest.mark.parametrize("role", ROLES)
def test_secrets_are_no_log(role: str) -> None:
    for name, option in spec_options(role).items():
        if any(
            word in name
            for word in ("password", "passphrase", "secret", "access_key", "root_user", "private_key")
        ):
            assert option.get("no_log") is True, name


def included_entry_points() -> list[tuple[str, str, str]]:
    """(playbook, role, tasks_from) for every include_role with tasks_from in playbooks/."""
    found = []
    for path in sorted((ROOT / "playbooks").glob("*.yml")):
        text = path.read_text()
        for role, point in re.findall(r"name: (\w+)\n\s+tasks_from: (\S+)", text):
            found.append((path.name, role, point))
    return found


def test_plays_include_roles_only_through_documented_entry_points() -> None:
    """Ansible validates (and docs/reference documents) an entry point only when
    tasks_from names it exactly: `prepare`, not `prepare.yml`."""
    points = included_entry_points()
    assert len(points) >= 20, points
    for playbook, role, point in points:
        specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
        assert point in specs["argument_specs"], f"{playbook}: {role} has no entry point {point!r}"
        assert (ROOT / "roles" / role / "tasks" / f"{point}.yml").exists(), f"{playbook}: {role}/{point}"
