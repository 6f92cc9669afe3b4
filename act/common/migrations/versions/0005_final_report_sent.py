"""The propagator notes a final report it sends before PanDA's answer is recorded.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from act.common.schema import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("panda_jobs", sa.Column("final_sent_at", UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("panda_jobs", "final_sent_at")
