"""Rotate the AI Gateway's key-encryption key with MLflow's own command.

The gateway stores each provider API key encrypted with a data key, wrapped by a
key derived from MLFLOW_CRYPTO_KEK_PASSPHRASE. `mlflow crypto rotate-kek`
re-wraps every data key that the old passphrase and version wrapped. It takes
the new passphrase as an argument or from a prompt; this helper runs it in its
own process instead, so that no passphrase is ever on a command line.

Usage: rotate_kek.py, with a JSON object on stdin:
{"backend_uri": ..., "old_passphrase": ..., "old_version": N, "new_passphrase": ...}.
Prints what MLflow printed (counts, never a secret).
"""

from __future__ import annotations

import json
import os
import sys

from mlflow.cli.crypto import commands


def main() -> None:
    request = json.load(sys.stdin)
    os.environ["MLFLOW_CRYPTO_KEK_PASSPHRASE"] = request["old_passphrase"]
    os.environ["MLFLOW_CRYPTO_KEK_VERSION"] = str(int(request["old_version"]))
    # The URI holds the database password: through the environment, as the
    # server gets it, not through the arguments.
    os.environ["MLFLOW_BACKEND_STORE_URI"] = request["backend_uri"]
    commands.main(
        args=["rotate-kek", "--yes", "--new-passphrase", request["new_passphrase"]],
        prog_name="mlflow crypto",
        standalone_mode=False,
    )


if __name__ == "__main__":
    main()
