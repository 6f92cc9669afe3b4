"""Every statement the daemon primitives run is served by an index, on a realistic table."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from act.common import liveness
from act.common.claims import claim, release, renew
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs, processes
from act.common.states import Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import transition
from tests.support.jobs import make_jobs
from tests.support.plans import analyze, capture, full_scans

TABLES = {"panda_jobs", "ce_jobs", "processes", "transitions"}


@pytest.mark.slow
def test_claims_transitions_leases_and_liveness_use_indexes(db: Database) -> None:
    # Most jobs are over, a few hundred are waiting: what a long-running service looks like.
    db.run(lambda c: make_jobs(c, Layer.CE, "cleaned", 6000))
    db.run(lambda c: make_jobs(c, Layer.PANDA, "donefailed", 6000, first_panda_id=1))
    waiting = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 300))
    db.run(lambda c: make_jobs(c, Layer.CE, "running", 300))
    db.run(lambda c: make_jobs(c, Layer.PANDA, "received", 300, first_panda_id=10**6))
    for role in ("mover", "janitor", "submitter", "poller", "fetcher"):
        for n in range(100):
            db.run(lambda c: liveness.register(c, role, f"host:{n}", "host", n))
    # Most rows are of processes gone days ago, kept until the janitor prunes them.
    days_ago = utcnow() - timedelta(days=2)
    db.run(
        lambda c: c.execute(
            sa.update(processes)
            .where(processes.c.pid >= 5)
            .values(heartbeat_at=days_ago, stopped_at=days_ago)
        )
    )
    analyze(db, sorted(TABLES))

    with capture(db) as statements:
        ids = db.run(
            lambda c: claim(
                c, Layer.CE, ["tosubmit"], owner="o", lease=60, limit=50, shard=liveness.Shard(1, 3)
            )
        )
        db.run(
            lambda c: claim(
                c,
                Layer.CE,
                ["tosubmit"],
                owner="o",
                lease=60,
                limit=10,
                where=[ce_jobs.c.ce_name == "https://ce.example.org/arex"],
            )
        )
        db.run(
            lambda c: claim(
                c,
                Layer.PANDA,
                ["received"],
                owner="o",
                lease=60,
                limit=10,
                where=[panda_jobs.c.queue == "TEST_QUEUE"],
            )
        )
        db.run(lambda c: renew(c, Layer.CE, "o", 60))
        db.run(lambda c: renew(c, Layer.CE, "o", 60, ids[:5]))
        db.run(
            lambda c: transition(
                c, Layer.CE, ids, "tosubmit", "submitting", actor=Actor.SUBMITTER, owner="o"
            )
        )
        db.run(
            lambda c: transition(
                c, Layer.CE, waiting[-5:], "tosubmit", "submitting", actor=Actor.SUBMITTER
            )
        )
        db.run(lambda c: release(c, Layer.CE, "o", waiting[:3]))
        db.run(lambda c: release(c, Layer.PANDA, "o"))
        db.run(lambda c: liveness.beat(c, "mover", "host:3", dead_after=60))
        db.run(
            lambda c: liveness.record_cycle(
                c,
                role="mover",
                instance="host:3",
                started=utcnow(),
                ended=utcnow(),
                error=None,
            )
        )
        db.run(lambda c: liveness.unregister(c, "mover", "host:3"))
        db.run(lambda c: liveness.prune(c, older_than=3 * 86400))  # nothing due yet
    assert len(ids) == 50
    assert len(statements) >= 13
    assert full_scans(db, statements, TABLES) == []
