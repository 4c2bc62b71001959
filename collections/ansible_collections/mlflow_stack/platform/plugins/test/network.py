"""Jinja test: whether a value is an IPv4 or IPv6 address or prefix (CIDR), as
systemd's IPAddressAllow=, HAProxy's src ACL and pg_hba take them. Names are not:
they would be resolved once, or not at all."""

from __future__ import annotations

import ipaddress

DOCUMENTATION = r"""
name: ip_prefix
short_description: Is the value an IPv4/IPv6 address or CIDR prefix
description:
  - True for 10.0.0.5, 10.0.0.0/24, ::1 or fd00::/8; false for names and malformed values.
options:
  _input:
    description: The value to test.
    type: raw
    required: true
"""


def ip_prefix(value: object) -> bool:
    if not isinstance(value, str) or not value:
        return False
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False
    return True


class TestModule:
    def tests(self) -> dict[str, object]:
        return {"ip_prefix": ip_prefix}
