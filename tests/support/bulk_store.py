"""A big job store, bulk-inserted in the shape of a service that has run for a week.

Plain INSERTs (not act's create_jobs, which would take hours for a million jobs): setup for
benchmarks and for plan tests, never a way to change a job's state.
"""

from __future__ import annotations

import random
import sys
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs
from act.common.schema import transitions as history

QUEUES = [f"QUEUE_{n:02d}" for n in range(20)]
CES = [f"ce-{n:02d}" for n in range(20)]
PANDA_STATES = [
    ("done", 88),
    ("donefailed", 4),
    ("donecancelled", 1),
    ("running", 4),
    ("queued", 1),
    ("received", 1),
    ("transferring", 1),
]
CE_STATES = [("cleaned", 93), ("running", 4), ("submitted", 2), ("tosubmit", 1)]
LIVE = {"running", "queued", "received", "transferring"}
CHUNK = 20000
WEEK = 7 * 86400
FAILED_EVERY = 700


def _pick(weights: list[tuple[str, int]], rng: random.Random, n: int) -> list[str]:
    names, shares = zip(*weights, strict=True)
    return rng.choices(names, weights=shares, k=n)


def fill_store(
    db: Database, rows: int, now: datetime, rng: random.Random, *, quiet: bool = False
) -> None:
    """``rows`` PanDA jobs over QUEUES and as many CE jobs over CES, mostly over; 3 history rows
    per PanDA job over the last 7 days (more than an hour ago), and for 1 job in FAILED_EVERY
    (ids 1, 1 + FAILED_EVERY, ...) a ``failed`` row in each layer within the last hour."""
    states = _pick(PANDA_STATES, rng, rows)
    for start in range(0, rows, CHUNK):
        batch = []
        for i in range(start, min(rows, start + CHUNK)):
            created = now - timedelta(seconds=rng.uniform(0, WEEK))
            live = states[i] in LIVE
            due = created + timedelta(seconds=rng.uniform(0, 1800)) if live else None
            if due is not None and rng.random() > 0.05:
                due = now + timedelta(seconds=rng.uniform(1, 1800))
            batch.append(
                {
                    "panda_id": 10**9 + i,
                    "queue": QUEUES[i % len(QUEUES)],
                    "spec": "{}",
                    "spec_format": "json",
                    "state": states[i],
                    "state_changed_at": created + timedelta(seconds=60),
                    "created_at": created,
                    "updated_at": created,
                    "next_report_at": due,
                    "error_code": rng.choice([1305, 1201, 1137]) if "failed" in states[i] else None,
                    "error_text": "payload failed" if "failed" in states[i] else None,
                }
            )
        db.run(lambda c: c.execute(sa.insert(panda_jobs), batch))
        _progress(quiet, f"  panda_jobs {start + len(batch)}/{rows}", file=sys.stderr, end="\r")
    ce_states = _pick(CE_STATES, rng, rows)
    for start in range(0, rows, CHUNK):
        batch = []
        for i in range(start, min(rows, start + CHUNK)):
            created = now - timedelta(seconds=rng.uniform(0, WEEK))
            batch.append(
                {
                    "panda_job_id": i + 1,
                    "backend": "arc",
                    "ce_name": CES[i % len(CES)],
                    "ce_job_id": f"job{i}",
                    "panda_id": 10**9 + i,
                    "state": ce_states[i],
                    "state_changed_at": created + timedelta(seconds=60),
                    "created_at": created,
                    "updated_at": created,
                    "error_text": None,
                }
            )
        db.run(lambda c: c.execute(sa.insert(ce_jobs), batch))
        _progress(quiet, f"  ce_jobs {start + len(batch)}/{rows}     ", file=sys.stderr, end="\r")
    for start in range(0, rows, CHUNK):
        batch = []
        for i in range(start, min(rows, start + CHUNK)):
            for to_state in ("received", "queued", "running"):
                at = now - timedelta(seconds=rng.uniform(3600, WEEK))
                batch.append(_step("panda", i + 1, to_state, at))
            if i % FAILED_EVERY == 0:
                recent = now - timedelta(seconds=rng.uniform(0, 3500))
                batch.append(_step("panda", i + 1, "failed", recent))
                batch.append(_step("ce", i + 1, "failed", recent))
        db.run(lambda c: c.execute(sa.insert(history), batch))
        _progress(
            quiet, f"  transitions for {start + CHUNK}/{rows} jobs", file=sys.stderr, end="\r"
        )
    _progress(quiet, file=sys.stderr)


def _step(layer: str, job_id: int, to_state: str, at: datetime) -> dict[str, Any]:
    return {"layer": layer, "job_id": job_id, "to_state": to_state, "actor": "bench", "at": at}


def _progress(quiet: bool, *args: Any, **kwargs: Any) -> None:
    if not quiet:
        print(*args, **kwargs)
