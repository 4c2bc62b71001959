"""Run `mlflow gc` for mlflow-gc.service: delete for good the runs and
experiments deleted longer ago than the given age, with their artifacts.

Usage: gc.py <older-than>, e.g. 30d. The backend URI, with its password, comes
from MLFLOW_BACKEND_STORE_URI (the root-only EnvironmentFile), not from a
command line, which is where `mlflow gc --backend-store-uri` would want it.
Proxied artifacts (mlflow-artifacts:/ URIs) are deleted through the local
server at MLFLOW_TRACKING_URI, as the admin when basic auth is on.
"""

from __future__ import annotations

import os
import sys

from mlflow.cli import cli


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} <older-than>")
    if "MLFLOW_AUTH_ADMIN_USERNAME" in os.environ:
        os.environ["MLFLOW_TRACKING_USERNAME"] = os.environ["MLFLOW_AUTH_ADMIN_USERNAME"]
        os.environ["MLFLOW_TRACKING_PASSWORD"] = os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"]
    uri = os.environ["MLFLOW_BACKEND_STORE_URI"]
    cli.main(args=["gc", "--backend-store-uri", uri, "--older-than", sys.argv[1]], prog_name="mlflow")


if __name__ == "__main__":
    main()
