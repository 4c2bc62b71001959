"""Downloads one registered model version through the tracking server.

Run as root with the system's python3 (the standard library only: no venv is
needed before the model's own), the settings as JSON on stdin, so that the
tracking password is never on a command line:

  {"tracking_uri": ..., "username": ..., "password": ..., "ca_bundle": ...,
   "name": "<registered model>", "version": "<version>",
   "dest": "<the directory this version's files go to>",
   "group": "<the group the model services read it with>"}

The files come over MLflow's REST API as any client's do: the version's
download URI, then the proxied artifact API (mlflow-artifacts), which lists
and serves them. The directory is complete once it exists: the download goes
to a temporary sibling first. Prints one JSON object: the directory, whether
it was downloaded now, and the version's requirements. Errors exit 1 with a
message on stderr that says what is wrong.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, BinaryIO


class ResolveError(Exception):
    pass


class Registry:
    """The tracking server's REST API, with basic auth and a CA when given."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.base = str(settings["tracking_uri"]).rstrip("/")
        if not self.base.startswith(("http://", "https://")):
            raise ResolveError(f"the tracking URI {self.base} is not an http(s) URL")
        self.headers: dict[str, str] = {}
        if settings.get("username"):
            token = f"{settings['username']}:{settings['password']}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(token).decode()
        self.context = ssl.create_default_context(cafile=settings.get("ca_bundle") or None)

    def open(self, path: str, query: dict[str, str] | None = None) -> BinaryIO:
        url = f"{self.base}/api/2.0/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        # http(s) only: checked in __init__.
        request = urllib.request.Request(url, headers=self.headers)  # noqa: S310
        try:
            response: BinaryIO = urllib.request.urlopen(request, timeout=60, context=self.context)  # noqa: S310
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:300]
            raise ResolveError(f"GET {path}: HTTP {error.code} {detail}") from error
        except urllib.error.URLError as error:
            raise ResolveError(f"cannot reach {self.base}: {error.reason}") from error
        return response

    def get(self, path: str, query: dict[str, str]) -> dict[str, Any]:
        with self.open(path, query) as response:
            result: dict[str, Any] = json.load(response)
        return result

    def artifact_path(self, name: str, version: str) -> str:
        """The version's files as a path of the proxied artifact API."""
        uri = str(
            self.get("mlflow/model-versions/get-download-uri", {"name": name, "version": version})[
                "artifact_uri"
            ]
        )
        if uri.startswith("runs:/"):
            run_id, _, sub = uri[len("runs:/") :].partition("/")
            run = self.get("mlflow/runs/get", {"run_id": run_id})
            uri = str(run["run"]["info"]["artifact_uri"]).rstrip("/") + "/" + sub.strip("/")
        if not uri.startswith("mlflow-artifacts:/"):
            raise ResolveError(
                f"version {version} of model '{name}' is stored at {uri}, which only the tracking "
                "server's own artifact proxy can serve here: the tracking tier must run with "
                "proxied artifacts (mlflow_artifacts_mode: proxied)"
            )
        return uri[len("mlflow-artifacts:") :].lstrip("/").rstrip("/")

    def files(self, path: str) -> list[str]:
        """Every file under `path`, relative to it."""
        found: list[str] = []
        pending = [""]
        while pending:
            sub = pending.pop()
            listing = self.get("mlflow-artifacts/artifacts", {"path": f"{path}/{sub}".rstrip("/")})
            for entry in listing.get("files", []):
                relative = f"{sub}/{Path(entry['path']).name}".lstrip("/")
                (pending if entry.get("is_dir") else found).append(relative)
        return sorted(found)

    def download(self, path: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        quoted = urllib.parse.quote(path)
        with self.open(f"mlflow-artifacts/artifacts/{quoted}") as response, target.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)


def fetch(settings: dict[str, Any]) -> dict[str, Any]:
    name, version = str(settings["name"]), str(settings["version"])
    target = Path(settings["dest"])
    downloaded = False
    if not (target / "MLmodel").is_file():
        registry = Registry(settings)
        root = registry.artifact_path(name, version)
        files = registry.files(root)
        if "MLmodel" not in files:
            raise ResolveError(f"version {version} of model '{name}' has no MLmodel: not an MLflow model")
        target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
        try:
            for relative in files:
                registry.download(f"{root}/{relative}", staging / relative)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        downloaded = True
        # root owns the files; the services read them through their group.
        group = str(settings["group"])
        for entry in [target, *target.rglob("*")]:
            shutil.chown(entry, "root", group)
            os.chmod(entry, 0o750 if entry.is_dir() else 0o640)
    requirements = target / "requirements.txt"
    lines = requirements.read_text(encoding="utf-8").splitlines() if requirements.is_file() else []
    return {
        "dir": str(target),
        "downloaded": downloaded,
        "requirements": [line.strip() for line in lines if line.strip() and not line.startswith(("#", "-"))],
    }


def main() -> None:
    settings: dict[str, Any] = json.load(sys.stdin)
    os.umask(0o027)
    try:
        result = fetch(settings)
    except ResolveError as error:
        sys.exit(f"models:/{settings.get('name')}/{settings.get('version')}: {error}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
