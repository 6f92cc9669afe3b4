"""The ``storage_endpoints`` table: operators' down switch and the last outcome per endpoint.

An endpoint is ``scheme://host:port`` (:func:`act.atlas.storage.model.endpoint_of`). A row exists
once the validator has checked a file there or an operator has switched it (``actctl storage``).
``enabled = false`` means *down*: the validator does not contact it and puts off the jobs with
files there, instead of failing them for the storage's fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.db import upsert
from act.common.schema import storage_endpoints as table
from act.common.timeutil import utcnow


def down(conn: Connection) -> set[str]:
    """Endpoints an operator switched down."""
    query = sa.select(table.c.endpoint).where(table.c.enabled.is_(False))
    return set(conn.execute(query).scalars())


def _upsert(conn: Connection, endpoint: str, values: Mapping[str, Any]) -> None:
    upsert(conn, table, table.c.endpoint, endpoint, dict(values))


def switch(conn: Connection, endpoint: str, *, up: bool, reason: str | None, by: str) -> None:
    """An operator's switch: ``up`` false marks the endpoint down."""
    values = {"enabled": up, "reason": reason, "updated_by": by, "updated_at": utcnow()}
    _upsert(conn, endpoint, values)


def record(conn: Connection, ok: set[str], errors: Mapping[str, str]) -> None:
    """The outcome of a round of checks: endpoints that answered, and those that did not."""
    now = utcnow()
    for endpoint in sorted(ok - set(errors)):
        _upsert(conn, endpoint, {"last_ok_at": now, "updated_at": now})
    for endpoint, error in sorted(errors.items()):
        values = {"last_error": error[:2000], "last_error_at": now, "updated_at": now}
        _upsert(conn, endpoint, values)


def rows(conn: Connection) -> list[dict[str, Any]]:
    """Every known endpoint, for ``actctl storage``."""
    query = sa.select(table).order_by(table.c.endpoint)
    return [dict(row._mapping) for row in conn.execute(query)]
