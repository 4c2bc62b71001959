#!/usr/bin/python
"""Check models to serve against an MLflow registry, read-only.

For each entry of mlflow_serving_models: the registered model exists, its
alias or version exists, the version's files are reachable through the
tracking server (proxied artifacts), and they are an MLflow model (an MLmodel
at the root). Every problem is collected and returned, each naming its entry,
so that one run shows all there is to fix. It asks the tracking server's REST
API as any client does, from the standard library only.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: mlflow_models_check
short_description: Resolve models to serve in an MLflow registry and report every problem.
description:
  - Read-only GET requests to the tracking server's REST API (registered-models/get,
    registered-models/alias or model-versions/get, model-versions/get-download-uri,
    and the artifact listing of the version).
options:
  tracking_uri:
    description: The tracking server's http(s) URL.
    type: str
    required: true
  username:
    description: Basic-auth user (with auth on); empty for none.
    type: str
    default: ""
  password:
    description: Its password.
    type: str
    default: ""
    no_log: true
  ca_path:
    description: CA bundle that signs the tracking server's certificate.
    type: path
  models:
    description: The entries (name, model_uri, port, workers, environment).
    type: list
    elements: dict
    required: true
  default_workers:
    description: Workers of an entry that names none.
    type: int
    default: 1
author: mlflow-stack
"""

EXAMPLES = r"""
- name: Ask the registry for each model's version and files
  mlflow_stack.platform.mlflow_models_check:
    tracking_uri: http://tracking.example:5000
    models:
      - {name: churn, model_uri: "models:/churn@champion", port: 5050}
  register: checked
"""

RETURN = r"""
pins:
  description: The entries that resolved, each with model, alias, version (the one it resolves to now),
    workers and environment.
  type: list
  returned: always
problems:
  description: One sentence per problem, naming its entry.
  type: list
  returned: always
"""

URI = re.compile(r"^models:/(?P<model>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_-]+)|/(?P<version>[1-9][0-9]*))$")
# Where the serving hosts can read a version's files: through the tracking server.
PROXIED = re.compile(r"^(mlflow-artifacts|runs):/")


class Refused(Exception):
    """The tracking server refused the serving tier's login (401) or its reads (403)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


# GET path (with query) -> (HTTP status, JSON body).
Get = Callable[[str], tuple[int, dict[str, Any]]]


def entry_of(item: dict[str, Any], default_workers: int) -> dict[str, Any]:
    """The entry with its model URI taken apart."""
    match = URI.match(str(item.get("model_uri", "")))
    parts = match.groupdict() if match else {"model": "", "alias": None, "version": None}
    return {
        **item,
        "model": parts["model"],
        "alias": parts["alias"] or "",
        "version": parts["version"] or "",
        "workers": item.get("workers", default_workers),
        "environment": item.get("environment", {}),
    }


def listing_path(artifact_uri: str) -> str:
    """The API path that lists the files at the root of a version's artifact URI."""
    if artifact_uri.startswith("runs:/"):
        run, _, path = artifact_uri[len("runs:/") :].partition("/")
        query = urllib.parse.urlencode({"run_id": run, "path": path})
        return f"/api/2.0/mlflow/artifacts/list?{query}"
    path = re.sub(r"^mlflow-artifacts:/+", "", artifact_uri)
    return f"/api/2.0/mlflow-artifacts/artifacts?{urllib.parse.urlencode({'path': path})}"


def check(models: list[dict[str, Any]], get: Get, tracking_uri: str, default_workers: int) -> dict[str, Any]:
    pins: list[dict[str, Any]] = []
    problems: list[str] = []
    for entry in (entry_of(item, default_workers) for item in models):
        uri, name, model = entry["model_uri"], entry["name"], entry["model"]
        quoted = urllib.parse.quote(model, safe="")
        status, _ = get(f"/api/2.0/mlflow/registered-models/get?name={quoted}")
        if status != 200:
            problems.append(
                f"'{uri}' ({name}) names model '{model}', which the registry at {tracking_uri} does not have"
            )
            continue
        if entry["alias"]:
            alias = urllib.parse.quote(entry["alias"], safe="")
            status, body = get(f"/api/2.0/mlflow/registered-models/alias?alias={alias}&name={quoted}")
            missing = f"alias '{entry['alias']}'"
        else:
            status, body = get(f"/api/2.0/mlflow/model-versions/get?version={entry['version']}&name={quoted}")
            missing = f"version {entry['version']}"
        if status != 200:
            problems.append(f"'{uri}' ({name}): model '{model}' has no {missing}")
            continue
        pin = {**entry, "version": str(body["model_version"]["version"])}
        pins.append(pin)
        status, body = get(
            f"/api/2.0/mlflow/model-versions/get-download-uri?name={quoted}&version={pin['version']}"
        )
        if status != 200:
            problems.append(
                f"version {pin['version']} of model '{model}' ({name}): the registry gave no download URI"
            )
            continue
        artifact_uri = str(body.get("artifact_uri", ""))
        if not PROXIED.match(artifact_uri):
            problems.append(
                f"version {pin['version']} of model '{model}' ({name}) is stored at {artifact_uri},"
                " which the serving hosts cannot reach through the tracking server: run it with proxied"
                " artifacts (mlflow_artifacts_mode: proxied)"
            )
            continue
        status, body = get(listing_path(artifact_uri))
        files = (
            [str(f.get("path", "")).rsplit("/", 1)[-1] for f in body.get("files", [])]
            if status == 200
            else []
        )
        if "MLmodel" not in files:
            problems.append(
                f"version {pin['version']} of model '{model}' ('{uri}', {name}) has no MLmodel at"
                f" {artifact_uri}: it is not an MLflow model"
            )
    return {"pins": pins, "problems": problems}


def http_get(tracking_uri: str, username: str, password: str, ca_path: str | None) -> Get:
    base = tracking_uri.strip().rstrip("/")
    if not base.startswith(("http://", "https://")):
        raise ValueError(f"not an http(s) URL: {base}")
    context = ssl.create_default_context(cafile=ca_path) if ca_path else None
    headers = {"Accept": "application/json"}
    if username:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"

    def get(path: str) -> tuple[int, dict[str, Any]]:
        # http(s) only: the scheme was checked above.
        request = urllib.request.Request(base + path, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            # 400 and 404 are the registry's "no such" answers; others fail the run.
            if error.code in (400, 404):
                return error.code, {}
            if error.code in (401, 403):
                raise Refused(error.code) from error
            raise

    return get


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "tracking_uri": {"type": "str", "required": True},
            "username": {"type": "str", "default": ""},
            "password": {"type": "str", "default": "", "no_log": True},
            "ca_path": {"type": "path"},
            "models": {"type": "list", "elements": "dict", "required": True},
            "default_workers": {"type": "int", "default": 1},
        },
        supports_check_mode=True,
    )
    params = module.params
    get = http_get(params["tracking_uri"], params["username"], params["password"], params["ca_path"])
    try:
        result = check(params["models"], get, params["tracking_uri"].strip(), params["default_workers"])
    except Refused as refused:
        module.fail_json(
            msg=f"mlflow_serving_tracking_username: the registry at {params['tracking_uri']} answered"
            f" {refused.status} to '{params['username']}' (mlflow_serving_tracking_password): "
            + ("the login failed" if refused.status == 401 else "the user may not read the registered models")
        )
    except (urllib.error.URLError, OSError, ValueError) as error:
        module.fail_json(
            msg=f"mlflow_serving_tracking_uri: the registry at {params['tracking_uri']} did not answer:"
            f" {error}",
        )
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
