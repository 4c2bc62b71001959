"""The AI Gateway's passphrase, as one story told in file order with one stored
provider key: a server that ran with MLflow's public default passphrase (as one
deployed before the installer set a passphrase did) is rotated away from it by
the next run; with the gateway turned off no passphrase is needed, the gateway
answers 501 and the passphrase in use stays; turned on again with a new
passphrase in vault, then the original one, the key stays readable (each run
rotates it with MLflow's own command), and no passphrase reaches a command line
or the run's output."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import testinfra.host
from conftest import (
    answers,
    assert_clean,
    deployed_record,
    run_site,
    sampled_process_arguments,
    secret_forms,
    units_state,
    wait_for,
)
from gateway import read_key, secrets_config, stand_in_provider, store_key

ENV_FILE = "/etc/mlflow/mlflow.env"
KEK_LINES = r"^MLFLOW_CRYPTO_KEK_\(PASSPHRASE\|VERSION\)="
# The role's root-only record of the passphrase the servers run with.
KEK_RECORD = "/etc/mlflow/gateway-kek.json"
FACT = "/etc/ansible/facts.d/mlflow.fact"


def kek_version(host: testinfra.host.Host) -> int:
    """The version the server runs with; the published fact must say the same."""
    found = re.search(r'(?m)^MLFLOW_CRYPTO_KEK_VERSION="(\d+)"$', host.file(ENV_FILE).content_string)
    assert found, f"no MLFLOW_CRYPTO_KEK_VERSION in {ENV_FILE}"
    assert deployed_record(host).kek_version == int(found.group(1))
    return int(found.group(1))


def site_run(extra: dict[str, Any] | None, passphrases: list[str], host: testinfra.host.Host) -> str:
    """One site.yml run at -v, watched by the ps sampler; its output, checked clean."""
    with sampled_process_arguments(host) as samples:
        result = run_site(extra, "-v")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert_clean(output, passphrases, "ansible-playbook -v output")
    assert_clean(samples[0], passphrases, "ps during the run")
    assert samples[0].count("COMMAND") >= 20, "the ps sampler hardly ran"
    return output


def assert_rotated(output: str, host: testinfra.host.Host, old: int) -> None:
    assert f"Gateway key version {old} -> {old + 1}" in output
    assert "Successfully rotated 1 encryption key" in output
    assert kek_version(host) == old + 1


@pytest.fixture(scope="module")
def stand_in(host: testinfra.host.Host) -> Iterator[None]:
    with stand_in_provider(host):
        yield


@pytest.fixture(scope="module")
def key() -> dict[str, str]:
    """The provider key the tests store (first test) and read back (every test)."""
    return {"api_key": f"sk-{secrets.token_hex(12)}"}


@pytest.fixture(scope="module")
def new_passphrase() -> str:
    return f"rotated {secrets.token_urlsafe(30)}"


@pytest.fixture(scope="module")
def passphrases(hostvars: dict[str, Any], new_passphrase: str) -> list[str]:
    """Every form of both passphrases: none may show anywhere."""
    return secret_forms({**hostvars, "new": new_passphrase}, ["vault_mlflow_kek_passphrase", "new"])


def test_a_server_that_ran_with_the_default_passphrase_is_rotated_away_from_it(
    host: testinfra.host.Host, mlflow_url: str, stand_in: None, key: dict[str, str], passphrases: list[str]
) -> None:
    # The server as one deployed before the installer wrote a passphrase: no
    # passphrase in its environment, so MLflow's public default wraps the keys.
    host.check_output(f"sed -i '/{KEK_LINES}/d' {ENV_FILE} && rm {KEK_RECORD} && systemctl restart mlflow")
    wait_for(
        lambda: answers(f"{mlflow_url}/health"), timeout=120, diagnose=lambda: units_state(host, "mlflow")
    )
    assert secrets_config(mlflow_url)["using_default_passphrase"] is True
    key["endpoint"] = store_key(mlflow_url, key["api_key"])
    assert read_key(mlflow_url, key["endpoint"]) == key["api_key"]

    output = site_run(None, passphrases, host)
    assert_rotated(output, host, 1)
    assert secrets_config(mlflow_url) == {"secrets_available": True, "using_default_passphrase": False}
    assert read_key(mlflow_url, key["endpoint"]) == key["api_key"]


def test_with_the_gateway_off_no_passphrase_is_needed_and_the_one_in_use_stays(
    host: testinfra.host.Host, mlflow_url: str, stand_in: None, key: dict[str, str], passphrases: list[str]
) -> None:
    """(Bad input, test_bad_input: with the gateway on, a missing or short one fails.)"""
    version = kek_version(host)
    output = site_run({"vault_mlflow_kek_passphrase": "", "mlflow_gateway_enabled": False}, passphrases, host)
    assert "Gateway key version" not in output
    assert (
        requests.get(f"{mlflow_url}/api/3.0/mlflow/server-info", timeout=10).json()["features_enabled"][
            "gateway"
        ]
        is False
    )
    assert read_key(mlflow_url, key["endpoint"]).startswith("HTTP 501")
    # Kept, so that the stored keys are readable when the gateway is on again (next test).
    assert kek_version(host) == version
    assert host.file(ENV_FILE).contains("^MLFLOW_CRYPTO_KEK_PASSPHRASE=")


def test_a_stored_key_survives_passphrase_changes(
    host: testinfra.host.Host,
    mlflow_url: str,
    stand_in: None,
    key: dict[str, str],
    passphrases: list[str],
    new_passphrase: str,
) -> None:
    """The gateway on again with a new passphrase in vault, then the original
    one: two rotations, and the key stored under the default is read each time.
    The second meets the server as a release from before the records left it
    (no ansible_local.mlflow, no gateway-kek.json): the passphrase it runs with
    is imported from its environment file, or the rotation could not unwrap the
    key, and the records are written again."""
    for label, extra in (("a new", {"vault_mlflow_kek_passphrase": new_passphrase}), ("the original", None)):
        version = kek_version(host)
        if extra is None:
            host.check_output(f"rm {KEK_RECORD} {FACT}")
        output = site_run(extra, passphrases, host)
        assert_rotated(output, host, version)
        assert secrets_config(mlflow_url)["using_default_passphrase"] is False
        assert read_key(mlflow_url, key["endpoint"]) == key["api_key"], (
            f"after the rotation to {label} passphrase"
        )
    assert host.file(KEK_RECORD).mode == 0o600
    assert host.file(FACT).exists
    assert_clean(host.check_output("journalctl --no-pager -o cat -u mlflow"), passphrases, "MLflow's journal")
