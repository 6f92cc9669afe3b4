"""The integrity probe: is the database usable, beyond its schema version?

:func:`probe` is what actd, every daemon and actctl run after the schema check
(:func:`act.common.migrate.readiness_problem`, ``actctl``'s database commands). It finds what
the ``alembic_version`` row cannot show:

* on every backend, a read of each act table (``SELECT * FROM <table> LIMIT 1``: every column,
  so that SQLite reads the table's own b-tree, not a smaller covering index): a table that was
  dropped, or whose root page is damaged, is named;
* on SQLite, ``PRAGMA quick_check``: every page of the file is read and its b-tree structure
  checked (not the index contents, which ``integrity_check`` compares and which costs about
  eight times as much). It reads the whole file: about 1 s per 230 MB with a warm page cache
  on the reference machine, so it runs under a time budget (:data:`QUICK_CHECK_SECONDS`, a
  timer interrupts it): on a file too large to finish in time the check is cut
  short, which is logged at debug level and is not a problem; the table reads still ran.

The problem is one line naming the database (password hidden) and the driver's own message
("database disk image is malformed", "Unknown database 'actx'"), never SQLAlchemy's wrapper
with its "Background on this error" link.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc
from sqlalchemy.engine import Connection

from act.common.db import Database, is_unavailable, short_error
from act.common.schema import metadata

log = logging.getLogger("act.db")

#: How long ``PRAGMA quick_check`` may take before it is cut short (seconds).
QUICK_CHECK_SECONDS = 1.0


def probe(db: Database, *, quick_check_seconds: float = QUICK_CHECK_SECONDS) -> str | None:
    """None if every act table reads and (SQLite) quick_check finds nothing, else the problem
    in one line. ``quick_check_seconds`` 0 leaves quick_check out."""
    if db.sqlite_path is not None and not db.sqlite_path.exists():
        return f"database {db.safe_url}: the file does not exist"
    try:
        with db.read() as conn:
            for table in metadata.sorted_tables:
                try:
                    conn.execute(sa.select(table).limit(1)).all()
                except exc.DBAPIError as error:
                    if is_unavailable(error):
                        raise
                    return f"database {db.safe_url}: table {table.name}: {cause(db, error)}"
            if db.backend == "sqlite" and quick_check_seconds > 0:
                found = _quick_check(conn, quick_check_seconds)
                if found is not None:
                    return f"database {db.safe_url}: quick_check: {found}"
    except exc.DBAPIError as error:
        return describe(db, error)
    return None


def diagnose(db: Database, error: BaseException) -> str | None:
    """After a database error that is not an outage: what makes the database unusable, in one
    line (what the probe finds, else the error itself when its code or message means the
    database is damaged or missing: :func:`is_damage`); None when the error is a statement's
    own (a bug, a constraint), which deserves its traceback."""
    if not isinstance(error, exc.DBAPIError):
        return None
    problem = probe(db)
    if problem is None and is_damage(error):
        problem = describe(db, error)
    return problem


def describe(db: Database, error: BaseException) -> str:
    """One line for a database error: the database (password hidden) and the real cause."""
    what = "unreachable" if is_unavailable(error) else "cannot be used"
    return f"database {db.safe_url} {what}: {cause(db, error)}"


# Driver errors meaning the database itself cannot be used (not a bug in a statement):
# SQLite's messages; MariaDB/MySQL unknown database (1049), table missing (1146), access denied
# (1044, 1045), crashed or corrupt table (126, 127, 144, 145, 1194, 1195); PostgreSQL invalid
# catalog name (3D000), undefined table (42P01), authorization (28*), data corrupted (XX001, XX002).
_SQLITE_DAMAGE = ("malformed", "not a database", "no such table", "disk i/o error", "corrupt")
_MYSQL_DAMAGE = {126, 127, 144, 145, 1044, 1045, 1049, 1146, 1194, 1195}
_PG_DAMAGE = {"3D000", "42P01", "XX001", "XX002"}


def is_damage(error: BaseException) -> bool:
    """Whether a database error means the database is unusable (corrupt, missing, a table
    gone, access refused) rather than that one statement was wrong."""
    if not isinstance(error, exc.DBAPIError):
        return False
    orig = error.orig
    module = type(orig).__module__
    if module.startswith("sqlite3"):
        text = str(orig).lower()
        return any(word in text for word in _SQLITE_DAMAGE)
    if module.startswith("MySQLdb"):
        args: tuple[Any, ...] = getattr(orig, "args", ())
        return bool(args) and args[0] in _MYSQL_DAMAGE
    sqlstate = getattr(orig, "sqlstate", None) or ""
    return sqlstate in _PG_DAMAGE or sqlstate.startswith("28")


def cause(db: Database, error: BaseException) -> str:
    """The driver's message for ``error``, first line, without the password of ``db``."""
    text = short_error(error)
    password = db.url.password
    return text.replace(str(password), "***") if password else text


def _quick_check(conn: Connection, seconds: float) -> str | None:
    """``PRAGMA quick_check`` under a time budget: its first findings, or None (also when cut
    short; a damaged page it did reach raises, which is a finding too).

    The budget is kept by ``sqlite3_interrupt`` from a timer: the check is a single step of
    SQLite's virtual machine, so a progress handler would only see it end."""
    raw: Any = conn.connection.driver_connection
    timer = threading.Timer(seconds, raw.interrupt)
    timer.start()
    try:
        rows = conn.exec_driver_sql("PRAGMA quick_check(5)").scalars().all()
    except exc.DBAPIError as error:
        if "interrupted" in str(error.orig):
            log.debug("quick_check cut short after %.1fs (a large file)", seconds)
            return None
        return short_error(error)
    finally:
        timer.cancel()
    if rows == ["ok"]:
        return None
    return "; ".join(" ".join(str(row).split()) for row in rows)[:300]
