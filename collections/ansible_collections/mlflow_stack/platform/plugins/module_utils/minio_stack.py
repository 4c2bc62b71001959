"""Helpers shared by the minio role's modules.

S3 requests are signed with AWS Signature V4 from the standard library, so the
storage hosts need no boto3. Admin calls (users, policies) go through the MinIO
client, because the admin API encrypts its payloads with the root secret.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ansible.module_utils.basic import AnsibleModule

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class S3Unreachable(Exception):
    """The endpoint did not answer at all (connection, DNS or TLS failure)."""


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode("utf-8"), hashlib.sha256).digest()


def canonical_query(query: str) -> str:
    """The query string as SigV4 wants it: pairs sorted by name, then value, each
    part percent-encoded with only unreserved characters left as they are."""
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    return "&".join(
        f"{urllib.parse.quote(name, safe='-_.~')}={urllib.parse.quote(value, safe='-_.~')}"
        for name, value in sorted(pairs)
    )


def canonical_request(
    method: str, path: str, query: str, headers: dict[str, str], payload_sha256: str
) -> tuple[str, str]:
    """The canonical request and its signed-headers list. Header names are
    lower-cased and sorted; values are trimmed and inner runs of spaces folded.
    The path is encoded once, as S3 wants it (S3 does not normalise it)."""
    folded = {name.lower(): " ".join(value.split()) for name, value in headers.items()}
    signed = ";".join(sorted(folded))
    request = "\n".join(
        [
            method,
            urllib.parse.quote(path or "/", safe="/-_.~"),
            canonical_query(query),
            "".join(f"{name}:{folded[name]}\n" for name in sorted(folded)),
            signed,
            payload_sha256,
        ]
    )
    return request, signed


def signing_key(secret_key: str, day: str, region: str, service: str) -> bytes:
    """The key derived from the secret for one day, region and service."""
    key = _hmac(("AWS4" + secret_key).encode("utf-8"), day)
    for part in (region, service, "aws4_request"):
        key = _hmac(key, part)
    return key


def signature_v4(
    method: str,
    url: str,
    headers: dict[str, str],
    payload_sha256: str,
    secret_key: str,
    region: str,
    service: str,
) -> tuple[str, str, str]:
    """Sign a request whose headers include host and x-amz-date. Returns the
    signature, the credential scope and the signed-headers list."""
    parts = urllib.parse.urlsplit(url)
    amz_date = {name.lower(): value for name, value in headers.items()}["x-amz-date"]
    day = amz_date[:8]
    request, signed = canonical_request(method, parts.path, parts.query, headers, payload_sha256)
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(request.encode()).hexdigest()])
    key = signing_key(secret_key, day, region, service)
    return hmac.new(key, to_sign.encode("utf-8"), hashlib.sha256).hexdigest(), scope, signed


def sign_request(
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    region: str,
    now: datetime.datetime,
) -> dict[str, str]:
    """Return the headers that sign an empty-bodied S3 request (SigV4)."""
    headers = {
        "host": urllib.parse.urlsplit(url).netloc,
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": now.strftime("%Y%m%dT%H%M%SZ"),
    }
    signature, scope, signed = signature_v4(method, url, headers, EMPTY_SHA256, secret_key, region, "s3")
    headers["Authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={signed}, Signature={signature}"
    )
    return headers


def s3_request(
    method: str,
    url: str,
    access_key: str,
    secret_key: str,
    region: str = "us-east-1",
    ca_file: str | None = None,
    attempts: int = 15,
) -> tuple[int, str]:
    """Send a signed, empty-bodied request; return the status and the body (for errors).

    503 (SlowDown, server initializing) is retried every 2 s: a distributed
    deployment whose nodes have just restarted answers it for a few seconds.
    """
    for _ in range(attempts - 1):
        status, body = _s3_request_once(method, url, access_key, secret_key, region, ca_file)
        if status != 503:
            return status, body
        time.sleep(2)
    return _s3_request_once(method, url, access_key, secret_key, region, ca_file)


def _s3_request_once(
    method: str, url: str, access_key: str, secret_key: str, region: str, ca_file: str | None
) -> tuple[int, str]:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise S3Unreachable(f"not an http(s) URL: {url}")
    headers = sign_request(method, url, access_key, secret_key, region, datetime.datetime.now(datetime.UTC))
    headers["Content-Length"] = "0"
    request = urllib.request.Request(url, data=b"" if method == "PUT" else None, method=method)  # noqa: S310
    for name, value in headers.items():
        request.add_header(name, value)
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
            return int(response.status), response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as err:
        raise S3Unreachable(str(err)) from err


def s3_error_code(body: str) -> str:
    """The <Code> of an S3 XML error body, or an empty string."""
    start = body.find("<Code>")
    end = body.find("</Code>")
    return body[start + len("<Code>") : end] if 0 <= start < end else ""


# The options every module that runs the MinIO client takes.
MCLI_ARGUMENT_SPEC: dict[str, dict[str, Any]] = {
    "mcli": {"type": "path", "required": True},
    "config_dir": {"type": "path", "required": True},
    "alias": {"type": "str", "default": "local"},
}


class McliError(Exception):
    """The MinIO client failed; the message is its own, never the input."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


# Answers of a deployment still starting up, retried like S3's 503.
MCLI_RETRY_CODES = {"XMinioServerNotInitialized", "SlowDownWrite", "SlowDownRead"}


def mcli(
    module: AnsibleModule, args: list[str], stdin: str | None = None, attempts: int = 15
) -> dict[str, Any]:
    """Run `mcli --json ARGS` and return its last JSON document.

    The caller's AnsibleModule runs it; the output is parsed here and never
    handed back whole, because some commands echo the secrets they were given.
    """
    for _ in range(attempts - 1):
        try:
            return _mcli_once(module, args, stdin)
        except McliError as err:
            if err.code not in MCLI_RETRY_CODES:
                raise
        time.sleep(2)
    return _mcli_once(module, args, stdin)


def _mcli_once(module: AnsibleModule, args: list[str], stdin: str | None) -> dict[str, Any]:
    params = module.params
    argv = [params["mcli"], "--config-dir", params["config_dir"], "--json", "--no-color", *args]
    rc, out, err = module.run_command(argv, data=stdin, binary_data=stdin is None)
    return parse_mcli_output(args, rc, out, err)


def parse_mcli_output(args: list[str], rc: int, out: str, err: str) -> dict[str, Any]:
    """The last JSON document of `mcli --json` output, or McliError with the
    client's own message and MinIO's error code when the command failed."""
    lines = [line for line in out.splitlines() if line.startswith("{")]
    try:
        doc: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except ValueError:
        doc = {}
    if rc != 0 or doc.get("status") != "success":
        cause = doc.get("error", {}).get("cause", {})
        code = cause.get("error", {}).get("Code", "")
        message = cause.get("message") or doc.get("error", {}).get("message") or err.strip() or "no output"
        raise McliError(f"mcli {' '.join(args[:3])} failed: {message}", code)
    return doc
