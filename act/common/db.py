"""The one database layer: engines for SQLite, MariaDB/MySQL and PostgreSQL, transactions, retries.

Callers never open connections themselves. They use

* ``with db.transaction() as conn:`` for a unit of writes (SQLite: ``BEGIN IMMEDIATE``, so a
  read-then-write transaction never fails half-way on a lock upgrade);
* ``with db.read() as conn:`` for reads;
* ``db.run(fn)`` to run ``fn(conn)`` in a write transaction, retried with backoff when the error is
  transient (deadlock, lock wait timeout, SQLite busy, lost connection) and re-raised otherwise.

Per backend:

* SQLite (the embedded default): WAL journal, ``synchronous=NORMAL``, foreign keys on, a busy
  timeout; Python's own transaction handling is switched off so that act issues BEGIN itself.
* MariaDB/MySQL through mysqlclient: utf8mb4, READ COMMITTED (fewer gap locks for the claim
  pattern), ``SELECT … FOR UPDATE SKIP LOCKED`` for claims (MariaDB ≥ 10.6, MySQL ≥ 8.0).
* PostgreSQL through psycopg 3: READ COMMITTED, SKIP LOCKED.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc
from sqlalchemy.engine import URL, Connection, Engine, make_url

from act.common.timeutil import backoff

log = logging.getLogger("act.db")

T = TypeVar("T")

#: The SQLAlchemy driver act uses for each backend when a URL names none.
DRIVERS = {"mysql": "mysqldb", "mariadb": "mysqldb", "postgresql": "psycopg", "sqlite": "pysqlite"}

# Errors meaning the server cannot be reached: an outage, to wait out rather than a bug.
# MySQL/MariaDB: can't connect (2002, 2003, 2005), gone away (2006), lost (2013, 2055), too many
# connections (1040), shutting down (1053), connection killed (1927), idle timeout (4031).
_MYSQL_GONE = {1040, 1053, 1927, 2002, 2003, 2005, 2006, 2013, 2055, 4031}
# PostgreSQL: connection exceptions (class 08), admin/crash shutdown, cannot connect now.
_PG_GONE = {"57P01", "57P02", "57P03"}
# Errors meaning "this transaction lost a race; run it again": lock wait timeout and deadlock;
# serialization failure, deadlock and lock not available.
_MYSQL_RETRY = {1205, 1213}
_PG_RETRY = {"40001", "40P01", "55P03"}


class DatabaseError(RuntimeError):
    """A database problem act cannot work around; the message says what and where."""


def normalise_url(url: str | URL) -> URL:
    """Fill in act's driver and connection defaults for a database URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in DRIVERS:
        raise DatabaseError(
            f"unsupported database {backend!r} in URL "
            f"{parsed.render_as_string(hide_password=True)}: use sqlite, mysql/mariadb or "
            "postgresql"
        )
    if "+" not in parsed.drivername:
        parsed = parsed.set(drivername=f"{backend}+{DRIVERS[backend]}")
    if backend in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


