"""Daemon query times on a store of 1,000,000 PanDA jobs and 1,000,000 CE jobs, p50/p99.

This is a benchmark, not a test: it measures and prints. For each backend, in a throw-away
database, it fills (setup, not timed) ``--rows`` PanDA jobs and as many CE jobs shaped like a
long-lived site: mostly final states, a few percent active in every state a daemon claims, over
20 queues and 20 CEs, with one history row per PanDA job. The fill runs in the database server:
1,000 rows made by act's schema through SQLAlchemy, then doubled with ``INSERT ... SELECT``
until the table holds ``--rows``; the CE jobs are made from the PanDA jobs in one
``INSERT ... SELECT``.

Then it times, ``--repeat`` times each, the per-cycle read of every daemon, by calling act's own
functions in a transaction that is rolled back afterwards (so every repetition sees the same
store): the claim of the translator, submitter, poller, fetcher, canceller, cleaner, validator and
propagator (the due-heartbeat query), the metrics daemon's snapshot, and ``actctl status`` and
``actctl report``. Each claim must take a full batch (the store holds enough rows in each state),
otherwise the benchmark stops with ``BenchmarkError``: it would be timing an empty answer.

Run: ``PYTHONPATH=. python -m benchmarks.daemon_queries [--backends sqlite,mariadb,postgresql]
[--rows N (1000000)] [--repeat R (30)]``: each query R times, or fewer (at least 5) once it took
8 s in all; the table shows p50 / p99 (repetitions).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.atlas import translator, validator
from act.atlas.propagator import jobs as propagator_jobs
from act.common import job_counts
from act.common.claims import claim
from act.common.config import DaemonSettings
from act.common.daemon import Context
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs
from act.common.schema import transitions as history
from act.common.states import Layer
from act.common.timeutil import utcnow
from act.ctl import report
from act.engine import fetcher, poller
from act.engine.queries import ToCancel, ToClean, ToFetch, ToPoll, due_for_check
from act.engine.submitter import jobs as submitter_jobs
from act.engine.work import claim_jobs
from act.service.metrics_daemon import read_snapshot
from act.service.settings import Settings
from benchmarks._common import BenchmarkError, scratch_database
from tests.support.plans import analyze

log = logging.getLogger("act.bench")

SEED = 1000
#: Seconds of repetitions per query and backend (the slow ones stop early), and their minimum.
BUDGET = 8.0
MIN_REPEAT = 5
QUEUES = [f"QUEUE_{n:02d}" for n in range(20)]
CES = [f"ce-{n:02d}.example.org" for n in range(20)]
#: PanDA job states of the seed rows, per thousand: a long-lived site, mostly over.
PANDA_MIX = [
    ("done", 860),
    ("donefailed", 40),
    ("donecancelled", 10),
    ("running", 40),
    ("queued", 15),
    ("received", 10),
    ("transferring", 10),
    ("tovalidate", 10),
    ("toresubmit", 5),
]
#: CE job states, per thousand of the CE jobs (made from the PanDA jobs by id).
CE_MIX = [
    ("cleaned", 900),
    ("running", 40),
    ("submitted", 15),
    ("tosubmit", 10),
    ("finished", 10),
    ("failed", 5),
    ("toclean", 10),
    ("tocancel", 10),
]
DAEMONS = [
    "translator",
    "submitter",
    "poller",
    "fetcher",
    "canceller",
    "cleaner",
    "validator",
    "propagator",
    "metrics",
]


# --- the store (setup, not timed) ---------------------------------------------------------------


def _mix(mix: list[tuple[str, int]]) -> list[str]:
    return [state for state, share in mix for _ in range(share)]


def fill(
    db: Database,
    rows: int,
    *,
    panda_mix: list[tuple[str, int]] = PANDA_MIX,
    ce_mix: list[tuple[str, int]] = CE_MIX,
    queues: Sequence[str] = QUEUES,
    ces: Sequence[str] = CES,
) -> None:
    """``rows`` PanDA jobs, as many CE jobs and one history row per PanDA job (see the module);
    the mixes are states with their shares per thousand."""
    now = utcnow()
    states = _mix(panda_mix)
    seed = []
    for i in range(min(SEED, rows)):
        state = states[(i * 7919) % len(states)]  # spread the states over the ids
        created = now - timedelta(seconds=(i * 604) % (7 * 86400))
        live = not state.startswith("done")
        seed.append(
            {
                "panda_id": 10**9 + i,
                "queue": queues[i % len(queues)],
                "spec": "{}",
                "spec_format": "json",
                "state": state,
                "state_changed_at": created + timedelta(seconds=60),
                "created_at": created,
                "updated_at": created,
                # live jobs have a report scheduled, 1 in 10 of them overdue
                "next_report_at": (
                    (now - timedelta(seconds=i) if i % 10 == 0 else now + timedelta(seconds=i))
                    if live
                    else None
                ),
            }
        )
    db.run(lambda c: c.execute(sa.insert(panda_jobs), seed))
    copied = [c for c in panda_jobs.c if c.name not in ("id", "panda_id")]
    count = len(seed)
    while count < rows:
        take = min(count, rows - count)
        select = (
            sa.select(panda_jobs.c.panda_id + count, *copied).order_by(panda_jobs.c.id).limit(take)
        )
        copy = sa.insert(panda_jobs).from_select(["panda_id", *(c.name for c in copied)], select)
        db.run(partial(_execute, statement=copy))
        count += take
    slot = panda_jobs.c.id % 1000
    ce_state = sa.case(*_bands(ce_mix, slot), else_=ce_mix[0][0])
    endpoint = sa.case(
        *((panda_jobs.c.id % len(ces) == n, ce) for n, ce in enumerate(ces)), else_=ces[0]
    )
    ce_select = sa.select(
        panda_jobs.c.id,
        sa.literal("arc"),
        endpoint,
        panda_jobs.c.panda_id,
        panda_jobs.c.queue,
        ce_state,
        panda_jobs.c.state_changed_at,
        panda_jobs.c.created_at,
        panda_jobs.c.updated_at,
    )
    ce_names = [
        "panda_job_id",
        "backend",
        "ce_name",
        "panda_id",
        "queue",
        "state",
        "state_changed_at",
        "created_at",
        "updated_at",
    ]
    db.run(lambda c: c.execute(sa.insert(ce_jobs).from_select(ce_names, ce_select)))
    steps = sa.select(
        sa.literal("panda"),
        panda_jobs.c.id,
        sa.literal("running"),
        sa.literal("bench"),
        panda_jobs.c.state_changed_at,
    )
    step_names = ["layer", "job_id", "to_state", "actor", "at"]
    db.run(lambda c: c.execute(sa.insert(history).from_select(step_names, steps)))
    analyze(db, ["panda_jobs", "ce_jobs", "transitions"])
    with db.read() as conn:
        got = [
            conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (panda_jobs, ce_jobs, history)
        ]
    if got != [rows, rows, rows]:
        raise BenchmarkError(f"filled {got} rows (panda, ce, history), wanted {rows} each")


def _execute(conn: Connection, *, statement: sa.Executable) -> None:
    conn.execute(statement)


def _bands(
    mix: list[tuple[str, int]], slot: sa.ColumnElement[Any]
) -> list[tuple[sa.ColumnElement[bool], str]]:
    """CASE arms giving each state its share of the thousand slots."""
    arms = []
    low = 0
    for state, share in mix:
        arms.append((sa.and_(slot >= low, slot < low + share), state))
        low += share
    return arms


# --- the queries (timed) ------------------------------------------------------------------------


class _RolledBack:
    """A Database for daemon code whose every ``run`` is rolled back: each repetition sees the
    same store. Reads go to the real database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.backend = db.backend

    def run(self, fn: Callable[[Connection], Any], **_: Any) -> Any:
        with self.db.engine.connect() as conn:
            trans = conn.begin()
            try:
                return fn(conn)
            finally:
                trans.rollback()

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.db.read() as conn:
            yield conn


