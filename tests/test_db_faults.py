"""A corrupt or unusable database, reproduced for real on each backend: found at start-up by the
integrity probe (act.common.integrity) with the real cause, and a daemon whose database goes bad
mid-run logs one line per attempt, backing off, instead of a traceback every cycle."""

from __future__ import annotations

import logging
import secrets
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from act.common import exitcodes, integrity, migrate
from act.common.config import CommonSettings
from act.common.daemon import Context, DaemonSpec, run_daemon
from act.common.db import Database
from act.common.schema import operator_actions, panda_jobs, processes
from act.common.supervisor import check_database
from tests.support.dbs import SERVERS, fresh_database
from tests.support.mover_settings import mover_settings

PAGE = 4096


def root_page(path: Path, name: str) -> int:
    """The page number (from 1) of table or index ``name``, after a checkpoint into the file."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert conn.execute("PRAGMA page_size").fetchone()[0] == PAGE
        (page,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = ?", (name,)
        ).fetchone()
        return int(page)
    finally:
        conn.close()


def corrupt(path: Path, name: str) -> None:
    """Overwrite the root page of table or index ``name`` in the SQLite file with garbage."""
    page = root_page(path, name)
    with open(path, "r+b") as handle:
        handle.seek((page - 1) * PAGE)
        handle.write(b"\xa5" * PAGE)


def sqlite_file(url: URL) -> Path:
    return Path(str(url.database))


def missing_database_url(backend: str) -> URL:
    return make_url(SERVERS[backend]).set(database=f"act_missing_{secrets.token_hex(4)}")


# --- the probe ---------------------------------------------------------------------------------


def test_a_sound_database_passes_the_probe(db: Database) -> None:
    assert integrity.probe(db) is None
    assert migrate.readiness_problem(db) is None


def test_a_dropped_table_is_named(db: Database) -> None:
    with db.transaction() as conn:
        conn.execute(sa.text("DROP TABLE operator_actions"))
    problem = migrate.readiness_problem(db)
    assert problem is not None
    assert problem.startswith(f"database {db.safe_url}: table operator_actions: ")
    assert "Background on this error" not in problem


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_a_database_that_does_not_exist_is_named_with_the_servers_words(backend: str) -> None:
    url = missing_database_url(backend)
    db = Database(url, connect_timeout=5)
    try:
        problem = migrate.readiness_problem(db)
        assert problem is not None and "Background on this error" not in problem
        name = url.database
        expected = (
            f"Unknown database '{name}'" if backend == "mariadb" else f'"{name}" does not exist'
        )
        assert expected in problem and db.safe_url in problem
        assert check_database(mover_settings(url, Path("/nonexistent"))) == problem  # actd's check
    finally:
        db.dispose()


def test_a_corrupt_table_page_is_the_real_cause(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as url:
        corrupt(sqlite_file(url), "panda_jobs")
        db = Database(url)
        try:
            problem = migrate.readiness_problem(db)
            assert problem is not None
            assert "database disk image is malformed" in problem
            assert str(sqlite_file(url)) in problem
            assert check_database(mover_settings(url, tmp_path)) == problem  # actd's check
        finally:
            db.dispose()


def test_a_corrupt_index_page_is_found_by_quick_check_only(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as url:
        corrupt(sqlite_file(url), "ix_operator_actions_at")
        db = Database(url)
        try:
            assert integrity.probe(db, quick_check_seconds=0) is None  # every table reads
            problem = integrity.probe(db)
            assert problem is not None and ": quick_check: " in problem
            assert f"Page {root_page(sqlite_file(url), 'ix_operator_actions_at')}" in problem
        finally:
            db.dispose()


def test_quick_check_is_cut_short_on_a_large_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its cost grows with the file (about 1 s per 230 MB); the budget bounds it, and a check
    cut short is no problem."""
    with fresh_database("sqlite", tmp_path) as url:
        conn = sqlite3.connect(sqlite_file(url))
        conn.execute("CREATE TABLE filler (id INTEGER PRIMARY KEY, blob BLOB)")
        conn.executemany(
            "INSERT INTO filler (blob) VALUES (randomblob(900))", ([] for _ in range(150_000))
        )
        conn.commit()
        conn.close()
        db = Database(url)
        try:
            with caplog.at_level(logging.DEBUG, logger="act.db"):
                assert integrity.probe(db, quick_check_seconds=0.01) is None
            assert any("quick_check cut short" in r.getMessage() for r in caplog.records)
            caplog.clear()
            with caplog.at_level(logging.DEBUG, logger="act.db"):
                assert integrity.probe(db, quick_check_seconds=600) is None
            assert not any("cut short" in r.getMessage() for r in caplog.records)
        finally:
            db.dispose()


