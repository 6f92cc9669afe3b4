"""The metrics daemon's database snapshot and a scrape, with many jobs in the database.

This is a benchmark, not a test: it measures and prints. In a fresh database per backend it
creates ``--rows`` PanDA jobs over 20 queues and as many CE jobs over 20 CEs, spread over six
states per layer, with a report due (a third of them overdue) on every PanDA job, 20 CE rows
and 20 process rows. Then it times, ``--repeat`` times (median, min-max):

1. ``snapshot``: one cycle's database read (:func:`act.service.metrics_daemon.read_snapshot`),
   what the daemon does every ``interval`` seconds, off the scrape path;
2. ``scrape``: ``GET /metrics`` over HTTP from the running endpoint (what Prometheus waits for;
   it never touches the database).

Run: ``PYTHONPATH=. python -m benchmarks.metrics_scrape [--backends sqlite,...] [--rows N]``.
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import time
import urllib.request
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common import liveness
from act.common.db import Database
from act.common.metrics_server import MetricsEndpoint
from act.common.schema import ces, panda_jobs
from act.common.states import Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs, transition
from act.service.metrics_daemon import read_snapshot
from benchmarks._common import BenchmarkError, scratch_database
from tests.support.jobs import ce_row, panda_row

LOG = logging.getLogger("benchmarks.metrics_scrape")
BATCH = 1000
PANDA_PATH = [
    ("received", "queued", Actor.TRANSLATOR),
    ("queued", "running", Actor.APP_STATUS),
    ("running", "transferring", Actor.APP_STATUS),
    ("transferring", "tovalidate", Actor.APP_STATUS),
    ("tovalidate", "finished", Actor.VALIDATOR),
]
CE_PATH = [
    ("tosubmit", "submitting", Actor.SUBMITTER),
    ("submitting", "submitted", Actor.SUBMITTER),
    ("submitted", "running", Actor.POLLER),
    ("running", "finished", Actor.POLLER),
    ("finished", "done", Actor.CE_FETCHER),
]


def _spread(
    conn: Connection, layer: Layer, ids: list[int], path: list[tuple[str, str, Actor]]
) -> None:
    """Leave a sixth of ``ids`` in each state of ``path`` (walked in order)."""
    remaining = ids
    for from_state, to_state, actor in path:
        remaining = remaining[len(ids) // 6 :]
        moved = transition(conn, layer, remaining, from_state, to_state, actor=actor)
        if len(moved) != len(remaining):
            raise BenchmarkError(f"{layer.value}: {len(moved)} of {len(remaining)} moved")


def seed(db: Database, rows: int) -> None:
    now = utcnow()
    for start in range(0, rows, BATCH):
        count = min(BATCH, rows - start)

        def batch(conn: Connection, start: int = start, count: int = count) -> None:
            panda = [panda_row(start + i + 1, f"QUEUE_{(start + i) % 20}") for i in range(count)]
            ids = create_jobs(conn, Layer.PANDA, panda, "received", actor=Actor.OPERATOR)
            _spread(conn, Layer.PANDA, ids, PANDA_PATH)
            ce = [
                {**ce_row(f"ce{(start + i) % 20}"), "queue": f"QUEUE_{(start + i) % 20}"}
                for i in range(count)
            ]
            ce_ids = create_jobs(conn, Layer.CE, ce, "tosubmit", actor=Actor.TRANSLATOR)
            _spread(conn, Layer.CE, ce_ids, CE_PATH)

        db.run(batch)

    def others(conn: Connection) -> None:
        overdue = panda_jobs.c.id % 3 == 0
        for where, late in ((overdue, 600), (sa.not_(overdue), -600)):
            conn.execute(
                sa.update(panda_jobs)
                .where(where)
                .values(next_report_at=now - timedelta(seconds=late))
            )
        for i in range(20):
            conn.execute(sa.insert(ces).values(name=f"ce{i}", backend="arc", updated_at=now))
            liveness.register(conn, f"daemon{i}", "one", "host", i)

    db.run(others)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure(backend: str, rows: int, repeat: int) -> None:
    with scratch_database(backend) as (db, _root):
        began = time.perf_counter()
        seed(db, rows)
        print(
            f"{backend}: {rows} PanDA + {rows} CE jobs seeded in {time.perf_counter() - began:.0f}s"
        )
        endpoint = MetricsEndpoint("127.0.0.1", _free_port())
        daemons = [f"daemon{i}" for i in range(20)]

        def read() -> list[object]:
            with db.read() as conn:
                return list(read_snapshot(conn, now=utcnow(), dead_after=60.0, daemons=daemons))

        snapshot: list[float] = []
        scrape: list[float] = []
        try:
            for _ in range(repeat):
                began = time.perf_counter()
                endpoint.database.refresh(read)  # type: ignore[arg-type]
                snapshot.append(time.perf_counter() - began)
                if not endpoint.start(LOG):
                    raise BenchmarkError("cannot listen")
                began = time.perf_counter()
                with urllib.request.urlopen(endpoint.address, timeout=30) as reply:
                    body = reply.read()
                scrape.append(time.perf_counter() - began)
                if b'layer="panda"' not in body:
                    raise BenchmarkError("the scrape has no job counts")
        finally:
            endpoint.close()
        for name, values in (("snapshot (DB read)", snapshot), ("scrape (HTTP)", scrape)):
            print(
                f"  {name:20s} {statistics.median(values) * 1000:8.1f} ms   "
                f"({min(values) * 1000:.1f} .. {max(values) * 1000:.1f})"
            )
        print(f"  scrape size {len(body)} bytes")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--backends", default="sqlite")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    for backend in args.backends.split(","):
        measure(backend, args.rows, args.repeat)


if __name__ == "__main__":
    main()
