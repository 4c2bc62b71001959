"""Move every resource into MLflow's default workspace, with MLflow's own command.

Turning workspaces off needs `mlflow db migrate-to-default-workspace`: it checks
that no two resources of one kind share a name across workspaces (else it stops
and names them), then moves every row into "default" in one transaction. This
helper runs the command in its own process, so that the database URI, which
holds the password, is on no command line.

Usage: workspaces.py, with {"backend_uri": ..., "dry_run": true|false} on stdin.
Prints what MLflow printed (row counts per table, or the conflicts).
"""

from __future__ import annotations

import json
import sys

from mlflow.db import commands


def main() -> None:
    request = json.load(sys.stdin)
    mode = "--dry-run" if request["dry_run"] else "--yes"
    commands.main(
        args=["migrate-to-default-workspace", request["backend_uri"], mode, "--verbose"],
        prog_name="mlflow db",
    )


if __name__ == "__main__":
    main()
