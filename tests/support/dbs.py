"""Throw-away databases on the three backends, for tests and benchmarks.

``ACT_TEST_BACKENDS`` (default ``sqlite,mariadb,postgresql``) lists the backends to use; a listed
backend that cannot be reached is an error, never a skip. ``ACT_TEST_MYSQL_URL`` and
``ACT_TEST_PG_URL`` point at the servers (defaults: root@127.0.0.1:3306, postgres@127.0.0.1:5432).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from act.common import migrate
from act.common.db import Database

BACKENDS = [
    b.strip()
    for b in os.environ.get("ACT_TEST_BACKENDS", "sqlite,mariadb,postgresql").split(",")
    if b.strip()
]
SERVERS = {
    "mariadb": os.environ.get("ACT_TEST_MYSQL_URL", "mysql+mysqldb://root@127.0.0.1:3306/"),
    "postgresql": os.environ.get(
        "ACT_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    ),
}


class BackendUnavailable(RuntimeError):
    pass


def _admin(backend: str) -> sa.Engine:
    return sa.create_engine(SERVERS[backend], isolation_level="AUTOCOMMIT", pool_size=1)


@contextmanager
def fresh_database(backend: str, workdir: Path, *, migrated: bool = True) -> Iterator[URL]:
    """A new, empty database (with act's schema if ``migrated``), dropped afterwards."""
    name = f"act_t_{secrets.token_hex(5)}"
    if backend == "sqlite":
        url = make_url(f"sqlite:///{workdir / (name + '.db')}")
        admin = None
    elif backend in SERVERS:
        admin = _admin(backend)
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
        except sa.exc.OperationalError as error:
            raise BackendUnavailable(
                f"{backend} at {make_url(SERVERS[backend]).render_as_string()} is unreachable "
                f"({str(error.orig).strip()}). Start it (tests/harness/ensure-databases) or "
                "leave it out of ACT_TEST_BACKENDS."
            ) from None
        url = make_url(SERVERS[backend]).set(database=name)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    try:
        if migrated:
            db = Database(url)
            migrate.upgrade(db)
            db.dispose()
        yield url
    finally:
        if admin is not None:
            with admin.connect() as conn:
                force = " WITH (FORCE)" if backend == "postgresql" else ""
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
            admin.dispose()


def url_text(url: URL) -> str:
    """The URL as a string a child process can use (with its password)."""
    return url.render_as_string(hide_password=False)
