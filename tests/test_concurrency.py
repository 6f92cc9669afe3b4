"""Races and process death, on every backend, with real processes.

* 8 processes claim and move the same 1,000 rows at once: each row is moved exactly once.
* 8 processes transition the same 1,000 rows without claims: compare-and-set alone suffices.
* Two instances of one daemon split the work; when one stops, the other takes all of it.
* A daemon SIGKILLed while holding claims: another instance finishes, after the lease (the
  holder on another host) or at once (on the same host, where its pid is seen gone).
"""

from __future__ import annotations

import multiprocessing
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from act.common.claims import claim
from act.common.db import Database
from act.common.schema import ce_jobs, processes
from act.common.schema import transitions as history
from act.common.states import Actor, Layer
from act.common.transitions import create_jobs, transition
from tests.support.dbs import url_text
from tests.support.jobs import ce_row
from tests.support.procs import env, wait_for, write_config

pytestmark = pytest.mark.slow

ROWS, WORKERS = 1000, 8


def _fill(db: Database, count: int) -> list[int]:
    ids: list[int] = []
    for start in range(0, count, 500):
        rows = [ce_row() for _ in range(min(500, count - start))]
        ids += db.run(lambda c: create_jobs(c, Layer.CE, rows, "tosubmit", actor=Actor.TRANSLATOR))
    return ids


def _connected(url: str) -> Database:
    """A database whose connection is already open, so that workers start on an equal footing."""
    db = Database(url, pool_size=1)
    with db.read() as conn:
        conn.execute(sa.text("SELECT 1"))
    return db


def _claim_and_move(url: str, worker: int, start: Any) -> list[int]:
    db = _connected(url)
    owner = f"worker-{worker}"
    moved: list[int] = []
    start.wait()
    while True:
        ids = db.run(
            lambda c: claim(
                c, Layer.CE, ["tosubmit"], owner=owner, lease=300, limit=random.randint(10, 60)
            ),
            attempts=20,
        )
        if not ids:
            with db.read() as conn:
                left = conn.execute(
                    sa.select(sa.func.count())
                    .select_from(ce_jobs)
                    .where(ce_jobs.c.state == "tosubmit")
                ).scalar_one()
            if not left:
                break
            time.sleep(0.01)  # rows held by others: they will move them
            continue
        time.sleep(0.02)  # the work a daemon does on claimed jobs (CE calls), outside the DB
        got = db.run(
            lambda c: transition(
                c, Layer.CE, ids, "tosubmit", "submitting", actor=Actor.SUBMITTER, owner=owner
            ),
            attempts=20,
        )
        assert got == ids, f"{owner} lost rows it had claimed"
        moved += got
    db.dispose()
    return moved


def _move_everything(url: str, worker: int, start: Any, ids: list[int]) -> list[int]:
    db = _connected(url)
    order = list(ids)
    random.Random(worker).shuffle(order)
    moved: list[int] = []
    start.wait()
    for first in range(0, len(order), 100):
        batch = order[first : first + 100]
        moved += db.run(
            lambda c: transition(
                c, Layer.CE, batch, "tosubmit", "submitting", actor=Actor.SUBMITTER
            ),
            attempts=20,
        )
    db.dispose()
    return moved


def _race(db: Database, db_url: URL, target: Any, with_ids: bool) -> list[list[int]]:
    ids = _fill(db, ROWS)
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        start = manager.Event()
        with context.Pool(WORKERS) as pool:
            args = [
                (url_text(db_url), w, start, *([ids] if with_ids else [])) for w in range(WORKERS)
            ]
            pending = pool.starmap_async(target, args)
            time.sleep(1.0)  # let every worker connect, then release them together
            start.set()
            results: list[list[int]] = pending.get(timeout=240)
    counts = Counter(i for moved in results for i in moved)
    assert sorted(counts) == ids, "some rows were not moved"
    assert set(counts.values()) == {1}, "a row was moved twice"
    with db.read() as conn:
        moves = Counter(
            conn.execute(
                sa.select(history.c.job_id).where(history.c.to_state == "submitting")
            ).scalars()
        )
        states = set(conn.execute(sa.select(ce_jobs.c.state)).scalars())
    assert sorted(moves) == ids and set(moves.values()) == {1}
    assert states == {"submitting"}
    return results


def test_eight_processes_claim_and_move_each_row_exactly_once(db: Database, db_url: URL) -> None:
    results = _race(db, db_url, _claim_and_move, with_ids=False)
    busy = sum(1 for moved in results if moved)
    assert busy >= 2, f"only {busy} of {WORKERS} workers got work: no real race happened"


def test_eight_processes_transitioning_the_same_rows_move_each_once(
    db: Database, db_url: URL
) -> None:
    _race(db, db_url, _move_everything, with_ids=True)


