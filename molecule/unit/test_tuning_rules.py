"""The tracking tier's sizing rules, rendered from roles/mlflow/vars/main.yml as
Ansible renders them, on hosts of other sizes than the test hosts' two cores:
there, "one worker per vCPU" and a fixed 2 look the same (test_tuning.py checks
the running server; this checks the rule)."""

from __future__ import annotations

import pathlib
import re

import jinja2
import pytest
import yaml

VARS = yaml.safe_load(
    (pathlib.Path(__file__).resolve().parents[2] / "roles" / "mlflow" / "vars" / "main.yml").read_text()
)


def render(name: str, variables: dict[str, object]) -> str:
    """One role variable, the role variables it names rendered first."""
    environment = jinja2.Environment(autoescape=False)  # noqa: S701 (numbers, not HTML)
    expression = str(VARS[name])
    context = dict(variables)
    for reference in set(re.findall(r"__mlflow_\w+", expression)) - {name}:
        context[reference] = render(reference, variables)
    return environment.from_string(expression).render(**context).strip()


def workers(mlflow_workers: int, vcpus: int) -> int:
    return int(
        render(
            "__mlflow_workers",
            {"mlflow_workers": mlflow_workers, "ansible_facts": {"processor_vcpus": vcpus}},
        )
    )


@pytest.mark.parametrize(("vcpus", "expected"), [(1, 2), (2, 2), (3, 3), (6, 6), (16, 16)])
def test_one_worker_per_vcpu_and_at_least_two(vcpus: int, expected: int) -> None:
    assert workers(0, vcpus) == expected


def test_a_set_worker_count_wins_over_the_vcpus() -> None:
    assert workers(3, 16) == 3


@pytest.mark.parametrize(
    ("vcpus", "servers", "pool"),
    # ceil(3 x 16 / (workers x servers)), at least 5.
    [(2, 1, 24), (4, 1, 12), (6, 2, 5), (8, 1, 6)],
)
def test_the_pools_share_the_concurrency_among_workers_and_servers(
    vcpus: int, servers: int, pool: int
) -> None:
    variables: dict[str, object] = {
        "mlflow_db_pool_size": 0,
        "mlflow_db_concurrency": 16,
        "mlflow_workers": 0,
        "ansible_facts": {"processor_vcpus": vcpus},
        "groups": {"mlflow_tracking": [f"t{i}" for i in range(servers)]},
        "inventory_hostname": "t0",
    }
    assert int(render("__mlflow_db_pool_size", variables)) == pool
