"""The shared daemon loop, in-process: cycles, errors, outages, clean stop, schema check."""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from act.atlas.config import Context as AtlasContext
from act.common import exitcodes, liveness
from act.common.claims import claim
from act.common.config import CommonSettings, DaemonSettings
from act.common.daemon import Context, DaemonSpec, _Backoff, run_daemon
from act.common.db import Database
from act.common.schema import ce_jobs, processes
from act.common.states import Layer
from tests.support.jobs import make_jobs
from tests.support.mover_settings import mover_settings
from tests.support.workers import FAILER, MOVER, MoverOptions


def _process_rows(db: Database) -> list[sa.RowMapping]:
    with db.read() as conn:
        return list(conn.execute(sa.select(processes)).mappings())


def test_once_moves_claimed_work_records_the_cycle_and_stops_cleanly(
    db: Database, db_url: URL, tmp_path: Path
) -> None:
    ids = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 7))
    settings = mover_settings(db_url, tmp_path, batch=5)
    assert run_daemon(MOVER, settings, "mover", once=True, db=db) == exitcodes.OK
    with db.read() as conn:
        states = dict(conn.execute(sa.select(ce_jobs.c.id, ce_jobs.c.state)).all())
        leases = conn.execute(
            sa.select(sa.func.count()).where(ce_jobs.c.lease_owner.is_not(None))
        ).scalar_one()
    assert sorted(i for i, s in states.items() if s == "submitting") == ids[:5]
    assert leases == 0
    (row,) = _process_rows(db)
    assert row["role"] == "mover" and row["cycles"] == 1 and row["errors"] == 0
    assert row["stopped_at"] is not None and row["last_cycle_seconds"] >= 0


def test_an_exception_is_logged_with_traceback_counted_and_the_loop_goes_on(
    db: Database, db_url: URL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    calls = []

    def flaky(ctx: Context[CommonSettings]) -> bool:
        calls.append(ctx.shard)
        if len(calls) == 3:
            stop.set()
        raise KeyError(f"bad thing {len(calls)}")

    settings = mover_settings(db_url, tmp_path, interval=0.01, jitter=0.0)
    with caplog.at_level(logging.ERROR, logger="act"):
        run_daemon(DaemonSpec(run_once=flaky), settings, "mover", stop=stop, db=db)
    assert len(calls) == 3
    failures = [r for r in caplog.records if r.getMessage() == "cycle failed"]
    assert len(failures) == 3 and all(r.exc_info for r in failures)
    (row,) = _process_rows(db)
    assert row["cycles"] == 3 and row["errors"] == 3
    assert "KeyError: 'bad thing 3'" in row["last_error"]


def test_a_database_outage_is_one_line_per_attempt_with_growing_delays(
    db: Database, db_url: URL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    calls = []

    def outage(ctx: Context[CommonSettings]) -> bool:
        calls.append(1)
        if len(calls) == 3:
            stop.set()
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("server has gone away"))

    settings = mover_settings(db_url, tmp_path, interval=0.01)
    with caplog.at_level(logging.ERROR, logger="act"):
        run_daemon(DaemonSpec(run_once=outage), settings, "mover", stop=stop, db=db)
    lines = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert [r.exc_info for r in lines] == [None, None, None]
    assert "retrying in 1s" in lines[0].getMessage()
    assert "retrying in 2s" in lines[1].getMessage()
    assert "server has gone away" in lines[0].getMessage()


def test_claims_of_a_cycle_the_database_outage_broke_are_handed_back_when_it_returns(
    db: Database, db_url: URL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 4))
    stop = threading.Event()
    leased_after_outage: list[int] = []

    def claims_then_loses_the_database(ctx: Context[CommonSettings]) -> bool:
        if not leased_after_outage:
            db.run(
                lambda c: claim(c, Layer.CE, ["tosubmit"], owner=ctx.owner, lease=600.0, limit=10)
            )
            leased_after_outage.append(-1)
            raise sa.exc.OperationalError("UPDATE", {}, Exception("server has gone away"))
        with db.read() as conn:
            leased = conn.execute(
                sa.select(sa.func.count()).where(ce_jobs.c.lease_owner.is_not(None))
            ).scalar_one()
        leased_after_outage.append(int(leased))
        stop.set()
        return False

    settings = mover_settings(db_url, tmp_path, interval=0.01)
    with caplog.at_level(logging.INFO, logger="act"):
        run_daemon(
            DaemonSpec(run_once=claims_then_loses_the_database), settings, "mover", stop=stop, db=db
        )
    assert leased_after_outage == [-1, 0]  # the next cycle finds nothing held by the old one
    assert any("released 4 job(s) claimed before" in r.getMessage() for r in caplog.records)


