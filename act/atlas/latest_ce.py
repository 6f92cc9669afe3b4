"""The CE a PanDA job was last sent to, for the ``ce=`` of its log lines."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from act.common.schema import ce_jobs, panda_jobs


def is_latest_ce_job() -> sa.ColumnElement[bool]:
    """A condition on ``ce_jobs``: no newer CE job of the same PanDA job exists (for joins of
    ``panda_jobs`` with their current CE job)."""
    newer = sa.alias(ce_jobs, "newer")
    return ~sa.exists().where(
        newer.c.panda_job_id == ce_jobs.c.panda_job_id, newer.c.id > ce_jobs.c.id
    )


def latest_ce_value(column: sa.Column[Any]) -> sa.ScalarSelect[Any]:
    """A column for a query on ``panda_jobs``: ``column`` (of ``ce_jobs``) of the job's newest CE
    job (NULL if it has none). Uses the index on ``ce_jobs.panda_job_id``."""
    return (
        sa.select(column)
        .where(ce_jobs.c.panda_job_id == panda_jobs.c.id)
        .order_by(ce_jobs.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def latest_ce_name() -> sa.ScalarSelect[Any]:
    """The ``ce_name`` of the job's newest CE job (NULL if it has none or none was assigned a
    CE): :func:`latest_ce_value`."""
    return latest_ce_value(ce_jobs.c.ce_name)
