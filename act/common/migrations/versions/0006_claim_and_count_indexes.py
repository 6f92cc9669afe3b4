"""Indexes for the propagator's due-heartbeat claim and the metrics daemon's CE-job counts.

Measured on a store of 1M PanDA and 1M CE jobs (benchmarks/daemon_queries.py, see
benchmarks/RESULTS.md):

* the propagator claims ``state IN (<reported states>) AND next_report_at <= now ORDER BY
  next_report_at``; SQLite walked every live job through ``(state, id)`` and sorted them (0.17 s
  per cycle at 1M jobs). ``(state, next_report_at)`` gives it only the due ones (< 10 ms);
* the metrics snapshot counts CE jobs by queue, CE and state; no index had ``ce_jobs.queue``, so
  every backend read the whole table (0.4-0.9 s). ``(queue, ce_endpoint, state)`` covers it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_panda_jobs_state_next_report_at", "panda_jobs", ["state", "next_report_at"])
    op.create_index(
        "ix_ce_jobs_queue_ce_endpoint_state", "ce_jobs", ["queue", "ce_endpoint", "state"]
    )


def downgrade() -> None:
    op.drop_index("ix_ce_jobs_queue_ce_endpoint_state", table_name="ce_jobs")
    op.drop_index("ix_panda_jobs_state_next_report_at", table_name="panda_jobs")
