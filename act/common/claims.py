"""Claiming work: an expiring lease on job rows, so two processes never work on the same row.

A claim sets ``lease_owner`` and ``lease_expires`` on rows that are free (no lease, or an expired
one). The candidate rows are locked with ``SELECT … FOR UPDATE SKIP LOCKED`` on MariaDB/MySQL and
PostgreSQL, so concurrent claimers pass each other instead of queueing; SQLite has no row locks,
and act's ``BEGIN IMMEDIATE`` makes the select-and-update atomic there. A killed process's claims
simply expire and are taken by the next claimer; a process that stops cleanly releases its claims.

With a :class:`~act.common.liveness.Shard`, a claimer only considers rows whose ``id % count ==
index``: instances of one daemon split the work without contending for it, and the lease keeps
them correct while the split changes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.liveness import Shard
from act.common.rows import R, fetch, select_of
from act.common.states import Layer, in_table_order
from act.common.timeutil import seconds, utcnow
from act.common.transitions import TABLES, chunked


def _state_led(table: sa.Table) -> list[str]:
    """Indexes that find rows by state: (state, ...) or (queue|ce_name, state, ...)."""
    names = []
    for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
        columns = [column.name for column in index.columns]
        if columns[0] == "state" or columns[1:2] == ["state"]:
            names.append(str(index.name))
    return names


_FORCE_STATE_INDEX = {
    layer: f"FORCE INDEX ({', '.join(_state_led(table))})" for layer, table in TABLES.items()
}


def claim(
    conn: Connection,
    layer: Layer,
    states: Collection[str],
    *,
    owner: str,
    lease: float,
    limit: int,
    shard: Shard | None = None,
    where: Sequence[sa.ColumnElement[bool]] = (),
    order_by: Sequence[sa.ColumnElement[object]] | None = None,
) -> list[int]:
    """Claim up to ``limit`` free rows in ``states`` for ``lease`` seconds; returns their ids.

    Rows are taken oldest first.
    """
    table = TABLES[layer]
    states = in_table_order(layer, states)  # a stable statement, whatever collection was given
    now = utcnow()
    free = sa.or_(table.c.lease_expires.is_(None), table.c.lease_expires < now)
    conditions = [free, *where]
    if shard is not None and shard.count > 1:
        conditions.append(table.c.id % shard.count == shard.index)
    order = list(order_by if order_by is not None else [table.c.id])
    mysql = conn.dialect.name in ("mysql", "mariadb")
    if mysql and len(states) > 1:
        ids = _lock_oldest_per_state(
            conn, layer, states, conditions=conditions, order=order, limit=limit
        )
    else:
        candidates = (
            _state_select(layer, table.c.state.in_(list(states)), conditions, order)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        ids = list(conn.execute(candidates).scalars())
    if not ids:
        return []
    expires = now + seconds(lease)
    # The rows are locked (or the database is, on SQLite): the update cannot lose a race. The
    # `free` condition is repeated so that a row claimed in between could never be taken over.
    result = conn.execute(
        sa.update(table)
        .where(table.c.id.in_(ids), free)
        .values(lease_owner=owner, lease_expires=expires)
    )
    if result.rowcount != len(ids):
        raise RuntimeError(f"claim: locked {len(ids)} rows but updated {result.rowcount}")
    return sorted(ids)


def claim_and_load(
    conn: Connection,
    layer: Layer,
    states: Collection[str],
    row_type: type[R],
    *,
    owner: str,
    lease: float,
    limit: int,
    shard: Shard | None = None,
    where: Sequence[sa.ColumnElement[bool]] = (),
    order_by: Sequence[sa.ColumnElement[object]] | None = None,
    select_from: sa.FromClause | None = None,
    labelled: Mapping[str, sa.ColumnElement[Any]] | None = None,
) -> list[R]:
    """:func:`claim`, then load the claimed rows as ``row_type`` on the same connection (so in
    the claim's transaction), in the claim's order (``order_by``, by default ``id``).

    ``row_type``'s fields are columns of the layer's table unless given in ``labelled`` (see
    :func:`act.common.rows.columns_of`); ``select_from`` is the join those come from, if any.
    """
    ids = claim(
        conn,
        layer,
        states,
        owner=owner,
        lease=lease,
        limit=limit,
        shard=shard,
        where=where,
        order_by=order_by,
    )
    if not ids:
        return []
    table = TABLES[layer]
    stmt = select_of(row_type, table, labelled)
    if select_from is not None:
        stmt = stmt.select_from(select_from)
    order = order_by if order_by is not None else [table.c.id]
    return fetch(conn, row_type, stmt.where(table.c.id.in_(ids)).order_by(*order))


def _state_select(
    layer: Layer,
    state: sa.ColumnElement[bool],
    conditions: Sequence[sa.ColumnElement[bool]],
    order: Sequence[sa.ColumnElement[object]],
    *columns: sa.ColumnElement[object],
) -> sa.Select[Any]:
    table = TABLES[layer]
    return (
        sa.select(table.c.id, *columns)
        .where(state, *conditions)
        .order_by(*order)
        # For "ORDER BY id LIMIT n" MariaDB's optimizer may walk the whole primary key looking
        # for matches (seen in tests/test_indexes.py, depending on ANALYZE sampling); ordering by
        # (state, id) instead makes it sort every candidate. Restrict it to the state-led indexes.
        .with_hint(table, _FORCE_STATE_INDEX[layer], "mysql")
        .with_hint(table, _FORCE_STATE_INDEX[layer], "mariadb")
    )


def _lock_oldest_per_state(
    conn: Connection,
    layer: Layer,
    states: Sequence[str],
    *,
    conditions: Sequence[sa.ColumnElement[bool]],
    order: Sequence[sa.ColumnElement[object]],
    limit: int,
) -> list[int]:
    """MariaDB, several states: one locking ``SELECT`` over all of them (``IN``, ``ORDER BY``,
    ``LIMIT``) makes InnoDB read, lock and sort every candidate row of those states (0.5-0.9 s
    at 1M jobs, see benchmarks/RESULTS.md). Instead, read the ``limit`` first of each state
    along its index without locks (a UNION ALL of per-state ranges), keep the ``limit`` first
    overall, and lock those by primary key, checking the conditions again: a row claimed
    meanwhile is skipped."""
    table = TABLES[layer]
    if not all(isinstance(column, sa.Column) for column in order):
        raise ValueError("claim: order_by must name columns of the table")
    columns = [column for column in order if isinstance(column, sa.Column) and column.key != "id"]
    parts = [
        _state_select(layer, table.c.state == state, conditions, order, *columns).limit(limit)
        for state in states
    ]
    union = sa.union_all(*parts).subquery()
    outer = [union.c[str(column.key)] for column in order]
    picked = list(conn.execute(sa.select(union.c.id).order_by(*outer).limit(limit)).scalars())
    if not picked:
        return []
    lock = (
        sa.select(table.c.id)
        .where(table.c.id.in_(picked), table.c.state.in_(list(states)), *conditions)
        .order_by(*order)
        .with_for_update(skip_locked=True)
    )
    return list(conn.execute(lock).scalars())


def renew(
    conn: Connection, layer: Layer, owner: str, lease: float, ids: Sequence[int] | None = None
) -> int:
    """Extend ``owner``'s claims (all, or those in ``ids``); returns how many it still held."""
    return _set_lease(conn, layer, owner, ids, expires=utcnow() + seconds(lease), new_owner=owner)


def release(conn: Connection, layer: Layer, owner: str, ids: Sequence[int] | None = None) -> int:
    """Give up ``owner``'s claims (all, or those in ``ids``); returns how many were released."""
    return _set_lease(conn, layer, owner, ids, expires=None, new_owner=None)


def _set_lease(
    conn: Connection,
    layer: Layer,
    owner: str,
    ids: Sequence[int] | None,
    *,
    expires: datetime | None,
    new_owner: str | None,
) -> int:
    table = TABLES[layer]
    values = {"lease_owner": new_owner, "lease_expires": expires}
    mine = table.c.lease_owner == owner
    if ids is None:
        return int(conn.execute(sa.update(table).where(mine).values(values)).rowcount)
    return sum(
        int(
            conn.execute(
                sa.update(table).where(table.c.id.in_(chunk), mine).values(values)
            ).rowcount
        )
        for chunk in chunked(sorted(set(ids)))
    )
