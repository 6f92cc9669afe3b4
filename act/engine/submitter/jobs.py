"""The submitter's shared pieces: its constants, claiming CE job rows (typed: act.engine.queries),
per-row values, hand-backs, grouping by CE, and recording a job the CE has."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common import claims
from act.common.schema import ce_jobs
from act.common.states import C_QUEUED, C_RUNNING, Actor, CEJobState, Layer
from act.common.timeutil import seconds
from act.common.transitions import transition
from act.engine import strategies
from act.engine.backend import CE, Backend
from act.engine.config import Context
from act.engine.queries import ToSubmit
from act.engine.runtime import EnginePool, UnknownCE

CE_LAYER = Layer.CE
ME = Actor.SUBMITTER
#: States that count as "queued at the CE" for max_queued.
QUEUED_STATES = C_QUEUED
RUNNING_STATES = C_RUNNING
ERROR_LEN = 4000
#: Tolerance on min_spacing between two batches of one cycle (the wait and the clock differ).
SPACING_SLACK = 0.01


# ---------------------------------------------------------------------------------------------
# Small database helpers


def set_each(conn: Connection, values: Mapping[int, Mapping[str, Any]]) -> None:
    """Per-row values (never a state column) for rows that just moved, in one executemany."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for job_id, row in values.items():
        by_columns[tuple(sorted(row))].append(
            {"b_id": job_id, **{f"b_{k}": v for k, v in row.items()}}
        )
    for columns, params in by_columns.items():
        stmt = (
            sa.update(ce_jobs)
            .where(ce_jobs.c.id == sa.bindparam("b_id"))
            .values({column: sa.bindparam(f"b_{column}") for column in columns})
        )
        conn.execute(stmt, params)


def with_excluded(excluded: str | None, ce: str) -> str:
    names = strategies.names(excluded)
    if ce not in names:
        names.append(ce)
    return " ".join(names)


def short_error(error: str | None) -> str:
    return (error or "unknown error")[:ERROR_LEN]


def release(ctx: Context, ids: Iterable[int]) -> None:
    ids = list(ids)
    if ids:
        ctx.db.run(lambda conn: claims.release(conn, CE_LAYER, ctx.owner, ids))


def claim(ctx: Context, state: str, limit: int | None = None) -> list[ToSubmit]:
    return ctx.db.run(
        lambda conn: claims.claim_and_load(
            conn,
            CE_LAYER,
            [state],
            ToSubmit,
            owner=ctx.owner,
            lease=ctx.daemon.lease,
            limit=limit or ctx.daemon.batch,
            shard=ctx.shard,
        )
    )


def by_ce(rows: Iterable[ToSubmit]) -> dict[str, list[ToSubmit]]:
    groups: dict[str, list[ToSubmit]] = defaultdict(list)
    for row in rows:
        groups[str(row.ce_name or "")].append(row)
    return dict(sorted(groups.items()))


def ce_and_backend(ctx: Context, engine: EnginePool, name: str) -> tuple[CE, Backend] | None:
    """The CE called ``name`` and its back end; None if it is not configured or its back end
    cannot be made (logged here: e.g. a back end that is not available in this installation)."""
    try:
        ce = engine.ce(name)
    except UnknownCE:
        return None
    try:
        return ce, engine.backend(ce)
    except Exception as error:
        ctx.log.error("ce=%s: cannot make its back end: %s", name, error)
        return None


def next_check(ctx: Context, now: datetime) -> datetime:
    return now + seconds(ctx.settings.engine.poll.submitted)


def mark_submitted(
    conn: Connection, ctx: Context, accepted: dict[int, str], now: datetime, reason: str
) -> list[int]:
    """Move the ``accepted`` jobs (id -> CE job id) this instance claims from submitting to
    submitted with their CE job ids; returns the ids moved."""
    moved = transition(
        conn,
        CE_LAYER,
        list(accepted),
        CEJobState.SUBMITTING,
        CEJobState.SUBMITTED,
        actor=ME,
        reason=reason,
        owner=ctx.owner,
        values={
            "submitted_at": now,
            "next_check_at": next_check(ctx, now),
            "error_text": None,  # an earlier CE's transient error no longer applies
        },
    )
    set_each(conn, {job_id: {"ce_job_id": accepted[job_id]} for job_id in moved})
    return moved
