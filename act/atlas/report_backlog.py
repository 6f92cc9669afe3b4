"""Overdue PanDA reports: the propagator's schedule (``panda_jobs.next_report_at``) read per queue.

A report (heartbeat or final) is overdue once its ``next_report_at`` has passed; how late the
oldest one is, is the heartbeat lag PanDA sees. Read by ``actctl panda``/``actctl report`` and by
the metrics daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.schema import panda_jobs

#: Earlier than any report time act sets.
SCHEDULED_SINCE = datetime(2000, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class QueueLag:
    """One queue's overdue reports: how many, and how late the oldest is (its heartbeat lag)."""

    overdue: int
    lag: timedelta
    oldest_due: datetime


def overdue_by_queue(
    conn: Connection, now: datetime, *, queue: str | None = None
) -> dict[str, QueueLag]:
    """The backlog's overdue reports per queue (queues with none are absent), or of ``queue``.

    Through the next_report_at index: a range with both ends, else SQLite walks the (queue,
    state, id) index over every row for the GROUP BY (0.9 s rather than 0.06 s with 100k jobs).
    """
    t = panda_jobs
    stmt = (
        sa.select(t.c.queue, sa.func.count(), sa.func.min(t.c.next_report_at))
        .where(t.c.next_report_at.between(SCHEDULED_SINCE, now))
        .group_by(t.c.queue)
    )
    if queue is not None:
        stmt = stmt.where(t.c.queue == queue)
    return {
        str(name): QueueLag(int(count), max(now - oldest, timedelta(0)), oldest)
        for name, count, oldest in conn.execute(stmt)
    }
