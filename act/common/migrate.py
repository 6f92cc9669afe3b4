"""Schema migrations (Alembic) and the start-up check that the schema matches the code.

The start-up check every daemon makes reads the ``alembic_version`` row with plain SQLAlchemy and
compares it with :data:`HEAD`; Alembic itself (about 0.45 s of CPU to import, with mako and
pygments) is imported only to migrate or to explain a mismatch. A test keeps :data:`HEAD` equal
to the newest migration. :func:`readiness_problem` adds the integrity probe
(:mod:`act.common.integrity`) to that check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection

from act.common import integrity
from act.common.db import Database

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPT_LOCATION = "act.common:migrations"
#: The revision this version of act needs: the newest file in act/common/migrations/versions.
HEAD = "0008"


class SchemaError(RuntimeError):
    """The database schema does not match this version of act; the message says what to run."""


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision act ships, as Alembic finds it (:data:`HEAD` says the same)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise SchemaError("act ships no migrations")
    return head


def known_revisions() -> set[str]:
    """Every revision this version of act ships."""
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def current_revision(db: Database) -> str | None:
    """The revision the database is at, or None when it has no act schema (or does not exist)."""
    if db.sqlite_path is not None and not db.sqlite_path.exists():
        return None  # do not create an empty database file just by looking
    with db.read() as conn:
        if not sa.inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    if len(rows) > 1:
        raise SchemaError(f"database {db.safe_url} has several schema heads: {sorted(rows)}")
    return rows[0] if rows else None


def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str | None]:
    """Apply migrations up to ``revision``; returns (before, after)."""
    from alembic import command

    before = current_revision(db)
    with db.engine.begin() as conn:
        command.upgrade(_config(conn), revision)
    return before, current_revision(db)


def check(db: Database) -> str:
    """Refuse to run on a schema that is older (or newer) than the code; returns the revision."""
    needed = HEAD
    found = current_revision(db)
    if found == needed:
        return found
    if found is None:
        raise SchemaError(
            f"database {db.safe_url} has no act schema: run `actctl db upgrade` to create it"
        )
    if found in known_revisions():
        raise SchemaError(
            f"database {db.safe_url} is at schema {found}, this act needs {needed}: "
            "run `actctl db upgrade`"
        )
    raise SchemaError(
        f"database {db.safe_url} is at schema {found}, which this act ({needed}) does not know: "
        "it was upgraded by a newer act; run that version"
    )


def readiness_problem(db: Database) -> str | None:
    """None if the database is reachable with a current schema and passes the integrity probe
    (:func:`act.common.integrity.probe`: each table reads, SQLite's quick_check), else what is
    wrong (one line, with the driver's own message)."""
    try:
        check(db)
    except SchemaError as error:
        return str(error)
    except exc.DBAPIError as error:
        return integrity.describe(db, error)
    return integrity.probe(db)
