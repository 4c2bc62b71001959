"""Set the MLflow basic-auth admin's password to the configured one.

MLflow uses MLFLOW_AUTH_ADMIN_PASSWORD only when it creates the admin user, so
a password changed in vault later would never reach the auth database. The role
runs this with the server's own venv when the configured password is refused.

Usage: set_admin_password.py <basic_auth.ini>, with a JSON object on stdin:
{"username": ..., "password": ..., "db_password": ...}. The secrets come on
stdin only: Ansible writes a task's `environment` onto the command line, where
`ps` would show it.
"""

from __future__ import annotations

import json
import os
import sys

from mlflow.server.auth.config import read_auth_config
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} <basic_auth.ini>  (JSON credentials on stdin)")
    request = json.load(sys.stdin)
    os.environ["MLFLOW_AUTH_CONFIG_PATH"] = sys.argv[1]
    # libpq reads it when SQLAlchemy connects; the ini file holds no password.
    os.environ["PGPASSWORD"] = request["db_password"]
    config = read_auth_config()
    store = SqlAlchemyStore()
    store.init_db(config.database_uri)  # type: ignore[no-untyped-call]
    store.update_user(request["username"], password=request["password"], is_admin=True)
    print(f"password of {request['username']} updated")


if __name__ == "__main__":
    main()
