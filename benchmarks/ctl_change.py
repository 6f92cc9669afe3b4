"""actctl resubmit / kill by filter: how long an operator waits for N jobs to move.

For each backend: N running PanDA jobs of one queue, each with a running CE job (set up through
the real transition function, not timed). Then, in-process through ``act.ctl.cli.main``:

1. ``resubmit --queue Q --yes``: N PanDA jobs → toresubmit, N CE jobs → tocancel, one record;
2. ``kill --queue Q --yes``: the same N jobs, now toresubmit → tobekilled.

Each command's wall time includes selecting the jobs, the claims, the transitions with their
history rows and the record. Checks (else BenchmarkError): every job moved exactly once, every
CE job is in tocancel, exactly one operator_actions row per command.
"""

from __future__ import annotations

import contextlib
import io
import time

import sqlalchemy as sa

from act.common.db import Database
from act.common.schema import ce_jobs, operator_actions, panda_jobs
from act.common.states import Layer
from act.common.transitions import create_jobs, transition
from act.ctl.cli import main
from benchmarks._common import BenchmarkError, arguments, scratch_database
from tests.support.jobs import make_jobs, path_to

QUEUE = "TEST_QUEUE"  # what tests.support.jobs.panda_row gives


def _prepare(db: Database, rows: int, batch: int) -> None:
    for start in range(0, rows, batch):
        count = min(batch, rows - start)

        def make(conn: sa.Connection, first: int = start + 1, count: int = count) -> None:
            pids = make_jobs(conn, Layer.PANDA, "running", count, first_panda_id=first)
            ce_rows = [
                {"backend": "arc", "ce_name": "ce1", "attempts_left": 1, "panda_job_id": pid}
                for pid in pids
            ]
            path = path_to(Layer.CE, "running")
            ids = create_jobs(conn, Layer.CE, ce_rows, path[0].to_state, actor=min(path[0].actors))
            for edge in path[1:]:
                assert edge.from_state is not None
                transition(
                    conn, Layer.CE, ids, edge.from_state, edge.to_state, actor=min(edge.actors)
                )

        db.run(make)


def _timed(url: str, *args: str) -> float:
    argv = ["--db-url", url, *args, "--queue", QUEUE, "--reason", "benchmark", "--yes"]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise BenchmarkError(f"actctl {args[0]} exited {code}")
    return elapsed


def _check(db: Database, rows: int, state: str, actions: int) -> None:
    with db.read() as conn:
        moved = conn.execute(
            sa.select(sa.func.count()).select_from(panda_jobs).where(panda_jobs.c.state == state)
        ).scalar_one()
        cancelling = conn.execute(
            sa.select(sa.func.count()).select_from(ce_jobs).where(ce_jobs.c.state == "tocancel")
        ).scalar_one()
        recorded = conn.execute(
            sa.select(sa.func.count()).select_from(operator_actions)
        ).scalar_one()
    if (moved, cancelling, recorded) != (rows, rows, actions):
        raise BenchmarkError(
            f"{state}: {moved} of {rows} jobs, {cancelling} CE jobs in tocancel, "
            f"{recorded} records (want {actions})"
        )


def run(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    print(f"actctl changing commands, {args.rows} jobs by --queue filter")
    for backend in args.backends.split(","):
        with scratch_database(backend) as (db, _):
            _prepare(db, args.rows, args.batch)
            url = db.url.render_as_string(hide_password=False)
            resubmit = _timed(url, "resubmit")
            _check(db, args.rows, "toresubmit", 1)
            kill = _timed(url, "kill")
            _check(db, args.rows, "tobekilled", 2)
        print(
            f"  {backend:12s} resubmit {resubmit:6.2f} s ({args.rows / resubmit:8.1f} jobs/s)"
            f"   kill {kill:6.2f} s ({args.rows / kill:8.1f} jobs/s)"
        )


if __name__ == "__main__":
    run()
