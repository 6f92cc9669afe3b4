"""The ``ce_jobs`` rows the engine's daemons claim, typed: one frozen dataclass per reader.

Each field is a column of ``ce_jobs``; :func:`act.common.claims.claim_and_load` loads them and
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
