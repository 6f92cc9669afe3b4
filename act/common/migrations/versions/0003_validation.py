"""Validation: when a job's outputs are checked next, and operators' switches per storage endpoint.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from act.common.schema import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def upgrade() -> None:
    with op.batch_alter_table("panda_jobs") as batch:
        batch.add_column(sa.Column("validate_after", UTCDateTime(), nullable=True))
        batch.add_column(
            sa.Column("validation_deferrals", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("validation_note", sa.Text(), nullable=True))
        batch.add_column(sa.Column("logs_published_at", UTCDateTime(), nullable=True))

    op.create_table(
        "storage_endpoints",
        sa.Column("endpoint", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.String(128), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("last_ok_at", UTCDateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("endpoint", name="pk_storage_endpoints"),
        **MYSQL,
    )


def downgrade() -> None:
    op.drop_table("storage_endpoints")
    with op.batch_alter_table("panda_jobs") as batch:
        for name in [
            "validate_after",
            "validation_deferrals",
            "validation_note",
            "logs_published_at",
        ]:
            batch.drop_column(name)
