"""Submit and status throughput of the engine daemons against the real ARC test CE (jobs/s).

Where ``arc_throughput`` times the ARC back end's calls alone, this times the daemons' cycles:
``submitter.run_once`` (claim, the intent transaction, the CE call, the recording transaction,
the breaker) and ``poller.run_once`` (claim, the CE's ``info`` call, the columns and transitions
written), on a fresh SQLite database, against the CE of ``tests/harness/arc-ce`` (start it first).

Two CE entries point at the one test CE: ``bulk`` (``submit_batch`` ``--batch``, ``status_batch``
500) and ``single`` (both 1: one REST call per job). Per repetition and CE:

1. submit: ``--jobs`` rows in ``tosubmit`` go through submitter cycles until none is left;
2. status: every job's ``next_check_at`` is reset and poller cycles run until each was asked.

Each CE gets one warm-up job first (its delegation is made then, outside the timings).
Correctness is checked, not assumed: every job must end ``submitted`` with its own CE job id,
and every polled job must have ``last_seen_at`` set by the poll. The jobs are killed and cleaned
at the end (also after an error).

Run: ``PYTHONPATH=. python -m benchmarks.arc_engine_throughput [--jobs N] [--batch B]
[--repeat R]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from act.common.db import Database
from act.common.schema import ce_jobs
from act.common.states import Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs
from act.engine import poller, submitter
from act.engine.runtime import pool
from act.service.settings import Settings
from benchmarks._common import print_rates
from tests.support.arc_real import environment
from tests.support.dbs import fresh_database
from tests.support.follow import context

log = logging.getLogger("act.bench.arc_engine")
DESCRIPTION = '&(executable="/bin/true")'


class BenchmarkError(RuntimeError):
    pass


def settings(root: str, env: dict[str, str], batch: int) -> Settings:
    def ce(submit_batch: int, status_batch: int) -> dict[str, Any]:
        return {
            "backend": "arc",
            "url": env["ACT_ARC_URL"],
            "queue": "fork",
            "credential": env["ACT_ARC_PROXY"],
            "ca": env["ACT_ARC_CA_DIR"],
            "timeout": 120.0,
            "min_spacing": 0,
            "max_queued": 100_000,
            "max_per_cycle": 100_000,
            "options": {"submit_batch": submit_batch, "status_batch": status_batch},
        }

    return Settings.model_validate(
        {
            "root": root,
            "engine": {"ces": {"bulk": ce(batch, 500), "single": ce(1, 1)}},
        }
    )


def make_jobs(db: Database, ce: str, count: int) -> list[int]:
    rows = [
        {"backend": "arc", "candidates": ce, "description": DESCRIPTION, "attempts_left": 1}
        for _ in range(count)
    ]
    ids: list[int] = db.run(
        lambda conn: create_jobs(conn, Layer.CE, rows, "tosubmit", actor=Actor.TRANSLATOR)
    )
    return ids


def rows(db: Database, ids: list[int]) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [
            dict(r)
            for r in conn.execute(sa.select(ce_jobs).where(ce_jobs.c.id.in_(ids))).mappings()
        ]


def submit_all(db: Database, ctx: Any, ids: list[int]) -> float:
    start = time.perf_counter()
    for _ in range(len(ids) + 5):
        submitter.run_once(ctx)
        if all(r["state"] != "tosubmit" for r in rows(db, ids)):
            break
    seconds = time.perf_counter() - start
    found = rows(db, ids)
    bad = [r for r in found if r["state"] != "submitted" or not r["ce_job_id"]]
    if bad:
        raise BenchmarkError(f"{len(bad)} job(s) not submitted: {bad[0]['error_text']}")
    if len({r["ce_job_id"] for r in found}) != len(ids):
        raise BenchmarkError("two jobs share a CE job id")
    return seconds


def poll_all(db: Database, ctx: Any, ids: list[int]) -> float:
    mark = utcnow()
    with db.transaction() as conn:
        conn.execute(sa.update(ce_jobs).where(ce_jobs.c.id.in_(ids)).values(next_check_at=None))
    start = time.perf_counter()
    for _ in range(len(ids) + 5):
        poller.run_once(ctx)
        if all(r["last_seen_at"] is not None and r["last_seen_at"] >= mark for r in rows(db, ids)):
            break
    seconds = time.perf_counter() - start
    unseen = [r for r in rows(db, ids) if r["last_seen_at"] is None or r["last_seen_at"] < mark]
    if unseen:
        raise BenchmarkError(f"{len(unseen)} job(s) were not polled")
    return seconds


def cleanup(db: Database, config: Settings) -> None:
    """Kill and clean every CE job made (A-REX cleans a killed job once the kill is done)."""
    with db.read() as conn:
        found = conn.execute(
            sa.select(ce_jobs.c.ce_name, ce_jobs.c.ce_job_id).where(
                ce_jobs.c.ce_job_id.is_not(None)
            )
        ).all()
    engines = pool(context(db, config, "cleanup"))
    try:
        for name in ("bulk", "single"):
            ids = [str(r.ce_job_id) for r in found if r.ce_name == name]
            ce = engines.ce(name)
            backend = engines.backend(ce)
            for start in range(0, len(ids), 200):
                backend.kill(ce, ids[start : start + 200])
                backend.clean(ce, ids[start : start + 200])
    finally:
        engines.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    env = environment()
    work = Path(tempfile.mkdtemp(prefix="act-arc-engine-bench-"))
    figures: dict[str, list[float]] = {}
    with fresh_database("sqlite", work) as url:
        db = Database(url)
        config = settings(str(work / "root"), env, args.batch)
        batch = max(100, args.jobs)
        sub = context(db, config, "submitter", batch=batch)
        pol = context(db, config, "poller", batch=batch)
        try:
            for name in ("bulk", "single"):  # delegations, sessions: outside the timings
                submit_all(db, sub, make_jobs(db, name, 1))
            for _ in range(args.repeat):
                for name in ("bulk", "single"):
                    ids = make_jobs(db, name, args.jobs)
                    seconds = submit_all(db, sub, ids)
                    figures.setdefault(f"submit {name}", []).append(len(ids) / seconds)
                    seconds = poll_all(db, pol, ids)
                    figures.setdefault(f"status {name}", []).append(len(ids) / seconds)
        finally:
            pool(sub).close()
            pool(pol).close()
            cleanup(db, config)
            db.dispose()
    print(
        f"engine daemons against the ARC CE {env['ACT_ARC_URL']} (SQLite), {args.jobs} jobs "
        f"per measurement, bulk batch {args.batch}, {args.repeat} repetitions, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    print_rates(figures, 16)
    return 0


if __name__ == "__main__":
    sys.exit(main())
