"""Helpers for the tests of the daemons that follow CE jobs (poller, fetcher, canceller, cleaner,
stuck janitor): settings with scripted CEs, a daemon context, and CE jobs put into a state."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from act.common.db import Database
from act.common.schema import ce_jobs, transitions
from act.common.states import Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs, transition
from act.engine.backend import SubmitRequest
from act.engine.config import Context, EngineConfig
from act.engine.runtime import pool
from act.service.settings import Settings
from tests.support.contexts import daemon_context
from tests.support.jobs import path_to
from tests.support.scripted_backend import NAME


def settings(tmp_path: Path, *, ces: tuple[str, ...] = ("ce1", "ce2"), **engine: Any) -> Settings:
    """Settings whose CEs use the scripted back end (install() it first)."""
    return Settings.model_validate(
        {
            "root": str(tmp_path / "root"),
            "engine": {"ces": {name: {"backend": NAME} for name in ces}, **engine},
        }
    )


def context(db: Database, config: EngineConfig, name: str, *, batch: int = 100) -> Context:
    """A daemon's context, as run_daemon makes it, for calling ``run_once`` directly."""
    return daemon_context(db, config, name, batch=batch)


def submit_at_ce(ctx: Context, ce: str, token: str, job_id: int = 0) -> str:
    """Have the (scripted) CE accept a job; its ce_job_id."""
    engines = pool(ctx)
    target = engines.ce(ce)
    result = engines.backend(target).submit(target, [SubmitRequest(job_id, token, "desc")])
    assert result[0].ce_job_id is not None
    return result[0].ce_job_id


def put_job(db: Database, state: str, *, ce: str | None = "ce1", **values: Any) -> int:
    """A CE job walked to ``state`` along allowed edges, then given non-state ``values``."""
    path = path_to(Layer.CE, state)
    row = {
        "backend": NAME,
        "ce_name": ce,
        "description": "desc",
        "attempts_left": 3,
        "panda_id": 1000,
    }

    def make(conn: Any) -> int:
        [job] = create_jobs(conn, Layer.CE, [row], path[0].to_state, actor=min(path[0].actors))
        for edge in path[1:]:
            assert edge.from_state is not None
            transition(
                conn, Layer.CE, [job], edge.from_state, edge.to_state, actor=min(edge.actors)
            )
        if values:
            conn.execute(sa.update(ce_jobs).where(ce_jobs.c.id == job).values(values))
        return job

    return db.run(make)


def set_columns(db: Database, job: int, **values: Any) -> None:
    """Test set-up only: e.g. move ``state_changed_at`` into the past instead of sleeping."""
    db.run(lambda conn: conn.execute(sa.update(ce_jobs).where(ce_jobs.c.id == job).values(values)))


def row_of(db: Database, job_id: int) -> dict[str, Any]:
    with db.read() as conn:
        return dict(conn.execute(sa.select(ce_jobs).where(ce_jobs.c.id == job_id)).mappings().one())


def history(db: Database, job_id: int) -> list[tuple[str | None, str, str, str | None]]:
    """(from, to, actor, reason) of the job's transitions, oldest first."""
    with db.read() as conn:
        rows = conn.execute(
            sa.select(
                transitions.c.from_state,
                transitions.c.to_state,
                transitions.c.actor,
                transitions.c.reason,
            )
            .where(transitions.c.layer == "ce", transitions.c.job_id == job_id)
            .order_by(transitions.c.id)
        ).all()
    return [tuple(r) for r in rows]


def ago(seconds: float) -> datetime:
    return utcnow() - timedelta(seconds=seconds)
