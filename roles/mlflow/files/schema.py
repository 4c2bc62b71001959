"""Report or move the schema of MLflow's databases, with the venv of the version
that is about to serve them.

Usage: schema.py check|upgrade, with a JSON object on stdin:
{"backend_uri": ..., "auth_uri": ... or null, "db_password": ...}.
The URIs and the password come on stdin only, never on a command line.

`check` prints, for each database, its alembic revision and this version's
head, and whether it must move. `upgrade` migrates each database to the head
(MLflow's own `mlflow db upgrade` code, and the auth app's migration) and
prints the same report afterwards. Run it once, with every server stopped.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import sqlalchemy
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from mlflow.store.db import utils as tracking_db


def auth_head_and_current(engine: sqlalchemy.engine.Engine) -> tuple[str, str | None]:
    from mlflow.server.auth.db import utils as auth_db

    config = auth_db._get_alembic_config(engine.url.render_as_string(hide_password=False))
    head = ScriptDirectory.from_config(config).get_current_head()
    tables = sqlalchemy.inspect(engine).get_table_names()
    # MLflow before 3.6 kept the auth revision in alembic_version, 3.6+ in
    # alembic_version_auth: whichever the database has is its revision.
    table = "alembic_version_auth" if "alembic_version_auth" in tables else "alembic_version"
    with engine.connect() as connection:
        current = MigrationContext.configure(connection, opts={"version_table": table}).get_current_revision()
    return str(head), current


def report(backend: sqlalchemy.engine.Engine, auth: sqlalchemy.engine.Engine | None) -> dict[str, Any]:
    databases: dict[str, Any] = {}
    head = tracking_db._get_latest_schema_revision()  # type: ignore[no-untyped-call]
    current = tracking_db._get_schema_version(backend)  # type: ignore[no-untyped-call]
    # An empty database has no revision: the first server to start creates it.
    moves = current is not None and current != head
    databases["tracking"] = {"current": current, "head": head, "moves": moves}
    if auth is not None:
        auth_head, auth_current = auth_head_and_current(auth)
        databases["auth"] = {
            "current": auth_current,
            "head": auth_head,
            "moves": auth_current is not None and auth_current != auth_head,
        }
    return {"databases": databases, "moves": any(d["moves"] for d in databases.values())}


def main() -> None:
    if len(sys.argv) != 2 or sys.argv[1] not in ("check", "upgrade"):
        sys.exit(f"usage: {sys.argv[0]} check|upgrade  (JSON with the database URIs on stdin)")
    request = json.load(sys.stdin)
    # libpq reads it for the auth URI, which carries no password.
    os.environ["PGPASSWORD"] = request["db_password"]
    backend = sqlalchemy.create_engine(request["backend_uri"])
    auth = sqlalchemy.create_engine(request["auth_uri"]) if request.get("auth_uri") else None
    before = report(backend, auth)
    if sys.argv[1] == "upgrade":
        if before["databases"]["tracking"]["moves"]:
            tracking_db._upgrade_db(backend)  # type: ignore[no-untyped-call]
        if auth is not None and before["databases"]["auth"]["moves"]:
            from mlflow.server.auth.db import utils as auth_db

            auth_db.migrate(auth, "head")
        after = report(backend, auth)
        print(json.dumps({"before": before, "after": after, "changed": before["moves"]}))
        if after["moves"]:
            sys.exit("a database is still not at this version's head after the migration")
    else:
        print(json.dumps(before))


if __name__ == "__main__":
    main()
