"""The backlogs actctl shows, read from ``panda_jobs``: the reports to PanDA still to send
(``actctl panda``, :mod:`act.ctl.panda`), each read through the ``next_report_at`` index (the
propagator's schedule), and the validations put off (``actctl storage``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.atlas.report_backlog import SCHEDULED_SINCE
from act.common.schema import panda_jobs
from act.common.states import PandaJobState


@dataclass(frozen=True)
class Overdue:
    """Jobs whose report to PanDA is due at a time or earlier, and the most overdue's due time."""

    jobs: int
    oldest_due: datetime | None


@dataclass(frozen=True)
class Scheduled:
    """Jobs with a report still to send, of which how many last failed, and the most failures
    of one job."""

    jobs: int
    failing: int
    most_failures: int


def _scheduled() -> sa.ColumnElement[bool]:
    """Jobs with a report to send: "IS NOT NULL" written as a range, which every backend serves
    from the index."""
    return panda_jobs.c.next_report_at >= SCHEDULED_SINCE


def overdue(conn: Connection, now: datetime) -> Overdue:
    """The jobs whose report is due at ``now`` or earlier."""
    t = panda_jobs
    jobs, oldest = conn.execute(
        sa.select(sa.func.count(), sa.func.min(t.c.next_report_at)).where(t.c.next_report_at <= now)
    ).one()
    return Overdue(int(jobs or 0), oldest)


def scheduled(conn: Connection) -> Scheduled:
    """The jobs with a report to send, and their failed reports."""
    t = panda_jobs
    jobs, failing, most = conn.execute(
        sa.select(
            sa.func.count(),
            sa.func.sum(sa.case((t.c.report_failures > 0, 1), else_=0)),
            sa.func.max(t.c.report_failures),
        ).where(_scheduled())
    ).one()
    return Scheduled(int(jobs or 0), int(failing or 0), int(most or 0))


def last_told(conn: Connection) -> dict[str | None, int]:
    """What PanDA was last told (``panda_status``; None: nothing yet) of the jobs with a report
    to send: how many jobs each."""
    t = panda_jobs
    stmt = (
        sa.select(t.c.panda_status, sa.func.count()).where(_scheduled()).group_by(t.c.panda_status)
    )
    return {status: int(count) for status, count in conn.execute(stmt)}


def stopped_by_command(conn: Connection) -> dict[str, int]:
    """Jobs PanDA stopped by a command and not yet over: how many per command."""
    t = panda_jobs
    stmt = (
        sa.select(t.c.panda_command, sa.func.count())
        .where(
            t.c.state.in_([PandaJobState.TOBEKILLED, PandaJobState.CANCELLED]),
            t.c.panda_command.is_not(None),
        )
        .group_by(t.c.panda_command)
    )
    return {str(command): int(count) for command, count in conn.execute(stmt)}


def validations_put_off(conn: Connection) -> int:
    """Jobs waiting in ``tovalidate`` whose validation is put off (``validate_after`` set)."""
    t = panda_jobs
    stmt = (
        sa.select(sa.func.count())
        .select_from(t)
        .where(t.c.state == PandaJobState.TOVALIDATE, t.c.validate_after.is_not(None))
    )
    return int(conn.execute(stmt).scalar_one())
