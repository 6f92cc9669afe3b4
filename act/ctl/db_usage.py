"""``actctl db usage``: rows per act table and the space the database takes, per backend.

* SQLite: the database file, its WAL and shared-memory files, the page size, page count and
  free pages, and each table's bytes (with its indexes) from the ``dbstat`` virtual table when
  SQLite was built with it (it reads every page: about as long as ``quick_check``).
* MariaDB/MySQL: ``information_schema.tables``, data plus index length (InnoDB's own figures,
  updated by its statistics, not at each write).
* PostgreSQL: ``pg_total_relation_size`` of each table (data, indexes and TOAST) and
  ``pg_database_size`` of the whole database.

Rows are counted with ``COUNT(*)``, exact, so on tables of millions of rows this takes seconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.db import Database
from act.common.schema import metadata
from act.ctl import output
from act.ctl.options import json_flag


def usage(db: Database) -> dict[str, Any]:
    """What ``actctl db usage`` shows, as JSON-ready data."""
    tables = sorted(metadata.tables)
    with db.read() as conn:
        rows = {
            name: int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(metadata.tables[name])
                ).scalar_one()
            )
            for name in tables
        }
        if db.backend == "sqlite":
            sizes, extra = _sqlite(db, conn)
        elif db.backend == "mysql":
            sizes, extra = _mysql(conn, tables)
        else:
            sizes, extra = _postgresql(conn, tables)
    return {
        "database": db.safe_url,
        "backend": db.backend,
        "tables": [
            {"table": name, "rows": rows[name], "bytes": sizes.get(name)} for name in tables
        ],
        **extra,
    }


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


def _sqlite(db: Database, conn: Connection) -> tuple[dict[str, int], dict[str, Any]]:
    def pragma(name: str) -> int:
        return int(conn.exec_driver_sql(f"PRAGMA {name}").scalar_one())

    page_size = pragma("page_size")
    extra: dict[str, Any] = {
        "page_size": page_size,
        "page_count": pragma("page_count"),
        "freelist_count": pragma("freelist_count"),
    }
    path = db.sqlite_path
    if path is not None:
        files = {kind: _file_size(f"{path}{suffix}") for kind, suffix in FILES}
        extra.update(files=files, total_bytes=sum(files.values()))
    sizes: dict[str, int] = {}
    try:
        owners: dict[str, str] = {
            str(name): str(table)
            for name, table in conn.exec_driver_sql(
                "SELECT name, tbl_name FROM sqlite_master WHERE tbl_name != ''"
            )
        }
        for name, size in conn.exec_driver_sql(
            "SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"
        ):
            table = owners.get(str(name), str(name))
            sizes[table] = sizes.get(table, 0) + int(size)
        extra["dbstat"] = True
    except sa.exc.OperationalError:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
        extra["dbstat"] = False
    return sizes, extra


#: The files of an SQLite database: the file itself, its write-ahead log and shared memory.
FILES = (("file", ""), ("wal", "-wal"), ("shm", "-shm"))


def _mysql(conn: Connection, tables: list[str]) -> tuple[dict[str, int], dict[str, Any]]:
    found = conn.execute(
        sa.text(
            "SELECT table_name, COALESCE(data_length, 0) + COALESCE(index_length, 0) "
            "FROM information_schema.tables WHERE table_schema = DATABASE()"
        )
    )
    sizes = {str(name): int(size) for name, size in found if name in tables}
    return sizes, {"total_bytes": sum(sizes.values())}


def _postgresql(conn: Connection, tables: list[str]) -> tuple[dict[str, int], dict[str, Any]]:
    sizes = {}
    for name in tables:
        size = conn.execute(
            sa.text("SELECT pg_total_relation_size(to_regclass(:name))"), {"name": name}
        ).scalar_one()
        if size is not None:
            sizes[name] = int(size)
    total = conn.execute(sa.text("SELECT pg_database_size(current_database())")).scalar_one()
    return sizes, {"total_bytes": int(total)}


def human(size: int | None) -> str:
    """``size`` bytes as a short text (1.5 MiB)."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def text(found: dict[str, Any]) -> str:
    lines = [f"database {found['database']} ({found['backend']})"]
    rows = [(t["table"], t["rows"], human(t["bytes"])) for t in found["tables"]]
    lines.append(output.table(rows, ("table", "rows", "size")))
    if "files" in found:
        files = ", ".join(f"{kind} {human(size)}" for kind, size in found["files"].items())
        lines.append(f"files: {files}")
    if "page_count" in found:
        lines.append(
            f"pages: {found['page_count']} of {found['page_size']} bytes, "
            f"{found['freelist_count']} free"
            + ("" if found["dbstat"] else " (no per-table sizes: SQLite built without dbstat)")
        )
    if "total_bytes" in found:
        lines.append(f"total: {human(found['total_bytes'])}")
    return "\n".join(lines)


def register(db_group: click.Group, pass_app: Callable[..., Any]) -> None:
    """Add ``db usage`` to actctl's ``db`` group."""

    @db_group.command("usage")
    @json_flag("a table")
    @pass_app
    def usage_command(app: Any, as_json: bool) -> None:
        """Rows per act table and the size on disk (exact row counts: slow on large tables)."""
        found = usage(app.checked())
        click.echo(output.to_json(found) if as_json else text(found))
