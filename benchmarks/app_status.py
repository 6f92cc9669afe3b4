"""How many PanDA jobs per second app_status moves (CE running -> PanDA queued -> running).

A benchmark, not a test (see README.md). N PanDA jobs in ``queued`` each have a CE job in
``running``; app_status cycles (``batch`` rows per query) until none is left. The figure is act's
own cost: the joined query, one transition per batch and source state (with history rows and
``next_report_at``). Checks: every PanDA job ends ``running`` with exactly one history row for
the move.

    PYTHONPATH=. python -m benchmarks.app_status [--backends sqlite,mariadb,postgresql]
        [--rows N (5000)] [--batch B (500)]
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any

import sqlalchemy as sa

from act.atlas import app_status
from act.atlas.config import Context
from act.common.db import Database
from act.common.schema import panda_jobs, transitions
from act.common.states import Actor, Layer
from act.common.transitions import create_jobs, transition
from act.service.settings import Settings
from benchmarks._common import BenchmarkError, arguments, scratch_database
from tests.support.contexts import daemon_context

CHUNK = 1000


def _prefill(db: Database, rows: int) -> None:
    def make(conn: Any, start: int, count: int) -> None:
        panda = [
            {"panda_id": start + i, "queue": "Q", "spec": "{}", "spec_format": "json"}
            for i in range(count)
        ]
        pids = create_jobs(conn, Layer.PANDA, panda, "received", actor=Actor.PANDA_FETCHER)
        transition(conn, Layer.PANDA, pids, "received", "queued", actor=Actor.TRANSLATOR)
        ce = [
            {"backend": "local", "panda_job_id": pid, "panda_id": start + i, "attempts_left": 1}
            for i, pid in enumerate(pids)
        ]
        cids = create_jobs(conn, Layer.CE, ce, "tosubmit", actor=Actor.TRANSLATOR)
        for a, b, actor in (
            ("tosubmit", "submitting", Actor.SUBMITTER),
            ("submitting", "submitted", Actor.SUBMITTER),
            ("submitted", "running", Actor.POLLER),
        ):
            transition(conn, Layer.CE, cids, a, b, actor=actor)

    for start in range(1, rows + 1, CHUNK):
        db.run(functools.partial(make, start=start, count=min(CHUNK, rows + 1 - start)))


def run(backend: str, rows: int, batch: int) -> tuple[float, int]:
    with scratch_database(backend) as (db, root):
        _prefill(db, rows)
        settings = Settings.model_validate({"root": str(root)})
        options = app_status.AppStatusOptions()
        ctx: Context = daemon_context(db, settings, "app_status", batch=batch, options=options)
        cycles = 0
        started = time.perf_counter()
        while True:
            cycles += 1
            if not app_status.run_once(ctx):
                break
        seconds = time.perf_counter() - started
        with db.read() as conn:
            left = conn.execute(
                sa.select(sa.func.count())
                .select_from(panda_jobs)
                .where(panda_jobs.c.state != "running")
            ).scalar()
            moves = conn.execute(
                sa.select(sa.func.count())
                .select_from(transitions)
                .where(transitions.c.layer == "panda", transitions.c.to_state == "running")
            ).scalar()
        if left or moves != rows:
            raise BenchmarkError(f"{backend}: {left} jobs not running, {moves} moves")
        return seconds, cycles


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)
    print("| backend | jobs | cycles | seconds | jobs/s |\n|---|---:|---:|---:|---:|")
    for backend in args.backends.split(","):
        seconds, cycles = run(backend, args.rows, args.batch)
        print(
            f"| {backend} | {args.rows} | {cycles} | {seconds:.2f} | {args.rows / seconds:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
