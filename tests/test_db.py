"""The DB layer against real servers: error classes, retries, SQLite specifics, URLs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from act.common import migrate
from act.common.db import Database, DatabaseError, is_unavailable, normalise_url
from act.common.schema import ce_jobs
from act.common.states import Layer
from tests.support.dbs import SERVERS
from tests.support.jobs import make_jobs


def _error(db: Database) -> BaseException:
    try:
        with db.read() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as error:
        return error
    raise AssertionError("no error")


@pytest.mark.parametrize(
    "url", ["mysql://root@127.0.0.1:1/act", "postgresql://postgres@127.0.0.1:1/act"]
)
def test_a_refused_connection_is_an_outage(url: str) -> None:
    db = Database(url, connect_timeout=2)
    error = _error(db)
    assert is_unavailable(error) and db.is_transient(error)


def test_an_unknown_mariadb_database_is_neither_outage_nor_race() -> None:
    db = Database(SERVERS["mariadb"].rstrip("/") + "/act_no_such_database", connect_timeout=2)
    error = _error(db)
    assert not is_unavailable(error) and not db.is_transient(error)
    assert "act_no_such_database" in str(error)


def test_a_row_lock_timeout_is_retryable_but_not_an_outage(db: Database) -> None:
    (job,) = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit"))
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction() as conn:
            conn.execute(sa.update(ce_jobs).where(ce_jobs.c.id == job).values(error_text="held"))
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    impatient = Database(db.url, busy_timeout=0.2)
    try:
        with pytest.raises(sa.exc.DBAPIError) as caught, impatient.transaction() as conn:
            if impatient.backend == "mysql":
                conn.exec_driver_sql("SET SESSION innodb_lock_wait_timeout = 1")
            elif impatient.backend == "postgresql":
                conn.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
            conn.execute(sa.update(ce_jobs).where(ce_jobs.c.id == job).values(error_text="me"))
        assert impatient.is_transient(caught.value)
        assert not is_unavailable(caught.value)
    finally:
        release.set()
        holder.join()
        impatient.dispose()


def test_run_retries_a_lost_race_until_it_succeeds(db: Database) -> None:
    attempts = []

    def flaky(conn: sa.Connection) -> str:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise sa.exc.OperationalError("UPDATE", {}, _lock_error(db.backend))
        return "done"

    assert db.run(flaky, base_delay=0.01) == "done"
    assert len(attempts) == 3


def test_run_does_not_retry_a_bug(db: Database) -> None:
    attempts = []

    def broken(conn: sa.Connection) -> None:
        attempts.append(1)
        conn.execute(sa.text("SELECT no_such_column FROM ce_jobs"))

    with pytest.raises(sa.exc.DBAPIError):
        db.run(broken)
    assert attempts == [1]


def _lock_error(backend: str) -> Exception:
    if backend == "mysql":
        import MySQLdb

        error: Exception = MySQLdb.OperationalError(1213, "Deadlock found when trying to get lock")
        return error
    if backend == "postgresql":
        import psycopg

        return psycopg.errors.DeadlockDetected("deadlock detected")
    import sqlite3

    return sqlite3.OperationalError("database is locked")


def test_sqlite_runs_in_wal_mode_and_reads_do_not_block_on_a_writer(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'a.db'}")
    migrate.upgrade(db)
    with db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1
    with db.transaction() as writer:
        writer.execute(sa.text("UPDATE processes SET pid = 1"))
        with db.read() as reader:  # would wait for the write lock if reads took it
            assert reader.execute(sa.select(sa.func.count()).select_from(ce_jobs)).scalar() == 0
    db.dispose()


def test_looking_at_a_missing_sqlite_database_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "state" / "act.db"
    db = Database(f"sqlite:///{path}")
    assert migrate.readiness_problem(db) == (
        f"database sqlite+pysqlite:///{path} has no act schema: run `actctl db upgrade` to "
        "create it"
    )
    assert not path.exists()
    migrate.upgrade(db)
    assert path.exists() and migrate.readiness_problem(db) is None
    db.dispose()


def test_an_unknown_database_is_a_readiness_problem_not_a_crash() -> None:
    db = Database(SERVERS["mariadb"].rstrip("/") + "/act_no_such_database", connect_timeout=2)
    problem = migrate.readiness_problem(db)
    assert problem is not None and problem.endswith(
        "(1049, \"Unknown database 'act_no_such_database'\")"
    )
    assert "cannot be used" in problem


def test_an_uncreatable_sqlite_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DatabaseError, match=r"cannot create the directory of SQLite database"):
        Database(f"sqlite:///{blocker / 'sub' / 'act.db'}")


def test_urls_get_act_drivers_and_utf8mb4() -> None:
    assert normalise_url("mysql://u@h/d").render_as_string() == (
        "mysql+mysqldb://u@h/d?charset=utf8mb4"
    )
    assert normalise_url("postgresql://u@h/d").drivername == "postgresql+psycopg"
    with pytest.raises(DatabaseError, match="unsupported database 'oracle'"):
        normalise_url("oracle://u:secret@h/d")
    with pytest.raises(DatabaseError) as error:
        normalise_url("oracle://u:secret@h/d")
    assert "secret" not in str(error.value)
