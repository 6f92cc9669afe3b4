"""``act-daemon NAME --once`` as a process: its exit code says how the one cycle went.

0 for a good cycle, 7 (exitcodes.CYCLE_FAILED) when it raised, 4 (exitcodes.DATABASE) when the
database went away during it: a real MariaDB server of the test's own, stopped mid-cycle.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from act.common import exitcodes, migrate
from act.common.db import Database
from act.common.schema import ce_jobs
from act.common.states import Layer
from tests.support.jobs import make_jobs
from tests.support.private_mariadb import PrivateMariaDB, database_url
from tests.support.procs import ACT_DAEMON, daemon_once, env, wait_for, write_config


def _config(tmp_path: Path, url: str, daemon: dict[str, object]) -> Path:
    return write_config(
        tmp_path / "act.yaml",
        {"root": str(tmp_path), "db": {"url": url}, "daemons": {"worker": daemon}},
    )


def _database(url: str, jobs: int) -> None:
    db = Database(url)
    try:
        migrate.upgrade(db)
        db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", jobs))
    finally:
        db.dispose()


def test_a_failed_cycle_exits_7_with_the_traceback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'act.db'}"
    _database(url, 2)
    config = _config(tmp_path, url, {"entry": "tests.support.workers:FAILER"})
    done = daemon_once("worker", config, tmp_path)
    assert done.returncode == exitcodes.CYCLE_FAILED == 7, done.stderr
    assert "cycle failed" in done.stderr and "Traceback" in done.stderr
    assert "a cycle that fails after claiming 2 job(s)" in done.stderr
    assert "stopped; released 2 claimed job(s)" in done.stderr


def test_a_good_cycle_exits_0(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'act.db'}"
    _database(url, 2)
    config = _config(tmp_path, url, {"entry": "tests.support.workers:MOVER"})
    done = daemon_once("worker", config, tmp_path)
    assert done.returncode == exitcodes.OK, done.stderr
    assert "moved 2 job(s)" in done.stderr


@pytest.mark.slow
def test_the_database_going_away_during_the_cycle_exits_4(tmp_path: Path) -> None:
    server = PrivateMariaDB()
    try:
        server.start()
        url = database_url(server, "act_once")
        _database(url, 3)
        # MOVER claims the jobs, holds them 5 s, then moves them: the server stops meanwhile.
        config = _config(
            tmp_path,
            url,
            {"entry": "tests.support.workers:MOVER", "options": {"hold": 5.0}},
        )
        log = tmp_path / "worker.log"
        with open(log, "w") as stderr:
            proc = subprocess.Popen(
                [*ACT_DAEMON, "worker", "--config", str(config), "--once"],
                env=env(tmp_path),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            wait_for(lambda: "claimed 3 job(s)" in log.read_text(), timeout=60, what="the claim")
            server.stop()
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        text = log.read_text()
        assert code == exitcodes.DATABASE == 4, text
        assert "database unavailable" in text and "Traceback" not in text
        # Back up: the claims it could not hand back expire with their lease (none was moved).
        server.start()
        db = Database(url)
        try:
            with db.read() as conn:
                states = conn.execute(sa.select(ce_jobs.c.state)).scalars().all()
        finally:
            db.dispose()
        assert states == ["tosubmit"] * 3
    finally:
        server.remove()
