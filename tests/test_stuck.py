"""The stuck-state policy: the janitor moves jobs stuck past their rule, with the rule as reason."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from act.common import exitcodes
from act.common.daemon import run_daemon
from act.common.db import Database
from act.common.schema import panda_jobs
from act.common.states import Layer
from act.common.timeutil import seconds, utcnow
from act.engine import stuck
from act.engine.janitor import DAEMON
from act.engine.settings import EngineSettings, StuckRule
from tests.support.follow import ago, history, put_job, row_of, set_columns, settings
from tests.support.jobs import make_jobs

RULES = [
    StuckRule(layer="ce", state="submitted", after=3600, action="tocancel"),
    StuckRule(layer="ce", state="done", after=60, action="toclean"),
    StuckRule(layer="panda", state="queued", after=3600, action="tobekilled"),
]


def test_jobs_past_their_rule_move_with_the_rule_as_reason(db: Database) -> None:
    old = put_job(db, "submitted")
    young = put_job(db, "submitted")
    held = put_job(db, "submitted")  # claimed by a daemon working on it
    done = put_job(db, "done")
    set_columns(db, old, state_changed_at=ago(4000))
    set_columns(db, young, state_changed_at=ago(100))
    set_columns(
        db,
        held,
        state_changed_at=ago(4000),
        lease_owner="poller@x",
        lease_expires=utcnow() + seconds(600),
    )
    set_columns(db, done, state_changed_at=ago(120))
    [panda] = db.run(lambda conn: make_jobs(conn, Layer.PANDA, "queued"))
    db.run(
        lambda conn: conn.execute(
            sa.update(panda_jobs).where(panda_jobs.c.id == panda).values(state_changed_at=ago(4000))
        )
    )
    applied = stuck.apply(db, RULES, owner="janitor@test", limit=100)
    assert [a.moved for a in applied] == [1, 1, 1]
    assert row_of(db, old)["state"] == "tocancel"
    assert row_of(db, young)["state"] == row_of(db, held)["state"] == "submitted"
    assert row_of(db, done)["state"] == "toclean"
    assert history(db, old)[-1] == (
        "submitted",
        "tocancel",
        "janitor",
        "stuck: ce submitted > 3600s -> tocancel",
    )
    with db.read() as conn:
        state = conn.execute(
            sa.select(panda_jobs.c.state).where(panda_jobs.c.id == panda)
        ).scalar_one()
    assert state == "tobekilled"
    assert row_of(db, old)["lease_owner"] is None  # released by the move


def test_a_cycle_moves_at_most_its_batch(db: Database) -> None:
    jobs = [put_job(db, "submitted") for _ in range(3)]
    for job in jobs:
        set_columns(db, job, state_changed_at=ago(4000))
    first = stuck.apply(db, RULES, owner="janitor@test", limit=2)
    assert sum(a.moved for a in first) == 2
    second = stuck.apply(db, RULES, owner="janitor@test", limit=2)
    assert sum(a.moved for a in second) == 1
    assert [row_of(db, j)["state"] for j in jobs] == ["tocancel"] * 3


def test_the_janitor_applies_the_configured_rules_and_logs_counts(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = settings(
        tmp_path,
        stuck=[{"layer": "ce", "state": "cancelling", "after": 60, "action": "cancelled"}],
    )
    jobs = [put_job(db, "cancelling") for _ in range(2)]
    for job in jobs:
        set_columns(db, job, state_changed_at=ago(120))
    with caplog.at_level(logging.WARNING, logger="act.janitor"):
        assert run_daemon(DAEMON, config, "janitor", once=True, db=db) == exitcodes.OK
    assert [row_of(db, j)["state"] for j in jobs] == ["cancelled"] * 2
    assert "stuck: ce cancelling > 60s -> cancelled: 2 job(s) moved" in caplog.messages


def test_the_default_rules_cover_every_waiting_engine_state() -> None:
    covered = {(r.layer, r.state) for r in EngineSettings().stuck}
    for state in [
        "tosubmit",
        "submitting",
        "submitted",
        "running",
        "finishing",
        "cancelling",
        "torerun",
        "toresubmit",
        "tocancel",
        "finished",
        "failed",
        "done",
        "donefailed",
        "cancelled",
        "lost",
    ]:
        assert ("ce", state) in covered, state
