"""Where a deployed stack is, and how a client talks to it: one place for the
lab's client settings (scripts/lab writes .lab/env with it), the benchmark
(bench/) and the tests.

What a host runs is read from the local facts the roles publish after each
converge (ansible_local.mlflow, ansible_local.haproxy), never parsed out of
rendered unit or configuration files.

    python scripts/stack_client.py env --tracking-uri URI --s3-endpoint URL \\
        --secrets .lab/secrets.yml [--no-direct-multipart]
prints the client settings as an env file to source.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import shlex
from collections.abc import Callable, Sequence
from typing import Any

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[1]
FACTS_DIR = "/etc/ansible/facts.d"
# Uploads from this size up go from the client to MinIO through presigned URLs,
# in parallel parts, instead of through a server worker (MLflow's own threshold
# is 500 MB): docs/performance.md.
DIRECT_MULTIPART_MINIMUM = 64 << 20

# Runs an argv on the host in question and returns its stdout (docker exec,
# testinfra, ssh: the caller's choice).
Runner = Callable[[Sequence[str]], str]


@dataclasses.dataclass(frozen=True)
class Tracking:
    """A tracking host as roles/mlflow/tasks/state.yml records it."""

    version: str
    venv: str
    port: int
    workers: int
    database: str
    artifacts_destination: str
    s3_endpoint: str
    kek_version: int
    workspaces: bool


@dataclasses.dataclass(frozen=True)
class Balancer:
    """A load balancer as roles/haproxy/tasks/service.yml records it."""

    admin_socket: str
    mlflow_port: int
    s3_port: int | None


def local_fact(run: Runner, name: str) -> dict[str, Any]:
    path = f"{FACTS_DIR}/{name}.fact"
    try:
        text = run(["cat", path])
        fact: dict[str, Any] = json.loads(text)
    except Exception as error:
        raise RuntimeError(
            f"cannot read {path} ({error}): the {name} role writes it on every converge;"
            " run site.yml on this host again"
        ) from error
    return fact


def tracking(run: Runner) -> Tracking:
    """What the tracking server on this host runs."""
    fact = local_fact(run, "mlflow")
    return Tracking(**{field.name: fact[field.name] for field in dataclasses.fields(Tracking)})


def balancer(run: Runner) -> Balancer:
    """Where HAProxy on this host listens, and its runtime API."""
    fact = local_fact(run, "haproxy")
    return Balancer(**{field.name: fact[field.name] for field in dataclasses.fields(Balancer)})


# Runs on the load balancer with its own python3 (socat is not installed):
# one command to HAProxy's runtime API, the answer to stdout.
RUNTIME_API = """
import socket, sys
with socket.socket(socket.AF_UNIX) as s:
    s.connect(sys.argv[1])
    s.sendall(sys.argv[2].encode() + b"\\n")
    chunks = iter(lambda: s.recv(65536), b"")
    sys.stdout.write(b"".join(chunks).decode())
"""


def runtime_api(run: Runner, balancer: Balancer, command: str) -> str:
    """HAProxy's answer to one runtime API command (e.g. `show servers state
    mlflow_tracking`), through the socket the haproxy role publishes."""
    answer = run(["python3", "-c", RUNTIME_API, balancer.admin_socket, command])
    if not answer.strip():
        raise RuntimeError(f"HAProxy's runtime API gave no answer to {command!r}")
    return answer


def lab_secrets(path: pathlib.Path) -> dict[str, str]:
    """The site's vault values (the lab's .lab/secrets.yml)."""
    values: dict[str, Any] = yaml.safe_load(path.read_text()) or {}
    return {str(key): str(value) for key, value in values.items()}


def client_settings(
    tracking_uri: str,
    s3_endpoint: str | None = None,
    secrets: dict[str, str] | None = None,
    direct_multipart: bool = True,
) -> dict[str, str]:
    """The environment an MLflow client needs. With the S3 endpoint and the
    secrets: MLflow's own keys, limited to its bucket (direct artifact access).
    direct_multipart: large uploads go straight to MinIO through presigned
    URLs, which name MinIO as the tracking server reaches it; a client that
    cannot reach that address streams through MLflow instead."""
    settings = {"MLFLOW_TRACKING_URI": tracking_uri}
    if s3_endpoint:
        settings["MLFLOW_S3_ENDPOINT_URL"] = s3_endpoint
    if secrets:
        settings["AWS_ACCESS_KEY_ID"] = secrets["vault_minio_mlflow_access_key"]
        settings["AWS_SECRET_ACCESS_KEY"] = secrets["vault_minio_mlflow_secret_key"]
    settings.update(multipart_settings(direct_multipart))
    return settings


def multipart_settings(direct: bool) -> dict[str, str]:
    if direct:
        return {
            "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "true",
            "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(DIRECT_MULTIPART_MINIMUM),
        }
    return {
        "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "false",
        "MLFLOW_ENABLE_PROXY_MULTIPART_DOWNLOAD": "false",
    }


def env_file(settings: dict[str, str]) -> str:
    lines = ["# MLflow client settings: source this file."]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in settings.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    env = commands.add_parser("env", help="print the client settings as an env file")
    env.add_argument("--tracking-uri", required=True)
    env.add_argument("--s3-endpoint")
    env.add_argument("--secrets", type=pathlib.Path, help="the site's vault values (secrets.yml)")
    env.add_argument(
        "--no-direct-multipart", action="store_true", help="stream large artifacts through MLflow"
    )
    args = parser.parse_args()
    secrets = lab_secrets(args.secrets) if args.secrets else None
    print(
        env_file(client_settings(args.tracking_uri, args.s3_endpoint, secrets, not args.no_direct_multipart)),
        end="",
    )


if __name__ == "__main__":
    main()
