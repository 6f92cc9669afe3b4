"""The reads behind ``actctl report`` (:mod:`act.ctl.report`), each returning typed results.

Every one is a GROUP BY or a read by primary key, served by an index whatever the number of
jobs: counts and the oldest job per state from the ``(queue, state, id)`` and
``(ce_name, state, id)`` indexes (the oldest job of a state is the one fetched first, i.e.
the lowest id); failures from the ``transitions`` history through its ``at`` index (only the
window's rows are read); the reports to PanDA from the ``next_report_at`` index. The ``ces``
rows the report shows are read by :func:`act.engine.queries.ces_shown`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.atlas import report_backlog
from act.common.job_counts import UNASSIGNED
from act.common.rows import REGISTERED, fetch, row_type, select_of
from act.common.schema import ce_jobs, panda_jobs
from act.common.schema import transitions as history
from act.common.states import C_FAILED, P_FAILED, Layer, in_table_order

#: The states a job "fails" into: a job counts once however many of them it entered.
FAILED_STATES = {Layer.PANDA: P_FAILED, Layer.CE: C_FAILED}
#: How much of an error text is compared when CE errors are grouped, and shown.
ERROR_PREFIX = 200
#: Most ids in one ``IN (...)`` list.
CHUNK = 500

#: A row type of the oldest job of a state (:class:`OldestPandaJob`, :class:`OldestCEJob`).
J = TypeVar("J")


@row_type(panda_jobs)
@dataclass(frozen=True)
class OldestPandaJob:
    """The oldest PanDA job of a queue and state, as the report shows it (not the whole row: a
    PanDA job's spec can be megabytes)."""

    id: int
    panda_id: int
    created_at: datetime
    state_changed_at: datetime


@row_type(ce_jobs)
@dataclass(frozen=True)
class OldestCEJob:
    """The oldest CE job of a CE and state, as the report shows it."""

    id: int
    ce_job_id: str | None
    panda_id: int | None
    created_at: datetime
    state_changed_at: datetime


@dataclass(frozen=True)
class StateCount:
    """How many jobs of one queue or CE (``name``; UNASSIGNED for none) are in ``state``, and
    the id of the oldest of them (the lowest)."""

    name: str
    state: str
    jobs: int
    oldest_id: int


@dataclass
class ErrorCount:
    """How many failed jobs had one error, and one text of it (the least, for a stable one)."""

    jobs: int
    text: str | None


@dataclass(frozen=True)
class Failures:
    """The jobs failed in a window: how many per queue or CE, and per error kind in each."""

    counted: dict[str, int]
    errors: dict[str, dict[Any, ErrorCount]]


@dataclass(frozen=True)
class ReportSchedule:
    """Reports to PanDA over all queues: scheduled, overdue at ``now`` and the most overdue."""

    scheduled: int
    overdue: int
    oldest_due: datetime | None


def name_of(name: Any) -> str:
    """A queue's or CE's name as the report keys it (UNASSIGNED for none)."""
    return UNASSIGNED if name is None else str(name)


def _in_chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _group(layer: Layer) -> sa.Column[Any]:
    """What the report groups the jobs of ``layer`` by: their queue, their CE."""
    return panda_jobs.c.queue if layer is Layer.PANDA else ce_jobs.c.ce_name


def _error_kind(layer: Layer) -> sa.ColumnElement[Any]:
    """What tells one failure's error from another: a PanDA job's error code, the start of a CE
    job's error text."""
    return panda_jobs.c.error_code if layer is Layer.PANDA else _error_prefix(ce_jobs.c.error_text)


def counts_per_state(conn: Connection, layer: Layer, *, wanted: str | None) -> list[StateCount]:
    """Jobs of ``layer`` per queue or CE and state, with each one's oldest job: one GROUP BY
    over the (queue, state, id) or (ce_name, state, id) index; only the queue or CE
    ``wanted`` if given."""
    group = _group(layer)
    table = group.table
    stmt = sa.select(group, table.c.state, sa.func.count(), sa.func.min(table.c.id)).group_by(
        group, table.c.state
    )
    if wanted is not None:
        stmt = stmt.where(group == wanted)
    return [
        StateCount(name_of(name), str(state), int(number), int(first))
        for name, state, number, first in conn.execute(stmt)
    ]


def oldest_jobs(conn: Connection, cls: type[J], ids: Collection[int]) -> list[J]:
    """The jobs ``ids`` (the oldest of each state, from :func:`counts_per_state`) as ``cls``
    (:class:`OldestPandaJob` or :class:`OldestCEJob`), read by primary key."""
    table, _ = REGISTERED[cls]
    found: list[J] = []
    for chunk in _in_chunks(sorted(ids)):
        found += fetch(conn, cls, select_of(cls, table).where(table.c.id.in_(chunk)))
    return found


def failed_ids(conn: Connection, layer: Layer, since: datetime, now: datetime) -> list[int]:
    """Ids of the jobs of ``layer`` that entered a failed state between ``since`` and ``now``,
    read through the index on transitions.at. The layer is compared as ``layer || ''`` so that
    no planner takes the (layer, job_id) index instead (SQLite does): that would read the
    layer's whole history, where the window holds only its last hour or so."""
    stmt = (
        sa.select(history.c.job_id)
        .where(
            history.c.at.between(since, now),
            history.c.layer.concat("") == layer.value,
            history.c.to_state.in_(in_table_order(layer, FAILED_STATES[layer])),
        )
        .distinct()
    )
    return sorted(int(job_id) for job_id in conn.execute(stmt).scalars())


def _error_prefix(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
    """The first ERROR_PREFIX characters of ``column``."""
    # Literal numbers, not bound parameters: PostgreSQL must see the same expression in the
    # SELECT list and in GROUP BY.
    return sa.func.substr(column, sa.literal_column("1"), sa.literal_column(str(ERROR_PREFIX)))


def failures(conn: Connection, layer: Layer, ids: list[int], *, wanted: str | None) -> Failures:
    """For the failed jobs ``ids`` of ``layer``: how many per queue or CE, and per error kind
    (:func:`_error_kind`) in each; only the queue or CE ``wanted`` if given.

    The ids go in by primary key (in chunks), so the plan is the same on every backend whatever
    the table's size: handing the database the subquery instead let MariaDB's planner read the
    whole (group, state, id) index to probe the subquery's result.
    """
    group, kind = _group(layer), _error_kind(layer)
    table = group.table
    text = sa.func.min(_error_prefix(table.c.error_text))
    counted: dict[str, int] = {}
    errors: dict[str, dict[Any, ErrorCount]] = {}
    for chunk in _in_chunks(ids):
        stmt = (
            sa.select(group, kind, sa.func.count(), text)
            .where(table.c.id.in_(chunk))
            .group_by(group, kind)
        )
        if wanted is not None:
            stmt = stmt.where(group == wanted)
        for name, key, number, example in conn.execute(stmt):
            counted[name_of(name)] = counted.get(name_of(name), 0) + int(number)
            found = errors.setdefault(name_of(name), {}).setdefault(key, ErrorCount(0, example))
            found.jobs += int(number)
            if example is not None and (found.text is None or example < found.text):
                found.text = example
    return Failures(counted, errors)


def report_schedule(conn: Connection, now: datetime) -> ReportSchedule:
    """Reports to PanDA scheduled and overdue at ``now`` over all queues, from the
    next_report_at index alone (``actctl panda``'s backlog, :mod:`act.ctl.backlog_queries`,
    also reads what PanDA was told, which the report does not show)."""
    t = panda_jobs
    scheduled = conn.execute(
        sa.select(sa.func.count()).where(t.c.next_report_at >= report_backlog.SCHEDULED_SINCE)
    ).scalar_one()
    overdue, oldest = conn.execute(
        sa.select(sa.func.count(), sa.func.min(t.c.next_report_at)).where(
            t.c.next_report_at.between(report_backlog.SCHEDULED_SINCE, now)
        )
    ).one()
    return ReportSchedule(int(scheduled), int(overdue), oldest)
