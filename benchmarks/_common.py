"""What the benchmarks share: a scratch database and a daemon context to drive ``run_once``."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from act.common.config import DaemonSettings, Settings
from act.common.daemon import Context
from act.common.db import Database
from tests.support.dbs import fresh_database


class BenchmarkError(RuntimeError):
    """A benchmark's own check failed: its figure would not mean what it says."""


@contextmanager
def scratch_database(backend: str) -> Iterator[tuple[Database, Path]]:
    """A fresh, migrated database on ``backend`` and a temporary root directory, both removed
    afterwards."""
    with tempfile.TemporaryDirectory() as tmp, fresh_database(backend, Path(tmp)) as url:
        db = Database(url)
        try:
            yield db, Path(tmp)
        finally:
            db.dispose()


def cycle_context(
    name: str, settings: Settings, db: Database, *, batch: int, options: Any = None
) -> Context:
    """The context ``run_once`` of daemon ``name`` gets, without the daemon loop around it."""
    return Context(
        name=name,
        instance="bench:1",
        settings=settings,
        daemon=DaemonSettings(batch=batch),
        options=options,
        db=db,
        log=logging.getLogger(f"act.{name}"),
        stop=threading.Event(),
    )