class Database:
    """An engine plus the transaction helpers every act process uses."""

    def __init__(
        self,
        url: str | URL,
        *,
        pool_size: int = 5,
        connect_timeout: float = 10.0,
        busy_timeout: float = 30.0,
        echo: bool = False,
    ) -> None:
        self.url = normalise_url(url)
        self.backend = self.url.get_backend_name()
        if self.backend == "mariadb":
            self.backend = "mysql"
        self.engine = self._make_engine(pool_size, connect_timeout, busy_timeout, echo)

    def __repr__(self) -> str:
        return f"Database({self.safe_url})"

    @property
    def sqlite_path(self) -> Path | None:
        """The database file, for SQLite on disk; None otherwise."""
        if self.backend != "sqlite" or self.url.database in (None, "", ":memory:"):
            return None
        return Path(str(self.url.database))

    @property
    def safe_url(self) -> str:
        """The URL without its password, for logs and messages."""
        return self.url.render_as_string(hide_password=True)

    def _make_engine(
        self, pool_size: int, connect_timeout: float, busy_timeout: float, echo: bool
    ) -> Engine:
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.backend == "sqlite":
            if self.sqlite_path is not None:
                try:
                    self.sqlite_path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
                except OSError as error:
                    raise DatabaseError(
                        f"cannot create the directory of SQLite database {self.sqlite_path}: "
                        f"{error.strerror}"
                    ) from None
            kwargs["connect_args"] = {"timeout": busy_timeout, "check_same_thread": False}
            engine = sa.create_engine(self.url, **kwargs)
            _setup_sqlite(engine)
            return engine
        kwargs.update(
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_pre_ping=True,
            pool_recycle=3600,
            isolation_level="READ COMMITTED",
        )
        kwargs["connect_args"] = {"connect_timeout": int(connect_timeout)}  # both drivers
        return sa.create_engine(self.url, **kwargs)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction: committed on success, rolled back on any exception."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (SQLite: deferred, so readers never take the write lock)."""
        with self.engine.connect() as plain:
            conn = plain.execution_options(act_readonly=True)
            with conn.begin():
                yield conn

    def run(
        self,
        fn: Callable[[Connection], T],
        *,
        attempts: int = 6,
        base_delay: float = 0.05,
        max_delay: float = 5.0,
    ) -> T:
        """Run ``fn(conn)`` in a write transaction, retrying transient errors with backoff."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as conn:
                    return fn(conn)
            except exc.DBAPIError as error:
                if attempt == attempts or not self.is_transient(error):
                    raise
                delay = backoff(base_delay, max_delay, attempt) * random.uniform(0.5, 1.5)
                log.warning(
                    "transient database error (attempt %d of %d, retry in %.2fs): %s",
                    attempt,
                    attempts,
                    delay,
                    short_error(error),
                )
                time.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def is_transient(self, error: BaseException) -> bool:
        """Whether retrying the whole transaction may succeed (a lost race, or an outage)."""
        if is_unavailable(error):
            return True
        if not isinstance(error, exc.DBAPIError):
            return False
        orig = error.orig
        if self.backend == "sqlite":
            text = str(orig).lower()
            return "locked" in text or "busy" in text
        if self.backend == "mysql":
            return _mysql_code(orig) in _MYSQL_RETRY
        return getattr(orig, "sqlstate", None) in _PG_RETRY

    def dispose(self) -> None:
        self.engine.dispose()


def is_unavailable(error: BaseException) -> bool:
    """Whether an error means the database cannot be reached at all (an outage, not a bug)."""
    if not isinstance(error, exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    orig = error.orig
    module = type(orig).__module__
    if module.startswith("MySQLdb"):
        return _mysql_code(orig) in _MYSQL_GONE
    if module.startswith("psycopg"):
        sqlstate = getattr(orig, "sqlstate", None)
        # A failed connection attempt carries no SQLSTATE at all.
        return sqlstate is None or sqlstate.startswith("08") or sqlstate in _PG_GONE
    if module.startswith("sqlite3"):
        return "unable to open database file" in str(orig)
    return isinstance(error, exc.OperationalError | exc.InterfaceError)


def _mysql_code(orig: BaseException | None) -> int | None:
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def short_error(error: BaseException) -> str:
    """The first line of a database error's message, for one-line log entries."""
    text = str(getattr(error, "orig", error)) or type(error).__name__
    return text.splitlines()[0][:300]


def _setup_sqlite(engine: Engine) -> None:
    """WAL, foreign keys, and act's own BEGIN (IMMEDIATE for writes, deferred for reads)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let act emit BEGIN/COMMIT itself
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        readonly = conn.get_execution_options().get("act_readonly", False)
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def upsert(
    conn: Connection, table: sa.Table, key: sa.Column[Any], name: Any, values: dict[str, Any]
) -> None:
    """Update the row of ``table`` whose ``key`` is ``name`` with ``values``, inserting it when
    there is none (a concurrent insert of the same row is met by updating it)."""
    where = key == name
    if conn.execute(sa.update(table).where(where).values(**values)).rowcount:
        return
    try:
        with conn.begin_nested():
            conn.execute(sa.insert(table).values({key.name: name, **values}))
    except exc.IntegrityError:  # another process inserted it in between
        conn.execute(sa.update(table).where(where).values(**values))
