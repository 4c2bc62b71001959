"""Set the MLflow basic-auth admin's password to the configured one.

MLflow uses MLFLOW_AUTH_ADMIN_PASSWORD only when it creates the admin user, so
a password changed in vault later would never reach the auth database. The role
runs this with the server's own venv when the configured password is refused.
Everything comes from the environment: nothing secret is an argument.
"""

from __future__ import annotations

import os

from mlflow.server.auth.config import read_auth_config
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore


def main() -> None:
    config = read_auth_config()
    store = SqlAlchemyStore()
    store.init_db(config.database_uri)  # type: ignore[no-untyped-call]
    username = os.environ["MLFLOW_AUTH_ADMIN_USERNAME"]
    store.update_user(username, password=os.environ["MLFLOW_AUTH_ADMIN_PASSWORD"], is_admin=True)
    print(f"password of {username} updated")


if __name__ == "__main__":
    main()