def test_once_after_a_failed_cycle_exits_cycle_failed_and_hands_the_claims_back(
    db: Database, db_url: URL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 3))
    settings = mover_settings(db_url, tmp_path)
    with caplog.at_level(logging.INFO, logger="act"):
        code = run_daemon(FAILER, settings, "mover", once=True, db=db)
    assert code == exitcodes.CYCLE_FAILED != exitcodes.OK
    failures = [r for r in caplog.records if r.getMessage() == "cycle failed"]
    assert len(failures) == 1 and failures[0].exc_info
    assert any(r.getMessage() == "stopped; released 3 claimed job(s)" for r in caplog.records)
    (row,) = _process_rows(db)
    assert row["cycles"] == 1 and row["errors"] == 1 and row["stopped_at"] is not None
    assert "a cycle that fails after claiming 3 job(s)" in row["last_error"]


def test_once_during_a_database_outage_exits_database(
    db: Database, db_url: URL, tmp_path: Path
) -> None:
    def outage(ctx: Context[CommonSettings]) -> bool:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("server has gone away"))

    settings = mover_settings(db_url, tmp_path)
    code = run_daemon(DaemonSpec(run_once=outage), settings, "mover", once=True, db=db)
    assert code == exitcodes.DATABASE


def test_once_after_a_good_cycle_stays_ok_whatever_came_before(
    db: Database, db_url: URL, tmp_path: Path
) -> None:
    """Only the one cycle counts: no work at all is a good cycle too."""
    settings = mover_settings(db_url, tmp_path)
    assert run_daemon(MOVER, settings, "mover", once=True, db=db) == exitcodes.OK


def test_until_stopped_yields_until_a_stop_is_asked_for_and_says_what_it_left(
    db: Database, db_url: URL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = Context(
        name="mover",
        instance="test:1:abc",
        settings=mover_settings(db_url, tmp_path),
        daemon=DaemonSettings(),
        options=None,
        db=db,
        log=logging.getLogger("act.mover"),
        stop=threading.Event(),
    )
    done = []
    with caplog.at_level(logging.INFO, logger="act.mover"):
        for item in ctx.until_stopped([1, 2, 3, 4], "queue(s)"):
            done.append(item)
            if item == 2:
                ctx.stop.set()  # SIGTERM while the second item is worked on
    assert done == [1, 2] and ctx.stopping()
    assert [r.getMessage() for r in caplog.records] == [
        "stop requested: 2 of 4 queue(s) left to the next instance"
    ]
    assert list(ctx.until_stopped([5, 6])) == []


def test_backoff_doubles_up_to_its_maximum_and_resets() -> None:
    backoff = _Backoff(1.0, 5.0)
    assert [backoff.next() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 1.0


def test_more_work_means_no_sleep(db: Database, db_url: URL, tmp_path: Path) -> None:
    db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 12))
    stop = threading.Event()
    seen = []

    def until_empty(ctx: Context[CommonSettings]) -> bool:
        more = MOVER.run_once(ctx)
        seen.append(more)
        if not more:
            stop.set()
        return bool(more)

    settings = mover_settings(db_url, tmp_path, batch=5, interval=3600)
    thread = threading.Thread(
        target=run_daemon,
        args=(DaemonSpec(run_once=until_empty, options=MoverOptions), settings, "mover"),
        kwargs={"stop": stop, "db": db},
    )
    thread.start()
    thread.join(timeout=30)
    alive = thread.is_alive()
    stop.set()
    thread.join()
    assert not alive, "the loop slept although run_once said more work was waiting"
    assert seen == [True, True, True, False]


def test_a_stale_schema_refuses_to_start(empty_db_url: URL, tmp_path: Path) -> None:
    settings = mover_settings(empty_db_url, tmp_path)
    database = Database(empty_db_url)
    try:
        assert run_daemon(MOVER, settings, "mover", once=True, db=database) == exitcodes.DATABASE
    finally:
        database.dispose()


