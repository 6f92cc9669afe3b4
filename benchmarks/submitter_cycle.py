"""How fast the submitter moves jobs from ``tosubmit`` to ``submitted``, per database backend.

This is a benchmark, not a test: it measures and prints, and only checks correctness (every job
submitted exactly once, none left behind). It runs the real submitter cycle
(``run_daemon(submitter, once=True)``) against the scripted back-end double
(``tests/support/scripted_backend.py``), so the figure is act's own cost per job: claims, the two
transactions of the crash-safe protocol, the breaker and the ``ces`` row, plus the double's
JSON-file bookkeeping (one file rewrite per submit call), which a real CE call would dwarf.

Run: ``PYTHONPATH=. python -m benchmarks.submitter_cycle [--backends ...] [--jobs N]
[--batch B]``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import sqlalchemy as sa

from act.common.daemon import run_daemon
from act.common.db import Database
from act.common.schema import ce_jobs
from act.common.states import Actor, Layer
from act.common.transitions import create_jobs
from act.engine.submitter import DAEMON
from act.service.settings import Settings
from tests.support.dbs import fresh_database, url_text
from tests.support.scripted_backend import install


class BenchmarkError(RuntimeError):
    """The submitter did something wrong: the figures would mean nothing."""


def bench(backend: str, jobs: int, batch: int, workdir: Path) -> dict[str, float]:
    script = install(None, workdir / f"{backend}.json")
    with fresh_database(backend, workdir) as url:
        db = Database(url)
        settings = Settings.model_validate(
            {
                "root": str(workdir),
                "db": {"url": url_text(url)},
                "daemons": {"submitter": {"batch": batch}},
                "engine": {
                    "ces": {
                        name: {
                            "backend": "scripted",
                            "max_queued": jobs,
                            "max_per_cycle": batch,
                            "min_spacing": 0,
                        }
                        for name in ("ce1", "ce2")
                    }
                },
            }
        )
        rows = [
            {"backend": "scripted", "candidates": "ce1 ce2", "description": "x", "attempts_left": 1}
            for _ in range(jobs)
        ]
        for start in range(0, jobs, 1000):
            chunk = rows[start : start + 1000]
            db.run(
                functools.partial(
                    create_jobs,
                    layer=Layer.CE,
                    rows=chunk,
                    state="tosubmit",
                    actor=Actor.TRANSLATOR,
                )
            )
        cycles = 0
        began = time.perf_counter()
        while True:
            with db.read() as conn:
                left = conn.execute(
                    sa.select(sa.func.count()).where(ce_jobs.c.state != "submitted")
                ).scalar_one()
            if not left:
                break
            if cycles > 10 * jobs // batch + 10:
                raise BenchmarkError(f"{left} job(s) never submitted")
            run_daemon(DAEMON, settings, "submitter", once=True, db=db)
            cycles += 1
        elapsed = time.perf_counter() - began
        with db.read() as conn:
            tokens = list(conn.execute(sa.select(ce_jobs.c.token)).scalars())
        at_ce = Counter(script.submitted_tokens())
        if sorted(at_ce) != sorted(tokens) or any(n != 1 for n in at_ce.values()):
            raise BenchmarkError("a job was submitted twice or not at all")
        db.dispose()
    return {"jobs": jobs, "cycles": cycles, "seconds": elapsed, "jobs_per_s": jobs / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backends", default="sqlite,mariadb,postgresql")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500, help="claim batch and max_per_cycle")
    args = parser.parse_args()
    logging.getLogger("act").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            result = bench(backend, args.jobs, args.batch, Path(tmp))
            print(
                f"{backend:<11} {result['jobs']:>6} jobs in {result['cycles']:>3} cycles: "
                f"{result['seconds']:7.2f}s, {result['jobs_per_s']:8.1f} jobs/s (pid {os.getpid()})"
            )


if __name__ == "__main__":
    main()
