"""The engine's reads: the ``ce_jobs`` rows its daemons claim, typed (one frozen dataclass per
reader), and the other questions they ask of ``ce_jobs`` and ``ces``.

Each field of a row type is a column of ``ce_jobs``; :func:`act.common.claims.claim_and_load`
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
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.rows import row_type
from act.common.schema import ce_jobs, ces
from act.common.transitions import chunked


@row_type(ce_jobs)
@dataclass(frozen=True)
class ToSubmit:
    """A CE job the submitter handles: submits, reconciles, resubmits or restarts
    (act.engine.submitter)."""

    id: int
    pandaid: int | None
    state_changed_at: datetime
    ce_endpoint: str | None
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
    pandaid: int | None
    state: str
    ce_endpoint: str | None
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
    pandaid: int | None
    state: str
    ce_endpoint: str | None
    ce_job_id: str | None
    error_text: str | None


@row_type(ce_jobs)
@dataclass(frozen=True)
class ToCancel:
    """A CE job the canceller kills (act.engine.canceller)."""

    id: int
    pandaid: int | None
    ce_endpoint: str | None
    ce_job_id: str | None
    token: str | None


@row_type(ce_jobs)
@dataclass(frozen=True)
class ToClean:
    """An ended CE job the cleaner removes from its CE, with its local outputs
    (act.engine.cleaner)."""

    id: int
    pandaid: int | None
    ce_endpoint: str | None
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
        sa.select(ce_jobs.c.ce_endpoint, ce_jobs.c.state, sa.func.count())
        .where(ce_jobs.c.ce_endpoint.in_(list(names)), ce_jobs.c.state.in_(list(states)))
        .group_by(ce_jobs.c.ce_endpoint, ce_jobs.c.state)
    )
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name, state, number in conn.execute(stmt):
        counts[str(name)][str(state)] = int(number)
    return counts


def ce_rows(conn: Connection, names: Collection[str]) -> list[dict[str, Any]]:
    """The ``ces`` rows of the CEs in ``names``, as :func:`act.engine.breaker.admits` reads
    them (the breaker owns that table, and reads its rows as mappings)."""
    stmt = sa.select(ces).where(ces.c.endpoint.in_(list(names)))
    return [dict(row) for row in conn.execute(stmt).mappings()]


def breaker_state(conn: Connection, name: str) -> str:
    """The breaker state of the CE ``name`` (``closed``, ``open``, ``half_open``)."""
    return str(conn.execute(sa.select(ces.c.breaker).where(ces.c.endpoint == name)).scalar())
