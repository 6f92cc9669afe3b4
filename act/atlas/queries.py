"""The ``panda_jobs`` rows the atlas daemons claim, typed: one frozen dataclass per reader.

Each field is a column of ``panda_jobs`` (or, where listed as ``labelled``, an expression the
claimer gives under that name: a joined CE job's column, the newest CE's endpoint);
:func:`act.common.claims.claim_and_load` loads them and tests/test_rows.py checks the names.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from act.atlas.latest_ce import is_latest_ce_job
from act.common.rows import row_type
from act.common.schema import ce_jobs, panda_jobs


@row_type(panda_jobs, labelled=("ce",))
@dataclass(frozen=True)
class DueReport:
    """A job the propagator reports (act.atlas.propagator.jobs.claim_due)."""

    id: int
    panda_id: int
    state: str
    attempt: int
    queue: str
    panda_status: str | None
    panda_command: str | None
    report: str | None
    report_failures: int
    heartbeat_less: bool
    access_point: str | None
    log_url: str | None
    final_sent_at: datetime | None
    ce: str | None  # labelled: the newest CE job's CE (act.atlas.latest_ce)


#: :class:`ToValidate`'s fields read from the job's newest CE job (``ce_jobs``): see
#: :func:`to_validate_source`.
CE_JOB_FIELDS = (
    "ce_name",
    "backend",
    "ce_job_id",
    "ce_state",  # the CE job's state
    "output_dir",
    "exit_code",
    "error_text",
    "worker_node",
    "started_at",
    "ended_at",
    "attempts_left",
)


@row_type(panda_jobs, labelled=CE_JOB_FIELDS)
@dataclass(frozen=True)
class ToValidate:
    """A job the validator checks, with its newest CE job (act.atlas.validator); the CE job's
    fields are None when it has none. ``ce_state`` is the CE job's ``state``."""

    id: int
    panda_id: int
    queue: str
    spec: str
    spec_format: str
    created_at: datetime
    state_changed_at: datetime
    log_url: str | None
    validation_deferrals: int
    ce_name: str | None
    backend: str | None
    ce_job_id: str | None
    ce_state: str | None
    output_dir: str | None
    exit_code: int | None
    error_text: str | None
    worker_node: str | None
    started_at: datetime | None
    ended_at: datetime | None
    attempts_left: int | None


@row_type(panda_jobs, labelled=("previous_attempts_left",))
@dataclass(frozen=True)
class ToTranslate:
    """A job the translator turns into a CE job (act.atlas.translator)."""

    id: int
    panda_id: int
    state: str
    queue: str
    attempt: int
    spec: str
    spec_format: str
    event_ranges: str | None
    log_url: str | None
    created_at: datetime
    #: labelled: ``attempts_left`` of the job's newest CE job, None if it has none (the retry
    #: budget a resubmission inherits: act.engine.resubmit.attempts_for_new_ce_job)
    previous_attempts_left: int | None


def to_validate_source() -> tuple[sa.FromClause, dict[str, sa.ColumnElement[Any]]]:
    """Where :class:`ToValidate` is read from: ``panda_jobs`` outer-joined with each job's newest
    CE job, and the CE job's columns for the :data:`CE_JOB_FIELDS`."""
    t, c = panda_jobs, ce_jobs
    joined = t.outerjoin(c, sa.and_(c.c.panda_job_id == t.c.id, is_latest_ce_job()))
    labelled: dict[str, sa.ColumnElement[Any]] = {
        name: c.c[name] for name in CE_JOB_FIELDS if name != "ce_state"
    }
    labelled["ce_state"] = c.c.state
    return joined, labelled
