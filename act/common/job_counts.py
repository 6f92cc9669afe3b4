"""How many jobs each queue or CE has per state: read by actctl and the metrics daemon."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.schema import ce_jobs, panda_jobs

#: How a CE job without an endpoint is shown.
UNASSIGNED = "(unassigned)"

#: {queue or CE endpoint: {state: number of jobs}}
Counts = dict[str, dict[str, int]]


def _count(conn: Connection, group: sa.ColumnElement[Any], state: sa.ColumnElement[str]) -> Counts:
    counts: Counts = {}
    stmt = sa.select(group, state, sa.func.count()).group_by(group, state)
    for name, job_state, number in conn.execute(stmt):
        key = UNASSIGNED if name is None else str(name)
        counts.setdefault(key, {})[str(job_state)] = int(number)
    return counts


def panda_counts(conn: Connection) -> Counts:
    """PanDA jobs per queue and state."""
    return _count(conn, panda_jobs.c.queue, panda_jobs.c.state)


def ce_counts_by_queue(conn: Connection) -> list[tuple[str | None, str | None, str, int]]:
    """CE jobs per (queue, CE, state), ordered: what the metrics daemon exports; queue and CE
    None where the job has none yet (the ``(queue, ce_name, state)`` index serves it)."""
    t = ce_jobs
    stmt = (
        sa.select(t.c.queue, t.c.ce_name, t.c.state, sa.func.count())
        .group_by(t.c.queue, t.c.ce_name, t.c.state)
        .order_by(t.c.queue, t.c.ce_name, t.c.state)
    )
    return [(queue, ce, str(state), int(n)) for queue, ce, state, n in conn.execute(stmt)]


def ce_counts(conn: Connection) -> Counts:
    """CE jobs per endpoint and state; jobs without an endpoint count as ``(unassigned)``."""
    return _count(conn, ce_jobs.c.ce_name, ce_jobs.c.state)
