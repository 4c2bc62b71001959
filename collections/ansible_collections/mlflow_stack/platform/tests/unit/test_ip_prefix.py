"""Unit tests of the ip_prefix test plugin."""

from __future__ import annotations

import pytest
from ansible_collections.mlflow_stack.platform.plugins.test import network
from ansible_collections.mlflow_stack.platform.plugins.test.network import ip_prefix


@pytest.mark.parametrize("value", ["10.0.0.5", "10.0.0.0/24", "10.0.0.5/32", "::1", "fd00::/8", "172.18.0.1"])
def test_addresses_and_prefixes_pass(value: str) -> None:
    assert ip_prefix(value)


@pytest.mark.parametrize("value", ["prom.example", "10.0.0.256", "10.0.0.0/33", "", "1.2.3.4 5.6.7.8", 5])
def test_names_and_malformed_values_fail(value: object) -> None:
    assert not ip_prefix(value)


def test_the_test_is_registered_under_its_name() -> None:
    assert network.TestModule().tests()["ip_prefix"] is ip_prefix
