"""A daemon's context, as run_daemon makes it, for calling a daemon's ``run_once`` directly."""

from __future__ import annotations

import logging
import threading
from typing import Any

from act.common.config import DaemonSettings, S
from act.common.daemon import Context
from act.common.db import Database


def daemon_context(
    db: Database,
    settings: S,
    name: str,
    *,
    options: Any = None,
    batch: int | None = None,
) -> Context[S]:
    """The context of daemon ``name`` (logger ``act.<name>``, instance ``test:1:abc``) without
    the daemon loop: no liveness row, no heartbeat, nothing closed at the end."""
    daemon = DaemonSettings() if batch is None else DaemonSettings(batch=batch)
    return Context(
        name=name,
        instance="test:1:abc",
        settings=settings,
        daemon=daemon,
        options=options,
        db=db,
        log=logging.getLogger(f"act.{name}"),
        stop=threading.Event(),
    )