def _context(db: Database, name: str, options: Any = None) -> Context[Any]:
    # one context per daemon, of whichever package (act.engine, act.atlas): by name, as
    # act.service.daemons.resolve hands out DaemonSpec[Any]
    return Context(
        name=name,
        instance="bench:1:000000",
        settings=Settings(),
        daemon=DaemonSettings(),
        options=options,
        db=_RolledBack(db),  # type: ignore[arg-type]
        log=logging.getLogger(f"act.{name}"),
        stop=threading.Event(),
    )


def _full(name: str, got: Sequence[Any], batch: int) -> None:
    if len(got) != batch:
        raise BenchmarkError(f"{name} claimed {len(got)} rows, not a full batch of {batch}")


def queries_of(db: Database) -> dict[str, Callable[[], None]]:
    """Each daemon's per-cycle read, as the daemon issues it, checked."""
    batch = DaemonSettings().batch
    ctx = {name: _context(db, name) for name in DAEMONS}

    def translator_claim() -> None:
        c = ctx["translator"]
        got = c.db.run(
            lambda conn: claim(
                conn,
                Layer.PANDA,
                translator.STATES,
                owner=c.owner,
                lease=c.daemon.lease,
                limit=batch,
                shard=c.shard,
            )
        )
        _full("translator", got, batch)

    def poller_claim() -> None:
        due = due_for_check(utcnow())
        _full("poller", claim_jobs(ctx["poller"], poller.POLLED, ToPoll, where=[due]), batch)

    def validator_claim() -> None:
        c = ctx["validator"]
        _full("validator", c.db.run(lambda conn: validator._claim(conn, c)), batch)

    def propagator_claim() -> None:
        c = ctx["propagator"]
        got = c.db.run(lambda conn: propagator_jobs.claim_due(conn, c, batch))
        _full("propagator", got, batch)

    def metrics_snapshot() -> None:
        with db.read() as conn:
            got = read_snapshot(conn, now=utcnow(), dead_after=300.0, daemons=DAEMONS)
        if not got:
            raise BenchmarkError("the metrics snapshot is empty")

    def status() -> None:
        with db.read() as conn:
            total = sum(sum(states.values()) for states in job_counts.panda_counts(conn).values())
            job_counts.ce_counts(conn)
        if total == 0:
            raise BenchmarkError("actctl status counted no jobs")

    def report_all() -> None:
        moment = utcnow()
        with db.read() as conn:
            found = report.build(
                conn, report.Scope(None, None, moment - timedelta(hours=1), moment)
            )
        if not found["queues"]:
            raise BenchmarkError("actctl report found no queues")

    return {
        "translator claim": translator_claim,
        "submitter claim (tosubmit)": lambda: _full(
            "submitter", submitter_jobs.claim(ctx["submitter"], "tosubmit"), batch
        ),
        "poller claim (due)": poller_claim,
        "fetcher claim": lambda: _full(
            "fetcher", claim_jobs(ctx["fetcher"], fetcher.FETCHED, ToFetch), batch
        ),
        "canceller claim": lambda: _full(
            "canceller", claim_jobs(ctx["canceller"], ["tocancel"], ToCancel), batch
        ),
        "cleaner claim": lambda: _full(
            "cleaner", claim_jobs(ctx["cleaner"], ["toclean"], ToClean), batch
        ),
        "validator claim": validator_claim,
        "propagator claim (due heartbeats)": propagator_claim,
        "metrics snapshot": metrics_snapshot,
        "actctl status": status,
        "actctl report": report_all,
    }


