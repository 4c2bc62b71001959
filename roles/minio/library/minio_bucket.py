#!/usr/bin/python
"""Create an S3 bucket on MinIO (or any S3 endpoint) idempotently.

It speaks the S3 API with AWS Signature V4 from the standard library only, so
storage hosts need neither boto3 nor the mc client.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import urllib.error
import urllib.parse
import urllib.request

from ansible.module_utils.basic import AnsibleModule

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
author: mlflow-stack
"""

EXAMPLES = r"""
- name: Create the artifact bucket
  minio_bucket:
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

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def sign_request(
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    region: str,
    now: datetime.datetime,
) -> dict[str, str]:
    """Return the headers that sign an empty-bodied S3 request (SigV4)."""
    parts = urllib.parse.urlsplit(url)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    headers = {
        "host": parts.netloc,
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": amz_date,
    }
    signed = ";".join(sorted(headers))
    canonical = "\n".join(
        [
            method,
            urllib.parse.quote(parts.path or "/", safe="/-_.~"),
            "",
            "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
            signed,
            EMPTY_SHA256,
        ]
    )
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), day)
    for part in (region, "s3", "aws4_request"):
        key = _hmac(key, part)
    signature = hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return headers


def s3_call(module: AnsibleModule, method: str, url: str) -> tuple[int, str]:
    """Send a signed request; return the status and the body (for errors)."""
    params = module.params
    headers = sign_request(
        method,
        url,
        params["access_key"],
        params["secret_key"],
        params["region"],
        datetime.datetime.now(datetime.UTC),
    )
    headers["Content-Length"] = "0"
    # main() only lets http(s) endpoints through.
    request = urllib.request.Request(url, data=b"" if method == "PUT" else None, method=method)  # noqa: S310
    for name, value in headers.items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as err:
        module.fail_json(msg=f"cannot reach the S3 endpoint {params['endpoint']}: {err}")
        raise  # unreachable: fail_json exits


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "endpoint": {"type": "str", "required": True},
            "access_key": {"type": "str", "required": True, "no_log": True},
            "secret_key": {"type": "str", "required": True, "no_log": True},
            "name": {"type": "str", "required": True},
            "region": {"type": "str", "default": "us-east-1"},
        },
        supports_check_mode=True,
    )
    name = module.params["name"]
    if urllib.parse.urlsplit(module.params["endpoint"]).scheme not in ("http", "https"):
        module.fail_json(msg=f"endpoint must be an http(s) URL, got {module.params['endpoint']}")
    url = module.params["endpoint"].rstrip("/") + "/" + urllib.parse.quote(name)
    status, body = s3_call(module, "HEAD", url)
    if status == 200:
        module.exit_json(changed=False, status=status)
    if status != 404:
        module.fail_json(
            msg=f"HEAD bucket {name} answered {status}: check the endpoint and the keys",
            status=status,
            body=body,
        )
    if not module.check_mode:
        put_status, put_body = s3_call(module, "PUT", url)
        if put_status != 200:
            module.fail_json(
                msg=f"creating bucket {name} failed with {put_status}",
                status=put_status,
                body=put_body,
            )
    module.exit_json(changed=True, status=status)


if __name__ == "__main__":
    main()
