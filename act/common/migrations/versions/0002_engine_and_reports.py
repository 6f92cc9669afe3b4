"""CE engine and PanDA reporting: submission tokens, poll times, breaker, delegations, reports.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from act.common.schema import BigId, LongText, UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    with op.batch_alter_table("panda_jobs") as batch:
        batch.add_column(sa.Column("report", LongText, nullable=True))
        batch.add_column(
            sa.Column("report_failures", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(
            sa.Column("heartbeat_less", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("access_point", sa.Text(), nullable=True))
        batch.add_column(sa.Column("log_url", sa.Text(), nullable=True))
        batch.add_column(sa.Column("event_ranges", LongText, nullable=True))

    with op.batch_alter_table("ce_jobs") as batch:
        batch.add_column(sa.Column("pandaid", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("queue", sa.String(128), nullable=True))
        batch.add_column(sa.Column("candidates", sa.Text(), nullable=True))
        batch.add_column(sa.Column("excluded", sa.Text(), nullable=True))
        batch.add_column(sa.Column("token", sa.String(64), nullable=True))
        batch.add_column(sa.Column("submissions", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("input_dir", sa.Text(), nullable=True))
        batch.add_column(sa.Column("output_dir", sa.Text(), nullable=True))
        batch.add_column(sa.Column("next_check_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("last_seen_at", UTCDateTime(), nullable=True))
        batch.create_unique_constraint("uq_ce_jobs_token", ["token"])
        batch.create_index("ix_ce_jobs_next_check_at", ["next_check_at"])

    with op.batch_alter_table("ces") as batch:
        batch.add_column(
            sa.Column("breaker", sa.String(16), nullable=False, server_default="closed")
        )
        batch.add_column(sa.Column("breaker_forced", sa.String(16), nullable=True))
        batch.add_column(sa.Column("failures", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("opened_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("probe_job_id", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("probe_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("last_submit_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("success_score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("last_error_at", UTCDateTime(), nullable=True))

    op.create_table(
        "delegations",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("credential", sa.String(255), nullable=False),
        sa.Column("ce", sa.String(255), nullable=False),
        sa.Column("delegation_id", sa.String(255), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_delegations"),
        sa.UniqueConstraint("credential", "ce", name="uq_delegations_credential_ce"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("delegations")
    with op.batch_alter_table("ces") as batch:
        for name in [
            "breaker",
            "breaker_forced",
            "failures",
            "opened_at",
            "probe_job_id",
            "probe_at",
            "last_submit_at",
            "success_score",
            "last_error",
            "last_error_at",
        ]:
            batch.drop_column(name)
    with op.batch_alter_table("ce_jobs") as batch:
        batch.drop_index("ix_ce_jobs_next_check_at")
        batch.drop_constraint("uq_ce_jobs_token", type_="unique")
        for name in [
            "pandaid",
            "queue",
            "candidates",
            "excluded",
            "token",
            "submissions",
            "input_dir",
            "output_dir",
            "next_check_at",
            "last_seen_at",
        ]:
            batch.drop_column(name)
    with op.batch_alter_table("panda_jobs") as batch:
        for name in [
            "report",
            "report_failures",
            "heartbeat_less",
            "access_point",
            "log_url",
            "event_ranges",
        ]:
            batch.drop_column(name)
