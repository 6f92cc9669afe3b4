"""The read queries behind actctl (SQLAlchemy Core, every value a bound parameter).

Each function takes an open connection (``with db.read() as conn``) and returns plain data:
dicts keyed by column name, ready for :mod:`act.ctl.output`. The queries the metrics daemon
shares are below act.ctl: job counts in :mod:`act.common.job_counts`, daemon processes in
:mod:`act.common.liveness`, overdue PanDA reports in :mod:`act.atlas.report_backlog`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.schema import ce_jobs, panda_jobs
from act.common.schema import transitions as history
from act.common.states import STATES, Layer

Row = dict[str, Any]


@dataclass(frozen=True)
class JobFilter:
    """What ``actctl jobs`` selects; empty fields select everything."""

    states: Sequence[str] = ()
    queue: str | None = None
    ce: str | None = None
    panda_id: int | None = None
    limit: int = 50  # 0: no limit


def in_state_order(by_state: dict[str, int], layer: Layer) -> dict[str, int]:
    """Counts per state in the order of the state table (states it does not know last)."""
    order = {state: i for i, state in enumerate(STATES[layer])}
    return dict(sorted(by_state.items(), key=lambda kv: order.get(kv[0], len(order))))


def list_jobs(conn: Connection, wanted: JobFilter) -> list[Row]:
    """PanDA jobs, newest first, each with its newest CE job's endpoint, state and CE id."""
    newest = ce_jobs.alias("ce")
    newer = ce_jobs.alias("newer")
    newest_id = (
        sa.select(sa.func.max(newer.c.id))
        .where(newer.c.panda_job_id == panda_jobs.c.id)
        .correlate(panda_jobs)
        .scalar_subquery()
    )
    stmt = sa.select(
        panda_jobs.c.panda_id.label("panda_id"),
        panda_jobs.c.queue,
        panda_jobs.c.state,
        panda_jobs.c.panda_status,
        panda_jobs.c.attempt,
        newest.c.ce_name,
        newest.c.state.label("ce_state"),
        newest.c.ce_job_id,
        panda_jobs.c.state_changed_at,
        panda_jobs.c.error_code,
        panda_jobs.c.error_text,
    ).select_from(
        panda_jobs.outerjoin(
            newest, sa.and_(newest.c.panda_job_id == panda_jobs.c.id, newest.c.id == newest_id)
        )
    )
    if wanted.states:
        stmt = stmt.where(panda_jobs.c.state.in_(list(wanted.states)))
    if wanted.queue is not None:
        stmt = stmt.where(panda_jobs.c.queue == wanted.queue)
    if wanted.ce is not None:
        stmt = stmt.where(newest.c.ce_name == wanted.ce)
    if wanted.panda_id is not None:
        stmt = stmt.where(panda_jobs.c.panda_id == wanted.panda_id)
    stmt = stmt.order_by(panda_jobs.c.id.desc())
    if wanted.limit:
        stmt = stmt.limit(wanted.limit)
    return [dict(row) for row in conn.execute(stmt).mappings()]


@dataclass(frozen=True)
class JobDetail:
    """One PanDA job: its row, its CE jobs' rows, and both layers' history in time order."""

    panda_job: Row
    ce_jobs: list[Row] = field(default_factory=list)
    history: list[Row] = field(default_factory=list)


def job_detail(conn: Connection, panda_id: int) -> JobDetail | None:
    """Everything stored about the PanDA job ``panda_id``, or None if there is no such job."""
    found = conn.execute(sa.select(panda_jobs).where(panda_jobs.c.panda_id == panda_id))
    row = found.mappings().one_or_none()
    if row is None:
        return None
    ce_rows = [
        dict(ce)
        for ce in conn.execute(
            sa.select(ce_jobs).where(ce_jobs.c.panda_job_id == row["id"]).order_by(ce_jobs.c.id)
        ).mappings()
    ]
    ce_ids = [ce["id"] for ce in ce_rows]
    return JobDetail(dict(row), ce_rows, _history(conn, row["id"], ce_ids))


def _history(conn: Connection, panda_job_id: int, ce_ids: list[int]) -> list[Row]:
    mine = sa.and_(history.c.layer == Layer.PANDA.value, history.c.job_id == panda_job_id)
    if ce_ids:
        mine = sa.or_(
            mine, sa.and_(history.c.layer == Layer.CE.value, history.c.job_id.in_(ce_ids))
        )
    stmt = (
        sa.select(
            history.c.layer,
            history.c.job_id,
            history.c.at,
            history.c.from_state,
            history.c.to_state,
            history.c.actor,
            history.c.reason,
        )
        .where(mine)
        .order_by(history.c.at, history.c.id)
    )
    return [dict(row) for row in conn.execute(stmt).mappings()]
