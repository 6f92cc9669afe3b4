"""The only code that writes a state column.

:func:`transition` moves jobs of one layer from one state to another as a compare-and-set: only rows
still in ``from_state`` (and, if ``owner`` is given, still claimed by it) move, the history rows are
written in the same transaction, and the ids of exactly the rows that moved are returned. Callers
pass the open transaction (``db.run(lambda conn: transition(conn, ...))``) so that a state change
and the writes that belong to it commit together or not at all.

:func:`create_jobs` inserts new jobs in their first state, with a history row each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.metrics import count_transition
from act.common.schema import UTCDateTime, ce_jobs, panda_jobs
from act.common.schema import transitions as history
from act.common.states import Actor, Layer, check
from act.common.timeutil import utcnow

TABLES: dict[Layer, sa.Table] = {Layer.PANDA: panda_jobs, Layer.CE: ce_jobs}

#: Columns only this module writes.
PROTECTED = frozenset({"id", "state", "state_changed_at", "created_at"})

#: Ids per statement: keeps parameter lists well below every backend's limit.
CHUNK = 500


def transition(
    conn: Connection,
    layer: Layer,
    ids: Iterable[int],
    from_state: str,
    to_state: str,
    *,
    actor: Actor,
    reason: str = "",
    owner: str | None = None,
    values: Mapping[str, Any] | None = None,
    release: bool = True,
) -> list[int]:
    """Move the given jobs from ``from_state`` to ``to_state``; return the ids that moved.

    ``values`` are further columns set in the same UPDATE (never a state column). With ``owner``,
    only rows whose claim that owner still holds move. ``release`` clears the claim of moved rows.
    Raises :class:`~act.common.states.IllegalTransition` for an edge the table does not allow.
    """
    check(layer, from_state, to_state, actor)
    extra = dict(values or {})
    forbidden = PROTECTED.intersection(extra)
    if forbidden:
        raise ValueError(f"transition() sets {sorted(forbidden)} itself")
    table = TABLES[layer]
    now = utcnow()
    changes: dict[str, Any] = {
        **extra,
        "state": to_state,
        "state_changed_at": now,
        "updated_at": now,
    }
    if release:
        changes.update(lease_owner=None, lease_expires=None)
    moved: list[int] = []
    for chunk in chunked(sorted(set(ids))):
        done = _compare_and_set(conn, table, chunk, from_state, owner=owner, changes=changes)
        _record(conn, layer, done, from_state, to_state, actor=actor, reason=reason, at=now)
        moved.extend(done)
    # Counted when the statements ran: a transaction rolled back later over-counts (fine for rates).
    count_transition(layer.value, from_state, to_state, actor.value, len(moved))
    return sorted(moved)


def _compare_and_set(
    conn: Connection,
    table: sa.Table,
    ids: list[int],
    from_state: str,
    *,
    owner: str | None,
    changes: dict[str, Any],
) -> list[int]:
    if conn.dialect.update_returning:  # PostgreSQL, SQLite
        where = [table.c.id.in_(ids), table.c.state == from_state]
        if owner is not None:
            where.append(table.c.lease_owner == owner)
        stmt = sa.update(table).where(*where).values(changes).returning(table.c.id)
        return list(conn.execute(stmt).scalars())
    # MariaDB has no UPDATE ... RETURNING: lock the rows, keep those still in from_state (and the
    # owner's), update exactly those. The lock goes through the primary key only: locking through
    # the (state, id) index as well deadlocked against concurrent claims, which read that index.
    rows = conn.execute(
        sa.select(table.c.id, table.c.state, table.c.lease_owner)
        .where(table.c.id.in_(ids))
        .with_for_update()
    ).all()
    matched = [
        row.id
        for row in rows
        if row.state == from_state and (owner is None or row.lease_owner == owner)
    ]
    if matched:
        conn.execute(sa.update(table).where(table.c.id.in_(matched)).values(changes))
    return matched


def create_jobs(
    conn: Connection,
    layer: Layer,
    rows: Sequence[Mapping[str, Any]],
    state: str,
    *,
    actor: Actor,
    reason: str = "",
) -> list[int]:
    """Insert jobs in their first ``state``; returns their ids in the order of ``rows``."""
    check(layer, None, state, actor)
    if not rows:
        return []
    table = TABLES[layer]
    now = utcnow()
    params = []
    for row in rows:
        forbidden = PROTECTED.intersection(row)
        if forbidden:
            raise ValueError(f"create_jobs() sets {sorted(forbidden)} itself")
        params.append(
            {**row, "state": state, "state_changed_at": now, "created_at": now, "updated_at": now}
        )
    stmt = sa.insert(table).returning(table.c.id, sort_by_parameter_order=True)
    ids = [row.id for row in conn.execute(stmt, params)]
    for chunk in chunked(sorted(ids)):
        _record(conn, layer, chunk, None, state, actor=actor, reason=reason, at=now)
    count_transition(layer.value, None, state, actor.value, len(ids))
    return ids


def _record(
    conn: Connection,
    layer: Layer,
    ids: Sequence[int],
    from_state: str | None,
    to_state: str,
    *,
    actor: Actor,
    reason: str,
    at: datetime,
) -> None:
    """Write the history rows of ``ids`` (at most one chunk) with one INSERT ... SELECT.

    The database builds the rows from the job ids; binding one parameter set per row cost as
    much as the state change itself (benchmarks/README.md).
    """
    if not ids:
        return
    table = TABLES[layer]
    rows = sa.select(
        sa.literal(layer.value, sa.String()),
        table.c.id,
        sa.literal(from_state, sa.String()),
        sa.literal(to_state, sa.String()),
        sa.literal(actor.value, sa.String()),
        sa.literal(reason or None, sa.Text()),
        sa.literal(at, UTCDateTime()),
    ).where(table.c.id.in_(list(ids)))
    columns = ["layer", "job_id", "from_state", "to_state", "actor", "reason", "at"]
    conn.execute(sa.insert(history).from_select(columns, rows))


def chunked(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]
