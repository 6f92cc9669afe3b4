"""Shared helpers of the follow-up daemons: claims per state, renewal before slow CE calls."""

from __future__ import annotations

from pathlib import Path

from act.common.db import Database
from act.common.timeutil import seconds, utcnow
from act.engine.queries import ToFetch, ToPoll
from act.engine.work import claim_jobs, keep
from tests.support.follow import context, put_job, row_of, set_columns, settings


def test_claims_take_the_states_in_order_up_to_the_limit(db: Database, tmp_path: Path) -> None:
    ctx = context(db, settings(tmp_path), "poller", batch=3)
    running = [put_job(db, "running") for _ in range(2)]
    submitted = [put_job(db, "submitted") for _ in range(2)]
    rows = claim_jobs(ctx, ["submitted", "running"], ToPoll)
    assert all(isinstance(row, ToPoll) for row in rows)
    assert [row.id for row in rows] == sorted([*submitted, running[0]])
    assert all(row_of(db, job)["lease_owner"] == ctx.owner for job in [*submitted, running[0]])
    assert row_of(db, running[1])["lease_owner"] is None


def test_keep_renews_and_drops_jobs_taken_over_meanwhile(db: Database, tmp_path: Path) -> None:
    ctx = context(db, settings(tmp_path), "ce_fetcher")
    jobs = [put_job(db, "finished") for _ in range(3)]
    rows = claim_jobs(ctx, ["finished"], ToFetch)
    # The claim on the second expired and another instance took it.
    set_columns(db, jobs[1], lease_owner="ce_fetcher@other", lease_expires=utcnow())
    set_columns(db, jobs[0], lease_expires=utcnow() + seconds(5))
    held = keep(ctx, rows)
    assert [row.id for row in held] == [jobs[0], jobs[2]]
    left = (row_of(db, jobs[0])["lease_expires"] - utcnow()).total_seconds()
    assert left > ctx.daemon.lease - 60  # renewed for a whole lease
    assert row_of(db, jobs[1])["lease_owner"] == "ce_fetcher@other"
