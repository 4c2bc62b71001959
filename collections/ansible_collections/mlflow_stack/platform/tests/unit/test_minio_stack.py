"""Unit tests of the shared module code: the SigV4 signer against AWS's
published examples, the S3 and MinIO client error parsing, and the policy
normaliser that decides whether a policy changed."""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest
from ansible_collections.mlflow_stack.platform.plugins.module_utils.minio_stack import (
    EMPTY_SHA256,
    McliError,
    canonical_query,
    canonical_request,
    parse_mcli_output,
    s3_error_code,
    sign_request,
    signature_v4,
    signing_key,
)
from ansible_collections.mlflow_stack.platform.plugins.modules.minio_policy import normalize

# The credentials of AWS's Signature Version 4 test suite ...
SUITE_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"  # noqa: S105 (published example key)
# ... and of the Amazon S3 API reference's SigV4 examples (bucket examplebucket).
S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"  # noqa: S105 (published example key)
S3_DATE = "20130524T000000Z"
S3_HOST = "examplebucket.s3.amazonaws.com"


def test_signing_key_of_the_documented_derivation_example() -> None:
    """AWS's "deriving the signing key" example (IAM, 2012-02-15)."""
    key = signing_key(SUITE_SECRET, "20120215", "us-east-1", "iam")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


