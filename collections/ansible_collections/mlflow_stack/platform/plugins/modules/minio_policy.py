#!/usr/bin/python
"""Create or update a MinIO IAM policy through the MinIO client, idempotently."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlflow_stack.platform.plugins.module_utils.minio_stack import (
    MCLI_ARGUMENT_SPEC,
    McliError,
    mcli,
)

DOCUMENTATION = r"""
module: minio_policy
short_description: Ensure a MinIO IAM policy has the given document.
description:
  - Reads the policy with C(mcli admin policy info) and creates or replaces it
    with C(mcli admin policy create) when it is missing or differs.
  - Action and resource lists compare as sets, the way MinIO stores them.
extends_documentation_fragment:
  - mlflow_stack.platform.mcli
options:
  name:
    description: Policy name.
    type: str
    required: true
  document:
    description: The policy, an IAM JSON document.
    type: dict
    required: true
author: mlflow-stack
"""

EXAMPLES = r"""
- name: A policy limited to one bucket
  mlflow_stack.platform.minio_policy:
    mcli: /usr/local/bin/mcli
    config_dir: /root/.mcli
    name: mlflow-readwrite
    document:
      Version: "2012-10-17"
      Statement:
        - Effect: Allow
          Action: [s3:GetObject, s3:PutObject]
          Resource: ["arn:aws:s3:::mlflow/*"]
"""

RETURN = r"""
created:
  description: Whether the policy did not exist before.
  type: bool
  returned: always
"""


def _as_set(value: object) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return sorted(str(item) for item in items)


def normalize(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The statements in a form that compares equal however MinIO reorders them."""
    statements = document.get("Statement") or []
    if isinstance(statements, dict):
        statements = [statements]
    result = []
    for statement in statements:
        entry = {key: value for key, value in statement.items() if key != "Sid"}
        for key in ("Action", "NotAction", "Resource", "NotResource"):
            if key in entry:
                entry[key] = _as_set(entry[key])
        result.append(entry)
    return sorted(result, key=lambda item: json.dumps(item, sort_keys=True))


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **MCLI_ARGUMENT_SPEC,
            "name": {"type": "str", "required": True},
            "document": {"type": "dict", "required": True},
        },
        supports_check_mode=True,
    )
    alias = module.params["alias"]
    name = module.params["name"]
    document = module.params["document"]
    try:
        current = mcli(module, ["admin", "policy", "info", alias, name])
        existing = current.get("policyInfo", {}).get("Policy") or {}
        created = False
    except McliError as err:
        if err.code != "XMinioAdminNoSuchPolicy":
            module.fail_json(msg=str(err))
        existing = {}
        created = True

    if not created and normalize(existing) == normalize(document):
        module.exit_json(changed=False, created=False)
    if not module.check_mode:
        fd, path = tempfile.mkstemp(suffix=".json")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(document, handle)
            mcli(module, ["admin", "policy", "create", alias, name, path])
        except McliError as err:
            module.fail_json(msg=str(err))
        finally:
            os.unlink(path)
    module.exit_json(changed=True, created=created)


if __name__ == "__main__":
    main()
