"""MLflow's AI Gateway, seen through its API: a stored provider key is readable
only where the server can decrypt it. The provider is Ollama, whose built-in
base URL is localhost:11434 on the tracking host itself; a stand-in listens
there and answers with the Authorization header it received, so an invocation
returns the decrypted key. No request leaves the host."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import requests
import testinfra.host
from mlflow.entities.gateway_endpoint import GatewayEndpointModelConfig, GatewayModelLinkageType
from mlflow.store.tracking.rest_store import RestStore
from mlflow.utils.rest_utils import MlflowHostCreds

# An OpenAI-style chat answer whose content is the Authorization header.
STAND_IN = r"""
import http.server, json
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        content = "auth=" + self.headers.get("Authorization", "")
        message = {"role": "assistant", "content": content}
        body = json.dumps({"id": "stand-in", "object": "chat.completion", "created": 0, "model": "stand-in",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.HTTPServer(("127.0.0.1", 11434), Handler).serve_forever()
"""


@contextlib.contextmanager
def stand_in_provider(host: testinfra.host.Host) -> Iterator[None]:
    """The Ollama stand-in on 127.0.0.1:11434 of a tracking host, as a transient unit."""
    host.run("systemctl stop gateway-stand-in.service")
    host.check_output(
        "systemd-run --unit=gateway-stand-in --property=DynamicUser=yes /usr/bin/python3 -c %s", STAND_IN
    )
    try:
        yield
    finally:
        host.run("systemctl stop gateway-stand-in.service")


def secrets_config(url: str, auth: tuple[str, str] | None = None) -> dict[str, Any]:
    """What the server tells admins about its gateway secrets."""
    response = requests.get(f"{url}/ajax-api/3.0/mlflow/gateway/secrets/config", auth=auth, timeout=30)
    response.raise_for_status()
    config: dict[str, Any] = response.json()
    return config


def store_key(url: str, api_key: str) -> str:
    """Store a provider key, and an endpoint that uses it; returns the endpoint's name."""
    store = RestStore(lambda: MlflowHostCreds(url))  # type: ignore[no-untyped-call]
    name = f"gw-{uuid.uuid4().hex[:8]}"
    secret = store.create_gateway_secret(
        secret_name=name, secret_value={"api_key": api_key}, provider="ollama"
    )
    model = store.create_gateway_model_definition(
        name=name, secret_id=secret.secret_id, provider="ollama", model_name="stand-in"
    )
    config = GatewayEndpointModelConfig(
        model_definition_id=model.model_definition_id, linkage_type=GatewayModelLinkageType.PRIMARY
    )
    store.create_gateway_endpoint(name=name, model_configs=[config], usage_tracking=False)
    return name


def read_key(url: str, endpoint: str) -> str:
    """Invoke the endpoint: the key the server decrypted and sent, or its error."""
    response = requests.post(
        f"{url}/gateway/{endpoint}/mlflow/invocations",
        json={"messages": [{"role": "user", "content": "which key?"}]},
        timeout=60,
    )
    if not response.ok:
        return f"HTTP {response.status_code}: {response.text[:300]}"
    content: str = response.json()["choices"][0]["message"]["content"]
    return content.removeprefix("auth=Bearer ")
