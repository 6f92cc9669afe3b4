"""Check that statements are served by an index: capture what runs, EXPLAIN it per backend."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from act.common.db import Database

Captured = list[tuple[str, Any]]


@contextmanager
def capture(db: Database) -> Iterator[Captured]:
    """Record the SELECT/UPDATE/DELETE statements run on ``db`` inside the block."""
    seen: Captured = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if (
            re.match(r"\s*(SELECT|UPDATE|DELETE)\b", statement, re.IGNORECASE)
            and "alembic_version" not in statement
        ):
            seen.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", record)


def analyze(db: Database, tables: list[str]) -> None:
    with db.engine.connect() as plain:
        conn = plain.execution_options(isolation_level="AUTOCOMMIT")
        for table in tables:
            if db.backend == "mysql":
                conn.exec_driver_sql(f"ANALYZE TABLE {table}").all()
            else:
                conn.exec_driver_sql(f"ANALYZE {table}")


def full_scans(db: Database, statements: Captured, tables: set[str]) -> list[str]:
    """The statements whose plan reads a whole table (or a whole index) of ``tables``."""
    bad = []
    with db.engine.connect() as conn:
        for statement, parameters in statements:
            plan = _plan(conn, db.backend, statement, parameters)
            scans = _full_scans(db.backend, plan, tables)
            if scans:
                bad.append(f"{' '.join(statement.split())}\n  plan: {plan}")
    return bad


def _plan(conn: sa.Connection, backend: str, statement: str, parameters: Any) -> str:
    if backend == "sqlite":
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
        return " | ".join(str(row[-1]) for row in rows)
    if backend == "postgresql":
        with conn.begin():
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            rows = conn.exec_driver_sql("EXPLAIN " + statement, parameters).all()
        return " | ".join(str(row[0]).strip() for row in rows)
    mapped = conn.exec_driver_sql("EXPLAIN " + statement, parameters).mappings().all()
    return " | ".join(f"{r['table']}:{r['type']}:{r['key']}" for r in mapped)


def _full_scans(backend: str, plan: str, tables: set[str]) -> list[str]:
    found = []
    for table in tables:
        if backend == "sqlite":
            if re.search(rf"\bSCAN {table}\b", plan):
                found.append(table)
        elif backend == "postgresql":
            # With sequential scans disabled, one still in the plan means no index could serve;
            # an index scan without an Index Cond reads the whole index.
            nodes = re.split(r"\| ->|^", plan)
            for node in nodes:
                if re.search(
                    rf"(Seq Scan on {table}\b)|(Index (Only )?Scan using \S+ on "
                    rf"{table}\b(?!.*Index Cond))",
                    node,
                ):
                    found.append(table)
        elif re.search(rf"\b{table}:(ALL|index):", plan):
            found.append(table)
    return found