def test_heartbeats_split_work_between_live_instances(db: Database) -> None:
    for name in ("b", "a", "c"):
        db.run(lambda c: liveness.register(c, "mover", name, "host", 1))
    shards = {n: db.run(lambda c: liveness.beat(c, "mover", n, dead_after=60)) for n in "abc"}
    assert [(s.index, s.count) for s in shards.values()] == [(0, 3), (1, 3), (2, 3)]
    db.run(lambda c: liveness.unregister(c, "mover", "b"))
    assert db.run(lambda c: liveness.beat(c, "mover", "c", dead_after=60)).index == 1
    assert db.run(lambda c: liveness.beat(c, "mover", "c", dead_after=60)).count == 2


def _gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_restarted_daemon_retires_its_killed_predecessor_and_frees_its_jobs_at_once(
    db: Database, db_url: URL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A mover SIGKILLed mid-cycle: its row says live (fresh heartbeat), it holds 4 claims with a
    # long lease. Without retiring it, its successor would work on half the ids (shard 1 of 2)
    # and the 4 claimed jobs would wait for the lease.
    ids = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 8))
    host = socket.gethostname()
    dead = f"{host}:{_gone_pid()}:dead00"
    db.run(lambda c: liveness.register(c, "mover", dead, host, int(dead.split(":")[1])))
    held = db.run(
        lambda c: claim(c, Layer.CE, ["tosubmit"], owner=f"mover@{dead}", lease=3600, limit=4)
    )
    # a live instance of the same role on another host is left alone
    db.run(lambda c: liveness.register(c, "mover", "elsewhere:1:aaaaaa", "elsewhere", 1))
    settings = mover_settings(db_url, tmp_path, batch=100)
    settings = settings.model_copy(
        update={"liveness": settings.liveness.model_copy(update={"dead_after": 3600})}
    )
    with caplog.at_level(logging.INFO, logger="act"):
        assert run_daemon(MOVER, settings, "mover", once=True, db=db) == exitcodes.OK
    rows = {row["instance"]: row for row in _process_rows(db)}
    assert rows[dead]["stopped_at"] is not None
    assert rows["elsewhere:1:aaaaaa"]["stopped_at"] is None
    assert "no longer running: marked stopped, 4 claimed job(s) handed back" in caplog.text
    with db.read() as conn:
        states = dict(conn.execute(sa.select(ce_jobs.c.id, ce_jobs.c.state)).all())
    # shard of 2 (itself and the other host's live instance), the freed jobs among its own
    moved = sorted(i for i, state in states.items() if state == "submitting")
    assert moved and set(held) & set(moved)
    assert all(i % 2 == moved[0] % 2 for i in moved) and len(moved) == len(ids) // 2


def test_default_daemon_settings_are_usable() -> None:
    assert DaemonSettings().interval > 0


class _Closeable:
    def __init__(self, error: Exception | None = None) -> None:
        self.closed = 0
        self.error = error

    def close(self) -> None:
        self.closed += 1
        if self.error is not None:
            raise self.error


def test_what_the_daemon_keeps_in_its_cache_is_closed_at_stop(
    db: Database, db_url: URL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first, second = _Closeable(OSError("disk gone")), _Closeable()
    kept = {"first": first, "second": second, "plain": object()}
    seen: list[Context[CommonSettings]] = []

    def keep(ctx: Context[CommonSettings]) -> bool:
        ctx.cache.update(kept)
        seen.append(ctx)
        return False

    settings = mover_settings(db_url, tmp_path)
    with caplog.at_level(logging.ERROR, logger="act"):
        assert run_daemon(DaemonSpec(run_once=keep), settings, "mover", once=True, db=db) == 0
    assert first.closed == 1 and second.closed == 1
    assert seen[0].cache == {}
    (line,) = [r.getMessage() for r in caplog.records]
    assert "cannot close first at stop" in line and "disk gone" in line
    (row,) = _process_rows(db)
    assert row["stopped_at"] is not None  # a failing close() does not keep the stop from ending


def test_the_panda_client_of_a_daemon_is_closed_at_stop(
    db: Database, db_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from act.atlas import runtime
    from act.atlas.panda_client import PandaClient

    closed: list[PandaClient] = []
    original = PandaClient.close

    def spy(self: PandaClient) -> None:
        closed.append(self)
        original(self)

    monkeypatch.setattr(PandaClient, "close", spy)
    made: list[PandaClient] = []

    def use_client(ctx: AtlasContext) -> bool:
        made.append(runtime.panda_client(ctx))
        return False

    settings = mover_settings(db_url, tmp_path)
    assert run_daemon(DaemonSpec(run_once=use_client), settings, "mover", once=True, db=db) == 0
    assert len(made) == 1 and closed == made