@pytest.mark.parametrize(
    ("case", "method", "url", "signature"),
    [
        (
            "get-vanilla",
            "GET",
            "https://example.amazonaws.com/",
            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
        ),
        (
            "get-vanilla-query-order-key-case",
            "GET",
            "https://example.amazonaws.com/?Param2=value2&Param1=value1",
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
        ),
        (
            "post-vanilla",
            "POST",
            "https://example.amazonaws.com/",
            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
        ),
    ],
)
def test_aws_signature_v4_test_suite(case: str, method: str, url: str, signature: str) -> None:
    """Cases of AWS's SigV4 test suite: service 'service', us-east-1, 2015-08-30."""
    headers = {"Host": "example.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}
    got, scope, signed = signature_v4(
        method, url, headers, EMPTY_SHA256, SUITE_SECRET, "us-east-1", "service"
    )
    assert (got, scope, signed) == (
        signature,
        "20150830/us-east-1/service/aws4_request",
        "host;x-amz-date",
    ), case


def test_s3_get_object_example_canonical_request_and_signature() -> None:
    """The S3 API reference's "GET Object" example, step by step."""
    headers = {
        "Host": S3_HOST,
        "Range": "bytes=0-9",
        "x-amz-content-sha256": EMPTY_SHA256,
        "x-amz-date": S3_DATE,
    }
    request, signed = canonical_request("GET", "/test.txt", "", headers, EMPTY_SHA256)
    assert request == (
        f"GET\n/test.txt\n\nhost:{S3_HOST}\nrange:bytes=0-9\nx-amz-content-sha256:{EMPTY_SHA256}\n"
        f"x-amz-date:{S3_DATE}\n\nhost;range;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
    )
    assert hashlib.sha256(request.encode()).hexdigest() == (
        "7344ae5b7ee6c3e7e6b0fe0640412a37625d1fbfff95c48bbb2dc43964946972"
    )
    signature, _, _ = signature_v4(
        "GET", f"https://{S3_HOST}/test.txt", headers, EMPTY_SHA256, S3_SECRET, "us-east-1", "s3"
    )
    assert signature == "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    assert signed == "host;range;x-amz-content-sha256;x-amz-date"


@pytest.mark.parametrize(
    ("url", "signature"),
    [
        # "GET Bucket Lifecycle": a query parameter without a value.
        (f"https://{S3_HOST}/?lifecycle", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"),
        # "Get Bucket (List Objects)": parameters sorted by name.
        (
            f"https://{S3_HOST}/?prefix=J&max-keys=2",
            "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
        ),
    ],
)
def test_s3_bucket_examples_with_queries(url: str, signature: str) -> None:
    headers = {"Host": S3_HOST, "x-amz-content-sha256": EMPTY_SHA256, "x-amz-date": S3_DATE}
    got, _, _ = signature_v4("GET", url, headers, EMPTY_SHA256, S3_SECRET, "us-east-1", "s3")
    assert got == signature


def test_s3_put_object_example_signs_the_payload_hash() -> None:
    """The S3 API reference's "PUT Object" example: the body's sha256 is signed,
    and the '$' of the key is percent-encoded once in the canonical URI."""
    body = b"Welcome to Amazon S3."
    payload = hashlib.sha256(body).hexdigest()
    headers = {
        "Host": S3_HOST,
        "Date": "Fri, 24 May 2013 00:00:00 GMT",
        "x-amz-date": S3_DATE,
        "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "x-amz-content-sha256": payload,
    }
    got, _, signed = signature_v4(
        "PUT", f"https://{S3_HOST}/test$file.text", headers, payload, S3_SECRET, "us-east-1", "s3"
    )
    assert signed == "date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class"
    assert got == "98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd"


def test_sign_request_builds_the_authorization_header_the_modules_send() -> None:
    now = datetime.datetime(2013, 5, 24, tzinfo=datetime.UTC)
    headers = sign_request("HEAD", "http://127.0.0.1:9000/mlflow", "mlflow-user", S3_SECRET, "us-east-1", now)
    assert headers["host"] == "127.0.0.1:9000"
    assert headers["x-amz-date"] == S3_DATE
    assert headers["x-amz-content-sha256"] == EMPTY_SHA256
    signed_headers = {name: value for name, value in headers.items() if name != "Authorization"}
    expected, _, _ = signature_v4(
        "HEAD", "http://127.0.0.1:9000/mlflow", signed_headers, EMPTY_SHA256, S3_SECRET, "us-east-1", "s3"
    )
    assert headers["Authorization"] == (
        "AWS4-HMAC-SHA256 Credential=mlflow-user/20130524/us-east-1/s3/aws4_request, "
        f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={expected}"
    )


def test_canonical_query_encodes_and_sorts() -> None:
    assert canonical_query("b=2&a=x y&a=1&c") == "a=1&a=x%20y&b=2&c="


def test_s3_error_code() -> None:
    body = "<?xml version='1.0'?><Error><Code>BucketAlreadyOwnedByYou</Code><Message>m</Message></Error>"
    assert s3_error_code(body) == "BucketAlreadyOwnedByYou"
    assert s3_error_code("") == ""
    assert s3_error_code("<Code>unterminated") == ""


def test_mcli_success_returns_the_last_document() -> None:
    out = 'not json\n{"status": "success", "step": 1}\n{"status": "success", "accessKey": "mlflow"}\n'
    assert parse_mcli_output(["admin", "user", "info"], 0, out, "") == {
        "status": "success",
        "accessKey": "mlflow",
    }


def test_mcli_error_carries_minio_code_and_message() -> None:
    doc = {
        "status": "error",
        "error": {
            "message": "Unable to get user info",
            "cause": {
                "message": "The specified user does not exist.",
                "error": {"Code": "XMinioAdminNoSuchUser"},
            },
        },
    }
    with pytest.raises(
        McliError, match="mcli admin user info failed: The specified user does not exist"
    ) as err:
        parse_mcli_output(["admin", "user", "info", "local", "x"], 1, json.dumps(doc), "")
    assert err.value.code == "XMinioAdminNoSuchUser"


@pytest.mark.parametrize(
    ("rc", "out", "err", "message"),
    [
        (1, "", "connection refused", "connection refused"),
        (1, "", "", "no output"),
        (0, "{garbled", "", "no output"),
        (0, '{"status": "error", "error": {"message": "top-level only"}}', "", "top-level only"),
    ],
)
def test_mcli_failure_without_a_cause(rc: int, out: str, err: str, message: str) -> None:
    with pytest.raises(McliError, match=message) as caught:
        parse_mcli_output(["admin", "info"], rc, out, err)
    assert caught.value.code == ""


def test_policy_normaliser_ignores_order_sid_and_scalar_lists() -> None:
    ours = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:PutObject", "s3:GetObject"], "Resource": ["arn:aws:s3:::b/*"]},
            {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b"},
        ],
    }
    minios = {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": ["arn:aws:s3:::b"]},
            {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject"], "Resource": ["arn:aws:s3:::b/*"]},
        ],
    }
    assert normalize(ours) == normalize(minios)


def test_policy_normaliser_sees_real_changes() -> None:
    base = {"Statement": {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/*"}}
    for key, value in (("Effect", "Deny"), ("Action", "s3:PutObject"), ("Resource", "arn:aws:s3:::c/*")):
        changed = {"Statement": {**base["Statement"], key: value}}
        assert normalize(changed) != normalize(base), key
    assert normalize({}) == []