# -- real daemon processes ---------------------------------------------------------------------


def _mover_config(path: Path, db_url: URL, root: Path, **options: Any) -> Path:
    return write_config(
        path,
        {
            "root": str(root),
            "db": {"url": url_text(db_url)},
            "liveness": {"heartbeat_interval": 0.2, "dead_after": 1.5},
            "daemons": {
                "mover": {
                    "entry": "tests.support.workers:MOVER",
                    "interval": 0.2,
                    "lease": 4.0,
                    "batch": 10,
                    "options": options,
                }
            },
        },
    )


def _start_mover(config: Path, log: Path, root: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "act.service.daemon",
            "mover",
            "--config",
            str(config),
            "--log-file",
            str(log),
        ],
        env=env(root),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


def _moved_by(db: Database) -> dict[int, str]:
    with db.read() as conn:
        return dict(
            conn.execute(
                sa.select(history.c.job_id, history.c.reason).where(
                    history.c.to_state == "submitting"
                )
            ).all()
        )


def _instance(db: Database, pid: int) -> str:
    with db.read() as conn:
        return str(
            conn.execute(sa.select(processes.c.instance).where(processes.c.pid == pid)).scalar_one()
        )


def test_two_instances_split_the_work_and_one_takes_all_when_the_other_stops(
    db: Database, db_url: URL, tmp_path: Path
) -> None:
    config = _mover_config(tmp_path / "act.yaml", db_url, tmp_path)
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [_start_mover(config, log, tmp_path) for log in logs]
    try:
        for log in logs:  # each has logged "work split: instance i of 2"
            wait_for(
                lambda: log.exists() and " of 2" in log.read_text(),
                what="both instances to see the split",
            )
        first = _fill(db, 200)
        wait_for(lambda: len(_moved_by(db)) == 200, what="first 200 jobs moved")
        by = _moved_by(db)
        names = {p.pid: _instance(db, p.pid) for p in procs}
        for instance in names.values():
            mine = [job for job, who in by.items() if who == instance]
            assert mine, f"{instance} got no work"
            assert len({job % 2 for job in mine}) == 1, "an instance crossed into the other share"
        assert sorted(by) == first

        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(timeout=30) == 0
        second = _fill(db, 100)
        wait_for(lambda: len(_moved_by(db)) == 300, what="next 100 jobs moved")
        later = _moved_by(db)
        assert {later[job] for job in second} == {names[procs[1].pid]}
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("holder_host", ["same", "other"])
def test_a_sigkilled_daemons_claims_expire_and_another_instance_finishes(
    db: Database, db_url: URL, tmp_path: Path, holder_host: str
) -> None:
    """A holder on another host (its liveness row says so) can only be outlived: its claims are
    taken once their lease expires. On the same host, the rescuer sees at start that the
    holder's pid is gone and hands its claims back at once."""
    ids = _fill(db, 30)
    holder_log, rescuer_log = tmp_path / "holder.log", tmp_path / "rescuer.log"
    holder = _start_mover(
        _mover_config(tmp_path / "hold.yaml", db_url, tmp_path, hold=600), holder_log, tmp_path
    )
    try:
        wait_for(
            lambda: holder_log.exists() and "claimed 10 job(s)" in holder_log.read_text(),
            what="the holder to claim",
        )
        with db.read() as conn:
            held = list(
                conn.execute(
                    sa.select(ce_jobs.c.id).where(ce_jobs.c.lease_owner.is_not(None))
                ).scalars()
            )
        assert len(held) == 10
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        killed_at = time.monotonic()
        if holder_host == "other":
            db.run(
                lambda c: c.execute(
                    sa.update(processes)
                    .where(processes.c.pid == holder.pid)
                    .values(host="another-host")
                )
            )
    finally:
        holder.kill()
    rescuer = _start_mover(
        _mover_config(tmp_path / "go.yaml", db_url, tmp_path), rescuer_log, tmp_path
    )
    try:
        wait_for(lambda: len(_moved_by(db)) == 30, timeout=60, what="all jobs moved")
        finished = time.monotonic()
    finally:
        rescuer.send_signal(signal.SIGTERM)
        rescuer.wait(timeout=30)
    by = _moved_by(db)
    assert sorted(by) == ids
    assert set(by.values()) == {_instance(db, rescuer.pid)}, "the dead holder moved jobs"
    if holder_host == "other":
        assert finished - killed_at >= 3.0, "the held jobs were taken before their lease expired"
    else:  # (no timing: the rescuer's own start may take longer than the lease on a busy CI)
        assert "marked stopped, 10 claimed job(s) handed back" in rescuer_log.read_text()
    with db.read() as conn:
        moves = Counter(
            conn.execute(
                sa.select(history.c.job_id).where(history.c.to_state == "submitting")
            ).scalars()
        )
    assert set(moves.values()) == {1}
