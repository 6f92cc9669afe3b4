"""The reads behind actctl's ``kill``, ``resubmit`` and ``retry`` (act.ctl.jobchange), typed.

Each row type is a frozen dataclass whose fields are column names (``labelled`` ones computed);
tests/test_rows.py checks them against the schema. Long lists of ids are read in chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.atlas.latest_ce import latest_ce_name
from act.common.rows import fetch, row_type, select_of
from act.common.schema import ce_jobs, panda_jobs
from act.common.states import C_KILLABLE_ALL, Layer, in_table_order
from act.common.transitions import chunked


@row_type(panda_jobs, labelled=("ce",))
@dataclass(frozen=True)
class SelectedJob:
    """A PanDA job an operator's command matched."""

    id: int
    panda_id: int
    state: str
    queue: str
    ce: str | None  # labelled: the newest CE job's CE (act.atlas.latest_ce)
    state_changed_at: datetime


@row_type(panda_jobs)
@dataclass(frozen=True)
class JobNow:
    """A PanDA job's state and claim now, to tell why a command did not move it."""

    id: int
    state: str
    lease_owner: str | None


@row_type(ce_jobs)
@dataclass(frozen=True)
class RunningCEJob:
    """A CE job that may still run (``C_KILLABLE_ALL``)."""

    id: int
    state: str


def matching_jobs(
    conn: Connection,
    *,
    panda_ids: Sequence[int] | None = None,
    states: Sequence[str] | None = None,
    queue: str | None = None,
    ce: str | None = None,
    changed_before: datetime | None = None,
) -> list[SelectedJob]:
    """The PanDA jobs that match every filter given, in ``id`` order: those with these PanDA
    ids, in these states, of this queue, whose newest CE job is on this CE, in their state
    since before ``changed_before``."""
    conditions: list[sa.ColumnElement[bool]] = []
    if states is not None:
        conditions.append(panda_jobs.c.state.in_(list(states)))
    if queue is not None:
        conditions.append(panda_jobs.c.queue == queue)
    if ce is not None:
        conditions.append(latest_ce_name() == ce)
    if changed_before is not None:
        conditions.append(panda_jobs.c.state_changed_at < changed_before)
    stmt = select_of(SelectedJob, panda_jobs, {"ce": latest_ce_name()})
    if panda_ids is None:
        return fetch(conn, SelectedJob, stmt.where(*conditions).order_by(panda_jobs.c.id))
    found: list[SelectedJob] = []
    for chunk in chunked(sorted(set(panda_ids))):
        found += fetch(conn, SelectedJob, stmt.where(panda_jobs.c.panda_id.in_(chunk), *conditions))
    return sorted(found, key=lambda job: job.id)


def jobs_now(conn: Connection, ids: Sequence[int]) -> dict[int, JobNow]:
    """The PanDA jobs with these row ids, by id (a job deleted meanwhile is absent)."""
    found: dict[int, JobNow] = {}
    for chunk in chunked(list(ids)):
        stmt = select_of(JobNow, panda_jobs).where(panda_jobs.c.id.in_(chunk))
        found.update({job.id: job for job in fetch(conn, JobNow, stmt)})
    return found


def running_ce_jobs(conn: Connection, panda_job_ids: Sequence[int]) -> list[RunningCEJob]:
    """The CE jobs of these PanDA jobs (row ids) that may still run."""
    found: list[RunningCEJob] = []
    for chunk in chunked(list(panda_job_ids)):
        stmt = select_of(RunningCEJob, ce_jobs).where(
            ce_jobs.c.panda_job_id.in_(chunk),
            ce_jobs.c.state.in_(in_table_order(Layer.CE, C_KILLABLE_ALL)),
        )
        found += fetch(conn, RunningCEJob, stmt)
    return found