@dataclass
class Timing:
    name: str
    seconds: list[float]

    def percentile(self, p: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds)


def measure(
    backend: str, rows: int, repeat: int, budget: float = BUDGET
) -> tuple[float, list[Timing]]:
    """(fill seconds, timings) on one backend: each query ``repeat`` times, or as many times as
    fit in ``budget`` seconds (at least MIN_REPEAT)."""
    with scratch_database(backend) as (db, _root):
        start = time.perf_counter()
        fill(db, rows)
        filled = time.perf_counter() - start
        log.warning("%s: filled %d rows per table in %.1f s", backend, rows, filled)
        timings = []
        for name, fn in queries_of(db).items():
            fn()  # warm: compile the statements, load the pages
            seconds: list[float] = []
            while len(seconds) < repeat and (len(seconds) < MIN_REPEAT or sum(seconds) < budget):
                t0 = time.perf_counter()
                fn()
                seconds.append(time.perf_counter() - t0)
            timings.append(Timing(name, seconds))
            log.warning("%s: %s p50 %.1f ms", backend, name, timings[-1].p50 * 1000)
        return filled, timings


def table(results: dict[str, tuple[float, list[Timing]]]) -> list[list[str]]:
    """Rows: query, then p50 / p99 in ms per backend."""
    backends = list(results)
    names = [t.name for t in results[backends[0]][1]]
    rows = []
    for i, name in enumerate(names):
        row = [name]
        for backend in backends:
            t = results[backend][1][i]
            row.append(f"{t.p50 * 1000:,.1f} / {t.percentile(99) * 1000:,.1f} ({len(t.seconds)})")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    from tabulate import tabulate

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backends", default="sqlite,mariadb,postgresql")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    results = {b: measure(b, args.rows, args.repeat) for b in args.backends.split(",")}
    headers = ["query: ms p50 / p99 (repetitions)", *results]
    print(tabulate(table(results), headers=headers, tablefmt="github"))


if __name__ == "__main__":
    main()
