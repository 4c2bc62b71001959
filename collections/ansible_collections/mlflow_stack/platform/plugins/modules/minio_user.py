#!/usr/bin/python
"""Create a MinIO user with a secret and policies, idempotently."""

from __future__ import annotations

from typing import Any

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlflow_stack.platform.plugins.module_utils.minio_stack import (
    MCLI_ARGUMENT_SPEC,
    McliError,
    S3Unreachable,
    mcli,
    s3_error_code,
    s3_request,
)

DOCUMENTATION = r"""
module: minio_user
short_description: Ensure a MinIO user exists, enabled, with its secret and exactly its policies.
description:
  - Reads the user with C(mcli admin user info). Creates it when missing, passing
    the secret on standard input, never on the command line.
  - MinIO does not reveal secrets, so the module signs an S3 request with the
    wanted keys; a signature error means the secret changed, and the user is set again.
  - Attaches the wanted policies and detaches the others.
extends_documentation_fragment:
  - mlflow_stack.platform.mcli
options:
  endpoint:
    description: S3 API URL used to check the secret, e.g. http://127.0.0.1:9000.
    type: str
    required: true
  ca_file:
    description: CA bundle for an https endpoint.
    type: path
  access_key:
    description: The user's access key.
    type: str
    required: true
  secret_key:
    description: The user's secret key, 8 characters or more.
    type: str
    required: true
  policies:
    description: Names of the policies the user has; others are detached.
    type: list
    elements: str
    default: []
author: mlflow-stack
"""

EXAMPLES = r"""
- name: MLflow's own user
  mlflow_stack.platform.minio_user:
    mcli: /usr/local/bin/mcli
    config_dir: /root/.mcli
    endpoint: http://127.0.0.1:9000
    access_key: mlflow
    secret_key: "{{ vault_minio_mlflow_secret_key }}"
    policies: [mlflow-readwrite]
"""

RETURN = r"""
actions:
  description: What was done (or would be, in check mode).
  type: list
  elements: str
  returned: always
"""

# Answers that mean MinIO does not accept these keys at all. AccessDenied means
# it does, and the policy refused the request.
BAD_KEYS = {"InvalidAccessKeyId", "SignatureDoesNotMatch"}


def secret_matches(module: AnsibleModule, params: dict[str, Any]) -> bool:
    try:
        status, body = s3_request(
            "GET",
            params["endpoint"].rstrip("/") + "/",
            params["access_key"],
            params["secret_key"],
            ca_file=params["ca_file"],
        )
    except S3Unreachable as err:
        module.fail_json(msg=f"cannot reach the S3 endpoint {params['endpoint']}: {err}")
        raise  # unreachable: fail_json exits
    return status == 200 or s3_error_code(body) not in BAD_KEYS


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            **MCLI_ARGUMENT_SPEC,
            "endpoint": {"type": "str", "required": True},
            "ca_file": {"type": "path"},
            "access_key": {"type": "str", "required": True},
            "secret_key": {"type": "str", "required": True, "no_log": True},
            "policies": {"type": "list", "elements": "str", "default": []},
        },
        supports_check_mode=True,
    )
    params = module.params
    alias, access_key = params["alias"], params["access_key"]
    actions: list[str] = []

    def run(args: list[str], stdin: str | None = None) -> dict[str, Any]:
        try:
            result: dict[str, Any] = mcli(module, args, stdin)
            return result
        except McliError as err:
            module.fail_json(msg=str(err), actions=actions)
            raise  # unreachable: fail_json exits

    try:
        info = mcli(module, ["admin", "user", "info", alias, access_key])
    except McliError as err:
        if err.code != "XMinioAdminNoSuchUser":
            module.fail_json(msg=str(err))
        info = {}

    if not info:
        actions.append("created")
    elif info.get("userStatus") != "enabled":
        actions.append("enabled")
    elif not secret_matches(module, params):
        actions.append("secret updated")
    if actions and not module.check_mode:
        # `user add` sets the secret and enables the user; the secret goes on stdin.
        run(["admin", "user", "add", alias, access_key], stdin=params["secret_key"])

    current = {name for name in str(info.get("policyName") or "").split(",") if name}
    wanted = set(params["policies"])
    for verb, names in (("attach", sorted(wanted - current)), ("detach", sorted(current - wanted))):
        if names:
            actions.append(f"{verb} {', '.join(names)}")
            if not module.check_mode:
                run(["admin", "policy", verb, alias, *names, "--user", access_key])

    module.exit_json(changed=bool(actions), actions=actions)


if __name__ == "__main__":
    main()
