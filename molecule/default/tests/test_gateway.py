"""The AI Gateway's passphrase: the server runs with the one from vault, never
MLflow's public default; a provider key stored before the passphrase changes in
vault is still readable after the next run (which rotated it with MLflow's own
command), and no passphrase reaches a command line or the run's output."""

from __future__ import annotations

import re
import secrets
from typing import Any

import testinfra.host
from conftest import assert_clean, run_site, sampled_process_arguments, secret_forms
from gateway import read_key, secrets_config, stand_in_provider, store_key

ENV_FILE = "/etc/mlflow/mlflow.env"


def kek_version(host: testinfra.host.Host) -> int:
    found = re.search(r'(?m)^MLFLOW_CRYPTO_KEK_VERSION="(\d+)"$', host.file(ENV_FILE).content_string)
    assert found, f"no MLFLOW_CRYPTO_KEK_VERSION in {ENV_FILE}"
    return int(found.group(1))


def test_the_server_does_not_use_the_default_passphrase(host: testinfra.host.Host, mlflow_url: str) -> None:
    assert secrets_config(mlflow_url) == {"secrets_available": True, "using_default_passphrase": False}
    assert host.file(ENV_FILE).contains("^MLFLOW_CRYPTO_KEK_PASSPHRASE=")


def test_a_stored_key_survives_a_passphrase_change(
    host: testinfra.host.Host, mlflow_url: str, hostvars: dict[str, Any]
) -> None:
    api_key = f"sk-{secrets.token_hex(12)}"
    version = kek_version(host)
    new_passphrase = f"rotated {secrets.token_urlsafe(30)}"
    passphrases = secret_forms({**hostvars, "new": new_passphrase}, ["vault_mlflow_kek_passphrase", "new"])
    with stand_in_provider(host):
        endpoint = store_key(mlflow_url, api_key)
        assert read_key(mlflow_url, endpoint) == api_key

        # A new passphrase in vault, then the original one again: two rotations.
        changes = (("a new", {"vault_mlflow_kek_passphrase": new_passphrase}), ("the original", None))
        for label, extra in changes:
            with sampled_process_arguments(host) as samples:
                result = run_site(extra, "-v")
            output = result.stdout + result.stderr
            assert result.returncode == 0, output[-3000:]
            version += 1
            assert f"Gateway key version {version - 1} -> {version}" in output
            assert "Successfully rotated 1 encryption key" in output
            assert kek_version(host) == version
            assert_clean(output, passphrases, "ansible-playbook -v output")
            assert_clean(samples[0], passphrases, "ps during the rotation")
            assert samples[0].count("COMMAND") >= 20, "the ps sampler hardly ran"
            assert secrets_config(mlflow_url)["using_default_passphrase"] is False
            assert read_key(mlflow_url, endpoint) == api_key, f"after the rotation to {label} passphrase"

    assert_clean(host.check_output("journalctl --no-pager -o cat -u mlflow"), passphrases, "MLflow's journal")


def test_with_the_gateway_off_no_passphrase_is_needed() -> None:
    """(Bad input, test_bad_input: with the gateway on, a missing or short one fails.)"""
    result = run_site({"vault_mlflow_kek_passphrase": "", "mlflow_gateway_enabled": False}, "--check")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
