"""The reads of the ``queues`` table behind ``actctl queues`` and ``actctl queue``
(:mod:`act.ctl.queues`), typed: an operator's switch and limits for each PanDA queue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.rows import fetch, row_type, select_of
from act.common.schema import queues


@row_type(queues)
@dataclass(frozen=True)
class QueueShown:
    """A PanDA queue's ``queues`` row as actctl shows it: enabled or not, the operator's
    limits, and who last changed it and why."""

    name: str
    enabled: bool
    max_jobs: int | None
    max_queued: int | None
    reason: str | None
    updated_by: str | None
    updated_at: datetime


def queues_shown(conn: Connection) -> dict[str, QueueShown]:
    """Every queue that has a ``queues`` row, by name."""
    return {row.name: row for row in fetch(conn, QueueShown, select_of(QueueShown, queues))}


def queue_known(conn: Connection, name: str) -> bool:
    """Whether the queue ``name`` has a ``queues`` row."""
    found = conn.execute(sa.select(queues.c.name).where(queues.c.name == name)).first()
    return found is not None
