"""The ``ce_jobs`` rows the engine's daemons claim, typed: one frozen dataclass per reader.

Each field is a column of ``ce_jobs``; :func:`act.common.claims.claim_and_load` (the submitter)
and :func:`act.engine.work.claim_jobs` (the daemons that follow CE jobs) load them, and
tests/test_rows.py checks the names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from act.common.rows import row_type
from act.common.schema import ce_jobs


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
