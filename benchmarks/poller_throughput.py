"""How many CE jobs per second the poller moves, CE answers excluded.

A benchmark, not a test (see README.md). The back end is ``InstantCE``, a stand-in answering every
status call at once with RUNNING, so the figure is act's own cost per polled job: the claim, the
row read, one ``transition`` (submitted → running, with the CE's values and a history row) per
job, and the release. Checks: every job ends ``running`` with exactly one history row for the
move and no lease left.

    PYTHONPATH=. python -m benchmarks.poller_throughput [--backends sqlite,mariadb,postgresql]
        [--rows N (5000)] [--batch B (500)]
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from act.common.db import Database
from act.common.schema import ce_jobs, transitions
from act.common.states import Actor, Layer
from act.common.transitions import create_jobs, transition
from act.engine import poller
from act.engine.backend import BACKENDS, CE, CEReportedState, JobStatus, Limits
from act.engine.config import Context
from act.service.settings import Settings
from benchmarks._common import BenchmarkError, arguments, scratch_database
from tests.support.contexts import daemon_context


class InstantCE:
    """Benchmark stand-in for a CE back end: every job it is asked about is RUNNING."""

    def __init__(self, **_: Any) -> None:
        pass

    def limits(self, ce: CE) -> Limits:
        return Limits(status_batch=500)

    def status(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, JobStatus | None]:
        return {
            i: JobStatus(i, CEReportedState.RUNNING, "RUNNING", worker_node="wn1")
            for i in ce_job_ids
        }

    def close(self) -> None:
        pass


def _prefill(db: Database, rows: int) -> None:
    def make(conn: Any, start: int, count: int) -> None:
        ids = create_jobs(
            conn,
            Layer.CE,
            [
                {"backend": "instant", "ce_name": "ce1", "ce_job_id": f"ce1/{start + i}"}
                for i in range(count)
            ],
            "tosubmit",
            actor=Actor.TRANSLATOR,
        )
        for a, b, actor in (
            ("tosubmit", "submitting", Actor.SUBMITTER),
            ("submitting", "submitted", Actor.SUBMITTER),
        ):
            transition(conn, Layer.CE, ids, a, b, actor=actor)

    for start in range(0, rows, 1000):
        db.run(functools.partial(make, start=start, count=min(1000, rows - start)))


def _check(db: Database, rows: int) -> None:
    with db.read() as conn:
        states: dict[str, int] = dict(
            conn.execute(
                sa.select(ce_jobs.c.state, sa.func.count()).group_by(ce_jobs.c.state)
            ).all()
        )
        moved = conn.execute(
            sa.select(sa.func.count()).where(
                transitions.c.from_state == "submitted", transitions.c.to_state == "running"
            )
        ).scalar_one()
        leased = conn.execute(
            sa.select(sa.func.count()).where(ce_jobs.c.lease_owner.is_not(None))
        ).scalar_one()
    if states != {"running": rows} or moved != rows or leased:
        raise BenchmarkError(f"states {states}, {moved} history rows, {leased} leased")


def run(backend: str, rows: int, batch: int) -> float:
    BACKENDS["instant"] = "benchmarks.poller_throughput:InstantCE"
    with scratch_database(backend) as (db, root):
        _prefill(db, rows)
        settings = Settings.model_validate(
            {"root": str(root), "engine": {"ces": {"ce1": {"backend": "instant"}}}}
        )
        ctx: Context = daemon_context(db, settings, "poller", batch=batch)
        started = time.perf_counter()
        while poller.run_once(ctx):
            pass
        elapsed = time.perf_counter() - started
        _check(db, rows)
        return rows / elapsed


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)
    for backend in args.backends.split(","):
        rate = run(backend, args.rows, args.batch)
        print(f"{backend:10s} {args.rows} jobs, batch {args.batch}: {rate:8.0f} jobs/s polled")
    return 0


if __name__ == "__main__":
    sys.exit(main())
