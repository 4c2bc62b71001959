#!/usr/bin/python
"""Create an S3 bucket on MinIO (or any S3 endpoint) idempotently.

It speaks the S3 API with AWS Signature V4 from the standard library only, so
storage hosts need no boto3.
"""

from __future__ import annotations

import urllib.parse

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.mlflow_stack.platform.plugins.module_utils.minio_stack import (
    S3Unreachable,
    s3_error_code,
    s3_request,
)

DOCUMENTATION = r"""
module: minio_bucket
short_description: Ensure an S3 bucket exists, through the S3 API.
description:
  - Sends HEAD Bucket and, when it answers 404, PUT Bucket, signed with AWS Signature V4.
options:
  endpoint:
    description: Base URL of the S3 API, e.g. http://127.0.0.1:9000.
    type: str
    required: true
  access_key:
    description: Access key.
    type: str
    required: true
  secret_key:
    description: Secret key.
    type: str
    required: true
  name:
    description: Bucket name.
    type: str
    required: true
  region:
    description: Signing region.
    type: str
    default: us-east-1
  ca_file:
    description: CA bundle that signs the endpoint's certificate, for https endpoints.
    type: path
author: mlflow-stack
"""

EXAMPLES = r"""
- name: Create the artifact bucket
  mlflow_stack.platform.minio_bucket:
    endpoint: http://127.0.0.1:9000
    access_key: "{{ minio_root_user }}"
    secret_key: "{{ minio_root_password }}"
    name: mlflow
"""

RETURN = r"""
status:
  description: HTTP status of the HEAD Bucket request made first.
  type: int
  returned: always
"""


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "endpoint": {"type": "str", "required": True},
            "access_key": {"type": "str", "required": True, "no_log": True},
            "secret_key": {"type": "str", "required": True, "no_log": True},
            "name": {"type": "str", "required": True},
            "region": {"type": "str", "default": "us-east-1"},
            "ca_file": {"type": "path"},
        },
        supports_check_mode=True,
    )
    params = module.params
    name = params["name"]
    url = params["endpoint"].rstrip("/") + "/" + urllib.parse.quote(name)

    def call(method: str) -> tuple[int, str]:
        try:
            status, body = s3_request(
                method, url, params["access_key"], params["secret_key"], params["region"], params["ca_file"]
            )
            return int(status), str(body)
        except S3Unreachable as err:
            module.fail_json(msg=f"cannot reach the S3 endpoint {params['endpoint']}: {err}")
            raise  # unreachable: fail_json exits

    status, body = call("HEAD")
    if status == 200:
        module.exit_json(changed=False, status=status)
    if status != 404:
        module.fail_json(
            msg=f"HEAD bucket {name} answered {status}: check the endpoint and the keys",
            status=status,
            body=body,
        )
    if not module.check_mode:
        put_status, put_body = call("PUT")
        # A PUT retried after a 503 may find the bucket its first try made.
        if put_status == 409 and s3_error_code(put_body) == "BucketAlreadyOwnedByYou":
            put_status = 200
        if put_status != 200:
            module.fail_json(
                msg=f"creating bucket {name} failed with {put_status}",
                status=put_status,
                body=put_body,
            )
    module.exit_json(changed=True, status=status)


if __name__ == "__main__":
    main()
