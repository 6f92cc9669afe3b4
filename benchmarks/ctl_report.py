"""How long ``actctl report`` takes on a big store (1M PanDA jobs, 1M CE jobs, 3M history rows).

This is a benchmark, not a test: it measures and prints. For each backend, in a throw-away
database, it bulk-inserts (setup, not timed; plain INSERTs, not act's create_jobs, which would
take hours for this many rows) a store shaped like a long-running service:

* ``--rows`` PanDA jobs over 20 queues, most of them over (done 88%, donefailed 4%,
  donecancelled 1%), the rest waiting or running; created over the last 7 days; the live ones
  have a report scheduled, 1 in 20 of them overdue;
* as many CE jobs over 20 CEs, most ``cleaned``;
* three history rows per PanDA job spread over the 7 days, of which about 1 in 700 jobs entered
  ``failed`` in the last hour (and as many CE jobs).

Then it times, ``--repeat`` times each (median, min-max): ``report.build`` for the whole store
(what ``actctl report`` does, output aside), the same for one queue and one CE, and ``status``'s
two GROUP BY queries for comparison.

Run: ``PYTHONPATH=. python -m benchmarks.ctl_report [--backends sqlite,mariadb] [--rows N]
[--repeat R]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from act.common import job_counts
from act.common.timeutil import utcnow
from act.ctl import report
from benchmarks._common import scratch_database
from tests.support.bulk_store import CES, FAILED_EVERY, QUEUES, fill_store
from tests.support.plans import analyze


def _time(fn: Callable[[], object], repeat: int) -> list[float]:
    figures = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        figures.append(time.perf_counter() - start)
    return figures


def run(backend: str, rows: int, repeat: int) -> None:
    print(f"{backend}: {rows} PanDA jobs, {rows} CE jobs, ~{3 * rows} history rows")
    with scratch_database(backend) as (db, _root):
        now = utcnow()
        started = time.perf_counter()
        fill_store(db, rows, now, random.Random(1))
        analyze(db, ["panda_jobs", "ce_jobs", "transitions"])
        print(f"  (setup {time.perf_counter() - started:.0f}s)")

        def build(
            queue: str | None = None, ce: str | None = None, since: datetime | None = None
        ) -> dict[str, Any]:
            moment = utcnow()
            scope = report.Scope(queue, ce, since or moment - timedelta(hours=1), moment)
            with db.read() as conn:
                return report.build(conn, scope)

        def status() -> None:
            with db.read() as conn:
                job_counts.panda_counts(conn)
                job_counts.ce_counts(conn)

        found = build(since=now - timedelta(hours=1))  # the window the failures were made in
        failed = sum(q["failed_in_window"] for q in found["queues"].values())
        total = sum(q["total"] for q in found["queues"].values())
        if total != rows or failed != (rows + FAILED_EVERY - 1) // FAILED_EVERY:
            raise RuntimeError(f"report counts {total} jobs, {failed} failed: not what was made")
        figures = {
            "report (all)": _time(build, repeat),
            "report --queue --ce": _time(lambda: build(QUEUES[3], CES[5]), repeat),
            "status (for comparison)": _time(status, repeat),
        }
        for name, values in figures.items():
            spread = f"{min(values):7.2f} .. {max(values):7.2f}"
            print(f"  {name:26s} {statistics.median(values):7.2f} s   ({spread})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backends", default="sqlite,mariadb")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    for backend in args.backends.split(","):
        run(backend, args.rows, args.repeat)


if __name__ == "__main__":
    main()