# --- daemons -----------------------------------------------------------------------------------


def test_a_daemon_does_not_start_on_a_corrupt_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with fresh_database("sqlite", tmp_path) as url:
        corrupt(sqlite_file(url), "panda_jobs")
        with caplog.at_level(logging.ERROR, logger="act"):
            code = run_daemon(
                DaemonSpec(run_once=lambda ctx: None),
                mover_settings(url, tmp_path),
                "mover",
                once=True,
            )
        assert code == exitcodes.DATABASE
        (line,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert "database disk image is malformed" in line.getMessage() and not line.exc_info


def test_a_table_dropped_mid_run_is_one_line_per_attempt_with_back_off(
    db: Database, db_url: URL, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stop = threading.Event()
    calls: list[float] = []

    def reads_operator_actions(ctx: Context[CommonSettings]) -> bool:
        calls.append(time.monotonic())
        if len(calls) == 1:
            with ctx.db.transaction() as conn:
                conn.execute(sa.text("DROP TABLE operator_actions"))
        if len(calls) == 2:
            stop.set()
        with ctx.db.read() as conn:
            conn.execute(sa.select(operator_actions)).all()
        return False

    settings = mover_settings(db_url, tmp_path, interval=0.01)
    with caplog.at_level(logging.DEBUG, logger="act"):
        run_daemon(DaemonSpec(run_once=reads_operator_actions), settings, "mover", stop=stop, db=db)
    assert len(calls) == 2
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.exc_info for r in errors] == [None, None]
    assert all("table operator_actions: " in r.getMessage() for r in errors)
    assert "retrying in 1s" in errors[0].getMessage()
    assert "retrying in 2s" in errors[1].getMessage()
    assert calls[1] - calls[0] >= 0.9  # backed off, not every interval (0.01 s)
    with db.read() as conn:
        (row,) = conn.execute(sa.select(processes)).mappings().all()
    assert row["errors"] == 2 and "table operator_actions: " in row["last_error"]
    assert "Background on this error" not in row["last_error"]


def test_an_sqlite_file_corrupted_mid_run_is_one_line_and_once_exits_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with fresh_database("sqlite", tmp_path) as url:
        db = Database(url)
        calls: list[int] = []

        def reads_panda_jobs(ctx: Context[CommonSettings]) -> bool:
            calls.append(1)
            corrupt(sqlite_file(url), "panda_jobs")
            ctx.db.engine.dispose()  # no page cached from before
            with ctx.db.read() as conn:
                conn.execute(sa.select(panda_jobs)).all()
            return False

        try:
            with caplog.at_level(logging.INFO, logger="act"):
                code = run_daemon(
                    DaemonSpec(run_once=reads_panda_jobs),
                    mover_settings(url, tmp_path),
                    "mover",
                    once=True,
                    db=db,
                )
        finally:
            db.dispose()
        assert code == exitcodes.DATABASE and calls == [1]
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert errors and not [r for r in errors if r.exc_info]
        assert "database disk image is malformed" in errors[0].getMessage()
