"""One name per concept: ``ce_jobs.pandaid`` becomes ``panda_id`` (as in ``panda_jobs``),
``ce_jobs.ce_endpoint`` becomes ``ce_name`` and ``ces.endpoint`` becomes ``ces.name`` (both hold
the name of a CE under ``ces:`` in the config, never an endpoint URL).

Renames only, no data copied: PostgreSQL and MariaDB rename the columns and the three indexes
that carry ``ce_endpoint`` in their names in place (metadata changes, no table rebuild); SQLite
renames the columns in place (3.25 and newer) and rebuilds those three indexes, since it cannot
rename an index.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

#: (table, old name, new name, type, nullable) of each renamed column.
COLUMNS = (
    ("ce_jobs", "pandaid", "panda_id", sa.BigInteger(), True),
    ("ce_jobs", "ce_endpoint", "ce_name", sa.String(255), True),
    ("ces", "endpoint", "name", sa.String(255), False),  # the primary key: it stays one
)

#: The indexes of ce_jobs whose names carry a renamed column: (old name, old columns).
INDEXES = (
    ("ix_ce_jobs_ce_endpoint_state_id", ("ce_endpoint", "state", "id")),
    ("ix_ce_jobs_queue_ce_endpoint_state", ("queue", "ce_endpoint", "state")),
    ("ix_ce_jobs_backend_ce_endpoint_ce_job_id", ("backend", "ce_endpoint", "ce_job_id")),
)


def _renamed(name: str, forward: bool) -> str:
    old, new = ("ce_endpoint", "ce_name") if forward else ("ce_name", "ce_endpoint")
    return name.replace(old, new)


def _rename(forward: bool) -> None:
    dialect = op.get_bind().dialect.name
    for table, old, new, type_, nullable in COLUMNS:
        source, target = (old, new) if forward else (new, old)
        if dialect == "sqlite":
            op.execute(sa.text(f"ALTER TABLE {table} RENAME COLUMN {source} TO {target}"))
        else:
            op.alter_column(
                table,
                source,
                new_column_name=target,
                existing_type=type_,
                existing_nullable=nullable,
            )
    for old_index, old_columns in INDEXES:
        source = old_index if forward else _renamed(old_index, True)
        target = _renamed(old_index, True) if forward else old_index
        if dialect == "postgresql":
            op.execute(sa.text(f"ALTER INDEX {source} RENAME TO {target}"))
        elif dialect in ("mysql", "mariadb"):
            op.execute(sa.text(f"ALTER TABLE ce_jobs RENAME INDEX {source} TO {target}"))
        else:
            columns = [_renamed(c, True) if forward else c for c in old_columns]
            op.drop_index(source, table_name="ce_jobs")
            op.create_index(target, "ce_jobs", columns)


def upgrade() -> None:
    _rename(forward=True)


def downgrade() -> None:
    _rename(forward=False)
