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

from act.common.schema import ce_jobs, panda_jobs
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
        where = [table.c.id.in_(chunk), table.c.state == from_state]
        if owner is not None:
            where.append(table.c.lease_owner == owner)
        moved.extend(_compare_and_set(conn, table, where, changes))
    moved.sort()
    _record(conn, layer, moved, from_state, to_state, actor=actor, reason=reason, at=now)
    return moved


def _compare_and_set(
    conn: Connection,
    table: sa.Table,
    where: list[sa.ColumnElement[bool]],
    changes: dict[str, Any],
) -> list[int]:
    if conn.dialect.update_returning:  # PostgreSQL, SQLite
        stmt = sa.update(table).where(*where).values(changes).returning(table.c.id)
        return list(conn.execute(stmt).scalars())
    # MariaDB has no UPDATE … RETURNING: lock the matching rows, then update exactly those.
    locked = list(conn.execute(sa.select(table.c.id).where(*where).with_for_update()).scalars())
    if locked:
        conn.execute(sa.update(table).where(table.c.id.in_(locked)).values(changes))
    return locked


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
    _record(conn, layer, ids, None, state, actor=actor, reason=reason, at=now)
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
    if not ids:
        return
    conn.execute(
        sa.insert(history),
        [
            {
                "layer": layer.value,
                "job_id": job_id,
                "from_state": from_state,
                "to_state": to_state,
                "actor": actor.value,
                "reason": reason or None,
                "at": at,
            }
            for job_id in ids
        ],
    )


def chunked(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]
