"""Bad input fails before anything changes: for each case site.yml must fail,
the message of the task that failed (read from Ansible's JSON output, not the
task banner or the failed condition) must name the variable and say what is
wrong, no secret may be printed, and the host must be left as it was (same
files, same service processes). The cases run four at a time (each one is an
ansible-playbook run that stops in preflight): the fingerprint is taken before
the first and compared after the last, and each run's own stats must show no
change."""

from __future__ import annotations

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import testinfra.host
from bad_input_cases import CASES
from conftest import PG_CONF_DIR, PG_UNIT, json_report, run_site, secret_forms

FINGERPRINT = (
    "sha256sum /etc/mlflow/* /etc/default/minio /etc/systemd/system/mlflow.service "
    "/etc/systemd/system/minio.service /usr/local/bin/minio /usr/local/bin/mcli /root/.mcli/config.json "
    f"{PG_CONF_DIR}/*.conf {PG_CONF_DIR}/conf.d/*; "
    f"systemctl show -p MainPID --value {PG_UNIT} minio mlflow; "
    "ls /opt/mlflow/venvs/ /opt/mlflow/venvs/*/lib/python3*/site-packages | sha256sum"
)


@pytest.fixture(scope="module")
def baseline(host: testinfra.host.Host) -> str:
    return str(host.check_output(FINGERPRINT))


@pytest.fixture(scope="module")
def runs(baseline: str) -> dict[str, subprocess.CompletedProcess[str]]:
    """site.yml with each case's extra vars, after the baseline was taken."""
    assert baseline

    def run(extra_vars: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        return run_site(extra_vars, env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json"})

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(run, [case[2] for case in CASES]))
    return {json.dumps(case[2]): result for case, result in zip(CASES, results, strict=True)}


@pytest.fixture(scope="module")
def after(host: testinfra.host.Host, runs: dict[str, subprocess.CompletedProcess[str]]) -> str:
    """The fingerprint once every case has run."""
    assert len(runs) == len(CASES)
    return str(host.check_output(FINGERPRINT))


def failure_messages(report: dict[str, Any]) -> list[str]:
    """The messages of the failed tasks and loop items in an ansible.posix.json report."""
    messages = []
    for play in report["plays"]:
        for task in play["tasks"]:
            for result in task["hosts"].values():
                for outcome in [result, *result.get("results", [])]:
                    if outcome.get("failed") and outcome.get("msg") != "One or more items failed":
                        messages.append(
                            "\n".join([str(outcome.get("msg", "")), *outcome.get("argument_errors", [])])
                        )
    return messages


@pytest.mark.parametrize(("variable", "wrong", "extra_vars"), CASES, ids=[json.dumps(c[2]) for c in CASES])
def test_bad_input_fails_early_and_names_the_variable(
    host: testinfra.host.Host,
    baseline: str,
    runs: dict[str, subprocess.CompletedProcess[str]],
    after: str,
    hostvars: dict[str, Any],
    variable: str,
    wrong: str,
    extra_vars: dict[str, Any],
) -> None:
    result = runs[json.dumps(extra_vars)]
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-2000:]
    report = json_report(result.stdout)
    messages = failure_messages(report)
    assert len(messages) == 1, messages
    assert re.search(rf"\b{variable}\b", messages[0]), messages[0]
    assert re.search(wrong, messages[0], re.IGNORECASE), messages[0]
    stats = report["stats"]
    assert all(host_stats["changed"] == 0 for host_stats in stats.values()), stats
    secret_names = [n for n in hostvars if n.startswith("vault_") and ("password" in n or "secret" in n)]
    secrets = secret_forms(hostvars, secret_names)
    assert not [secret for secret in secrets if secret in output], "a secret appears in the output"
    assert after == baseline
