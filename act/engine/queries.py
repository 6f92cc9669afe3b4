"""The engine's reads: the ``ce_jobs`` rows its daemons claim, typed (one frozen dataclass per
reader), the ``ces`` rows the breaker and the submitter read (:class:`CERow`) and actctl shows
(:class:`CEShown`), and the other questions they ask of ``ce_jobs`` and ``ces``.

Each field of a row type is a column of its table; :func:`act.common.claims.claim_and_load`
(the submitter) and :func:`act.engine.work.claim_jobs` (the daemons that follow CE jobs) load
them, and tests/test_rows.py checks the names. Writes are not here: state changes go through
:func:`act.common.transitions.transition`, the other columns through :mod:`act.engine.work` and
:mod:`act.engine.submitter.jobs`, the ``ces`` rows through :mod:`act.engine.breaker`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.rows import fetch, row_type, select_of
from act.common.schema import ce_jobs, ces
from act.common.transitions import chunked


@row_type(ce_jobs)
@dataclass(frozen=True)
class ToSubmit:
    """A CE job the submitter handles: submits, reconciles, resubmits or restarts
    (act.engine.submitter)."""

    id: int
    panda_id: int | None
    state_changed_at: datetime
    ce_name: str | None
    candidates: str | None
    excluded: str | None
    ce_job_id: str | None
    token: str | None
    attempts_left: int
    description: str | None
    input_dir: str | None


@row_type(ce_jobs)
@dataclass(frozen=True)
class ToPoll:
    """A CE job the poller asks its CE about (act.engine.poller)."""

    id: int
    panda_id: int | None
    state: str
    ce_name: str | None
    ce_job_id: str | None
    attempts_left: int
    error_text: str | None
    state_changed_at: datetime
    submitted_at: datetime | None
    started_at: datetime | None
    last_seen_at: datetime | None


@row_type(ce_jobs)
@dataclass(frozen=True)
class ToFetch:
    """An ended CE job whose outputs the CE fetcher downloads (act.engine.fetcher)."""

    id: int
    panda_id: int | None
    state: str
    ce_name: str | None
    ce_job_id: str | None
    error_text: str | None


@row_type(ce_jobs)
@dataclass(frozen=True)
class ToCancel:
    """A CE job the canceller kills (act.engine.canceller)."""

    id: int
    panda_id: int | None
    ce_name: str | None
    ce_job_id: str | None
    token: str | None


@row_type(ce_jobs)
@dataclass(frozen=True)
class ToClean:
    """An ended CE job the cleaner removes from its CE, with its local outputs
    (act.engine.cleaner)."""

    id: int
    panda_id: int | None
    ce_name: str | None
    ce_job_id: str | None
    output_dir: str | None
    state_changed_at: datetime


def due_for_check(now: datetime) -> sa.ColumnElement[bool]:
    """CE jobs whose next look is due at ``now``: ``next_check_at`` unset or past (the
    poller's claim condition)."""
    return sa.or_(ce_jobs.c.next_check_at.is_(None), ce_jobs.c.next_check_at <= now)


def held_by(conn: Connection, owner: str, ids: Sequence[int]) -> set[int]:
    """Those of ``ids`` whose claim ``owner`` holds."""
    held: set[int] = set()
    for chunk in chunked(sorted(ids)):
        held.update(
            conn.execute(
                sa.select(ce_jobs.c.id).where(
                    ce_jobs.c.id.in_(chunk), ce_jobs.c.lease_owner == owner
                )
            ).scalars()
        )
    return held


def jobs_per_state_at(
    conn: Connection, names: Collection[str], states: Collection[str]
) -> dict[str, Counter[str]]:
    """How many CE jobs each CE in ``names`` holds in each of ``states`` (the submitter's room
    at each CE); a CE or state without jobs is absent (a Counter counts it 0)."""
    stmt = (
        sa.select(ce_jobs.c.ce_name, ce_jobs.c.state, sa.func.count())
        .where(ce_jobs.c.ce_name.in_(list(names)), ce_jobs.c.state.in_(list(states)))
        .group_by(ce_jobs.c.ce_name, ce_jobs.c.state)
    )
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name, state, number in conn.execute(stmt):
        counts[str(name)][str(state)] = int(number)
    return counts


@row_type(ces)
@dataclass(frozen=True)
class CERow:
    """A CE's ``ces`` row as the engine reads it: its breaker and drain state, which
    :func:`act.engine.breaker.admits` decides on and the breaker's updates start from, and the
    operator's limits, last submission and success score the submitter's budgets use
    (act.engine.submitter.budgets)."""

    endpoint: str
    enabled: bool
    breaker: str
    breaker_forced: str | None
    failures: int
    opened_at: datetime | None
    probe_job_id: int | None
    probe_at: datetime | None
    max_queued: int | None
    max_running: int | None
    last_submit_at: datetime | None
    success_score: float | None


def ce_rows(conn: Connection, names: Collection[str]) -> list[CERow]:
    """The ``ces`` rows of the CEs in ``names`` (the breaker owns that table and writes it)."""
    return fetch(conn, CERow, select_of(CERow, ces).where(ces.c.name.in_(list(names))))


@row_type(ces)
@dataclass(frozen=True)
class CEShown:
    """A CE's ``ces`` row as actctl shows it (``actctl ces``, ``actctl report``): its back end,
    breaker and drain state, last submission and error, and who last changed it and why."""

    endpoint: str
    backend: str
    enabled: bool
    breaker: str
    breaker_forced: str | None
    failures: int
    opened_at: datetime | None
    probe_job_id: int | None
    success_score: float | None
    last_error: str | None
    last_error_at: datetime | None
    last_submit_at: datetime | None
    reason: str | None
    updated_by: str | None
    updated_at: datetime


def ces_shown(conn: Connection, name: str | None = None) -> dict[str, CEShown]:
    """Every CE's ``ces`` row by name (only ``name``'s if given), for actctl."""
    stmt = select_of(CEShown, ces)
    if name is not None:
        stmt = stmt.where(ces.c.name == name)
    return {row.endpoint: row for row in fetch(conn, CEShown, stmt)}


def ce_known(conn: Connection, name: str) -> bool:
    """Whether the CE ``name`` has a ``ces`` row."""
    found = conn.execute(sa.select(ces.c.name).where(ces.c.name == name)).first()
    return found is not None


def breaker_state(conn: Connection, name: str) -> str:
    """The breaker state of the CE ``name`` (``closed``, ``open``, ``half_open``)."""
    return str(conn.execute(sa.select(ces.c.breaker).where(ces.c.name == name)).scalar())
