"""A new site, made by the install guide's own steps, links the stack wiring instead
of copying it: a fix to the example's 00-stack.yml reaches it, and the site's
mlflow_stack_* settings reach both sides of every connection."""

from __future__ import annotations

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from conftest import COLLECTIONS_PATH, ROOT, json_report

WIRING = pathlib.PurePath("group_vars/all/00-stack.yml")


def readme_steps() -> str:
    """The shell block between the new-site markers of the install guide (docs/install.md)."""
    guide = (ROOT / "docs" / "install.md").read_text()
    match = re.search(
        r"<!-- new-site:begin[^>]*-->.*?```sh\n(.*?)\n\s*```\s*<!-- new-site:end -->", guide, re.DOTALL
    )
    assert match, "docs/install.md has no new-site block"
    return match.group(1)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A copy of the repository's inventories and scripts, as a user's clone has them."""
    root = tmp_path_factory.mktemp("clone")
    for part in ("inventories", "scripts"):
        shutil.copytree(ROOT / part, root / part, symlinks=True)
    steps = readme_steps()
    assert "scripts/new-site prod" in steps
    # $EDITOR is where the user edits hosts.yml and main.yml: nothing to do here.
    bash = shutil.which("bash")
    assert bash
    subprocess.run(
        [bash, "-euo", "pipefail", "-c", steps], cwd=root, env=dict(os.environ, EDITOR="true"), check=True
    )
    return root


def test_the_site_links_the_wiring(checkout: pathlib.Path) -> None:
    link = checkout / "inventories" / "prod" / WIRING
    assert link.is_symlink()
    assert link.resolve() == (checkout / "inventories" / "example" / WIRING).resolve()
    assert os.readlink(link) == "../../../example/group_vars/all/00-stack.yml"
    for own in ("hosts.yml", "group_vars/all/main.yml"):
        path = checkout / "inventories" / "prod" / own
        assert path.is_file(), own
        assert not path.is_symlink(), own


def test_a_fix_to_the_example_wiring_reaches_the_site(checkout: pathlib.Path) -> None:
    example = checkout / "inventories" / "example" / WIRING
    example.write_text(example.read_text() + "mlflow_stack_fix_probe: reached\n")
    assert "mlflow_stack_fix_probe: reached" in (checkout / "inventories" / "prod" / WIRING).read_text()


def test_a_second_run_changes_nothing(checkout: pathlib.Path) -> None:
    result = subprocess.run(
        [str(checkout / "scripts" / "new-site"), "prod"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1
    assert "exists already" in result.stderr
    assert (checkout / "inventories" / "prod" / WIRING).is_symlink()


def test_site_settings_reach_both_sides(checkout: pathlib.Path) -> None:
    """Ports and names set once in the site's main.yml, as templated by Ansible."""
    site = checkout / "inventories" / "prod"
    with (site / "group_vars" / "all" / "main.yml").open("a") as main:
        main.write(
            "mlflow_stack_database_port: 5433\nmlflow_stack_s3_port: 9100\nmlflow_stack_database: tracking\n"
        )
    pairs = {
        "mlflow_backend_port": "postgresql_port",
        "mlflow_backend_database": "postgresql_mlflow_database",
        "haproxy_s3_server_port": "minio_api_port",
        "haproxy_mlflow_server_port": "mlflow_port",
    }
    names = [*pairs, *pairs.values()]
    # A one-task playbook against the new site's inventory: Ansible templates the
    # variables as a play would, and the JSON callback hands them back as data.
    playbook = checkout / "wiring.yml"
    task = {"ansible.builtin.debug": {"msg": "{{ {" + ", ".join(f"'{n}': {n}" for n in names) + "} }}"}}
    playbook.write_text(
        json.dumps([{"hosts": "mlflow1.example.internal", "gather_facts": False, "tasks": [task]}])
    )
    result = subprocess.run(
        [str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", str(site), str(playbook)],
        capture_output=True,
        text=True,
        env=dict(
            os.environ,
            ANSIBLE_COLLECTIONS_PATH=COLLECTIONS_PATH,
            ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
            ANSIBLE_NOCOLOR="1",
        ),
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    values = json_report(result.stdout)["plays"][0]["tasks"][0]["hosts"]["mlflow1.example.internal"]["msg"]
    for tracking_side, other_side in pairs.items():
        assert str(values[tracking_side]) == str(values[other_side]), (tracking_side, other_side, values)
    assert str(values["mlflow_backend_port"]) == "5433"
    assert str(values["haproxy_s3_server_port"]) == "9100"
    assert values["mlflow_backend_database"] == "tracking"
