"""Initial schema: PanDA jobs, CE jobs, transition history, processes, queues, CEs.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from act.common.schema import BigId, LongText, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _times() -> list[sa.Column[Any]]:
    return [
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("state_changed_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def _lease() -> list[sa.Column[Any]]:
    return [
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires", UTCDateTime(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "panda_jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("panda_id", sa.BigInteger(), nullable=False),
        sa.Column("queue", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("prod_source_label", sa.String(32), nullable=True),
        sa.Column("spec", LongText, nullable=False),
        sa.Column("spec_format", sa.String(16), nullable=False),
        *_times(),
        sa.Column("panda_status", sa.String(32), nullable=True),
        sa.Column("panda_reported_at", UTCDateTime(), nullable=True),
        sa.Column("next_report_at", UTCDateTime(), nullable=True),
        sa.Column("panda_command", sa.String(32), nullable=True),
        sa.Column("panda_command_at", UTCDateTime(), nullable=True),
        sa.Column("error_code", sa.Integer(), nullable=True),
        sa.Column("error_text", sa.Text(), nullable=True),
        *_lease(),
        sa.PrimaryKeyConstraint("id", name="pk_panda_jobs"),
        sa.UniqueConstraint("panda_id", name="uq_panda_jobs_panda_id"),
        **MYSQL,
    )
    op.create_index("ix_panda_jobs_state_id", "panda_jobs", ["state", "id"])
    op.create_index("ix_panda_jobs_queue_state_id", "panda_jobs", ["queue", "state", "id"])
    op.create_index("ix_panda_jobs_next_report_at", "panda_jobs", ["next_report_at"])
    op.create_index("ix_panda_jobs_lease_owner", "panda_jobs", ["lease_owner"])

    op.create_table(
        "ce_jobs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("panda_job_id", BigId, nullable=True),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("ce_endpoint", sa.String(255), nullable=True),
        sa.Column("ce_job_id", sa.String(255), nullable=True),
        sa.Column("description", LongText, nullable=True),
        *_times(),
        sa.Column("ce_state", sa.String(128), nullable=True),
        sa.Column("attempts_left", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("error_text", sa.Text(), nullable=True),
        sa.Column("worker_node", sa.String(255), nullable=True),
        sa.Column("cpu_seconds", sa.BigInteger(), nullable=True),
        sa.Column("wall_seconds", sa.BigInteger(), nullable=True),
        sa.Column("max_rss_kb", sa.BigInteger(), nullable=True),
        sa.Column("submitted_at", UTCDateTime(), nullable=True),
        sa.Column("started_at", UTCDateTime(), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        *_lease(),
        sa.PrimaryKeyConstraint("id", name="pk_ce_jobs"),
        sa.ForeignKeyConstraint(
            ["panda_job_id"],
            ["panda_jobs.id"],
            name="fk_ce_jobs_panda_job_id_panda_jobs",
            ondelete="RESTRICT",
        ),
        **MYSQL,
    )
    op.create_index("ix_ce_jobs_state_id", "ce_jobs", ["state", "id"])
    op.create_index("ix_ce_jobs_ce_endpoint_state_id", "ce_jobs", ["ce_endpoint", "state", "id"])
    op.create_index("ix_ce_jobs_panda_job_id", "ce_jobs", ["panda_job_id"])
    op.create_index(
        "ix_ce_jobs_backend_ce_endpoint_ce_job_id",
        "ce_jobs",
        ["backend", "ce_endpoint", "ce_job_id"],
    )
    op.create_index("ix_ce_jobs_lease_owner", "ce_jobs", ["lease_owner"])

    op.create_table(
        "transitions",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("layer", sa.String(16), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=True),
        sa.Column("to_state", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_transitions"),
        **MYSQL,
    )
    op.create_index("ix_transitions_layer_job_id", "transitions", ["layer", "job_id"])
    op.create_index("ix_transitions_at", "transitions", ["at"])

    op.create_table(
        "processes",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("role", sa.String(128), nullable=False),
        sa.Column("instance", sa.String(128), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
        sa.Column("stopped_at", UTCDateTime(), nullable=True),
        sa.Column("cycles", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("errors", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("last_cycle_started_at", UTCDateTime(), nullable=True),
        sa.Column("last_cycle_ended_at", UTCDateTime(), nullable=True),
        sa.Column("last_cycle_seconds", sa.Float(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_processes"),
        sa.UniqueConstraint("role", "instance", name="uq_processes_role_instance"),
        **MYSQL,
    )
    op.create_index("ix_processes_role_heartbeat_at", "processes", ["role", "heartbeat_at"])
    op.create_index("ix_processes_heartbeat_at", "processes", ["heartbeat_at"])

    op.create_table(
        "queues",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("max_jobs", sa.Integer(), nullable=True),
        sa.Column("max_queued", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.String(128), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_queues"),
        **MYSQL,
    )
    op.create_table(
        "ces",
        sa.Column("endpoint", sa.String(255), nullable=False),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("max_queued", sa.Integer(), nullable=True),
        sa.Column("max_running", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.String(128), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("endpoint", name="pk_ces"),
        **MYSQL,
    )


def downgrade() -> None:
    for table in ("ces", "queues", "processes", "transitions", "ce_jobs", "panda_jobs"):
        op.drop_table(table)
