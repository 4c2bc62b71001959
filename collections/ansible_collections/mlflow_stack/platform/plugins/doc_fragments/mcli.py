"""The options every module that runs the MinIO client shares."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  mcli:
    description: Path of the MinIO client on the host.
    type: path
    required: true
  config_dir:
    description: MinIO client configuration directory, holding the admin alias.
    type: path
    required: true
  alias:
    description: Alias of the MinIO deployment in config_dir.
    type: str
    default: local
"""
