"""Retention's archive: one row per PanDA job that was archived (its final report accepted and
its window passed), with what an operator needs later; the job's ``panda_jobs``, ``ce_jobs`` and
``transitions`` rows are deleted in the same transaction (:mod:`act.atlas.retention`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from act.common.schema import BigId, UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    op.create_table(
        "archived_jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("panda_id", sa.BigInteger(), nullable=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("ce_names", sa.Text(), nullable=True),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("panda_status", sa.String(32), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_text", sa.Text(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("ce_submissions", sa.Integer(), nullable=False),
        sa.Column("log_url", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("reported_at", UTCDateTime(), nullable=True),
        sa.Column("state_changed_at", UTCDateTime(), nullable=False),
        sa.Column("archived_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_archived_jobs"),
        sa.UniqueConstraint("panda_id", name="uq_archived_jobs_panda_id"),
        **MYSQL,
    )
    op.create_index("ix_archived_jobs_archived_at", "archived_jobs", ["archived_at"])


def downgrade() -> None:
    op.drop_index("ix_archived_jobs_archived_at", table_name="archived_jobs")
    op.drop_table("archived_jobs")
