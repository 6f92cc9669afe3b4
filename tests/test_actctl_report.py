"""actctl report on every backend: counts, oldest jobs, failures in the window, lag, breakers."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import URL, Connection

from act.common import exitcodes
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs
from act.common.schema import transitions as history
from act.common.states import Layer
from act.common.timeutil import utcnow
from act.ctl.cli import cli
from act.ctl.durations import parse as parse_duration
from act.ctl.durations import short as short_duration
from act.ctl.report import Scope, build
from act.engine import breaker
from act.engine.settings import CESettings
from tests.support.bulk_store import fill_store
from tests.support.dbs import url_text
from tests.support.plans import analyze, capture, full_scans
from tests.support.procs import write_config
from tests.test_actctl import ce_job_in, panda_jobs_in, table_rows

ARC_A = "arc-a"
ARC_B = "arc-b"
IDLE = "idle-ce"  # configured, no jobs


pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    ces = {
        name: {"backend": "arc", "url": f"https://{name}.example.org/arex"}
        for name in (ARC_A, ARC_B, IDLE)
    }
    return write_config(
        tmp_path / "act.yaml",
        {"root": str(tmp_path), "engine": {"ces": ces}, "queues": {"serve": {"Q3": {}}}},
    )


def actctl(url: URL, config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config_file), "--db-url", url_text(url), *args])


def _set(conn: Connection, table: sa.Table, ids: list[int], **values: Any) -> None:
    conn.execute(sa.update(table).where(table.c.id.in_(ids)).values(**values))


def _move_history(conn: Connection, layer: Layer, ids: list[int], at: datetime) -> None:
    """Pretend the jobs' whole history happened at ``at`` (before the report's window)."""
    conn.execute(
        sa.update(history)
        .where(history.c.layer == layer.value, history.c.job_id.in_(ids))
        .values(at=at)
    )


def _seed(conn: Connection, now: datetime) -> dict[str, int]:
    """Q1: 2 running, 1 failed in the window, 1 donefailed that failed 2 hours ago.
    Q2: 1 queued with an overdue heartbeat (30 min), 2 failed in the window with one code.
    arc-a: 1 running, 1 failed in the window; arc-b (forced open, drained): 1 failed 2 hours
    ago, 1 donefailed in the window."""
    ids: dict[str, int] = {}
    ids["r1"], ids["r2"] = panda_jobs_in(conn, "Q1", "running", 101, 102)
    (ids["f1"],) = panda_jobs_in(conn, "Q1", "failed", 103)
    (ids["old"],) = panda_jobs_in(conn, "Q1", "donefailed", 104)
    (ids["q"],) = panda_jobs_in(conn, "Q2", "queued", 201)
    ids["f2"], ids["f3"] = panda_jobs_in(conn, "Q2", "failed", 202, 203)
    _set(conn, panda_jobs, [ids["f1"], ids["old"]], error_code=1305, error_text="payload failed")
    _set(conn, panda_jobs, [ids["f2"]], error_code=1201, error_text="stage-in failed\ndetails")
    _set(conn, panda_jobs, [ids["f3"]], error_code=1201, error_text="stage-in failed: x")
    _set(conn, panda_jobs, [ids["r1"]], created_at=now - timedelta(hours=3))
    _set(conn, panda_jobs, [ids["q"]], next_report_at=now - timedelta(minutes=30))
    _set(conn, panda_jobs, [ids["r2"]], next_report_at=now + timedelta(minutes=30))
    _move_history(conn, Layer.PANDA, [ids["old"]], now - timedelta(hours=2))

    ids["ca"] = ce_job_in(conn, ids["r1"], ARC_A, "running")
    conn.execute(sa.update(ce_jobs).where(ce_jobs.c.id == ids["ca"]).values(ce_job_id="A1"))
    ids["cf"] = ce_job_in(conn, ids["f1"], ARC_A, "failed")
    ids["cold"] = ce_job_in(conn, ids["f2"], ARC_B, "failed")
    ids["cdone"] = ce_job_in(conn, ids["f3"], ARC_B, "donefailed")
    _set(conn, ce_jobs, [ids["cf"]], error_text="LRMS error: (-1) Job was lost")
    _set(conn, ce_jobs, [ids["cold"]], error_text="old failure")
    _set(conn, ce_jobs, [ids["cdone"]], error_text="LRMS error: (-1) Job was lost")
    _move_history(conn, Layer.CE, [ids["cold"]], now - timedelta(hours=2))

    configured = {
        name: CESettings(backend="arc", url="https://x.example.org/arex") for name in (ARC_A, ARC_B)
    }
    breaker.sync_ces(conn, configured, now=now)
    breaker.force(conn, ARC_B, "open", who="alice", why="CE down", now=now)
    breaker.set_enabled(conn, ARC_B, False, who="alice", why="CE down", now=now)
    return ids


def test_report_json_is_exact_for_a_seeded_store(
    db: Database, db_url: URL, config_file: Path
) -> None:
    now = utcnow()
    db.run(lambda c: _seed(c, now))
    report = json.loads(_ok(actctl(db_url, config_file, "report", "--json")))

    queues = report["queues"]
    assert sorted(queues) == ["Q1", "Q2", "Q3"]  # Q3: served, no jobs yet
    assert queues["Q1"]["states"] == {"running": 2, "failed": 1, "donefailed": 1}
    assert queues["Q2"]["states"] == {"queued": 1, "failed": 2}
    assert (queues["Q1"]["total"], queues["Q2"]["total"], queues["Q3"]["total"]) == (4, 3, 0)
    # 104 failed two hours ago: outside the default 1h window.
    assert (queues["Q1"]["failed_in_window"], queues["Q2"]["failed_in_window"]) == (1, 2)
    assert queues["Q1"]["top_errors"] == [
        {"error_code": 1305, "error_text": "payload failed", "jobs": 1}
    ]
    assert queues["Q2"]["top_errors"] == [
        {"error_code": 1201, "error_text": "stage-in failed", "jobs": 2}
    ]
    oldest = queues["Q1"]["oldest"]
    assert {state: job["panda_id"] for state, job in oldest.items()} == {
        "running": 101,
        "failed": 103,
        "donefailed": 104,
    }
    assert 3 * 3600 <= oldest["running"]["age_seconds"] < 3 * 3600 + 60
    assert 0 <= oldest["running"]["in_state_seconds"] < 60
    assert queues["Q2"]["heartbeat"]["overdue"] == 1
    assert 30 * 60 <= queues["Q2"]["heartbeat"]["lag_seconds"] < 31 * 60
    assert queues["Q1"]["heartbeat"] == {"overdue": 0, "oldest_due": None, "lag_seconds": None}
    assert report["heartbeat"]["scheduled"] == 2 and report["heartbeat"]["overdue"] == 1

    found = report["ces"]
    assert sorted(found) == [ARC_A, ARC_B, IDLE]
    assert found[ARC_A]["states"] == {"running": 1, "failed": 1}
    assert found[ARC_B]["states"] == {"failed": 1, "donefailed": 1}
    assert found[IDLE]["states"] == {} and found[IDLE]["total"] == 0
    assert (found[ARC_A]["failed_in_window"], found[ARC_B]["failed_in_window"]) == (1, 1)
    assert found[ARC_A]["top_errors"] == [
        {"error_text": "LRMS error: (-1) Job was lost", "jobs": 1}
    ]
    assert found[ARC_B]["top_errors"] == found[ARC_A]["top_errors"]
    assert found[ARC_A]["oldest"]["running"]["ce_job_id"] == "A1"
    assert found[ARC_A]["oldest"]["running"]["panda_id"] is None  # ce_row() gives no panda_id
    assert (found[ARC_A]["breaker"], found[ARC_A]["enabled"]) == ("closed", True)
    assert (found[ARC_B]["breaker_forced"], found[ARC_B]["enabled"]) == ("open", False)
    assert found[ARC_B]["reason"] == "CE down"
    assert report["window"]["seconds"] == 3600.0


def test_report_window_and_filters(db: Database, db_url: URL, config_file: Path) -> None:
    now = utcnow()
    db.run(lambda c: _seed(c, now))
    wide = json.loads(_ok(actctl(db_url, config_file, "report", "--since", "3h", "--json")))
    assert wide["queues"]["Q1"]["failed_in_window"] == 2  # 103 and, now, 104
    assert wide["queues"]["Q1"]["top_errors"] == [
        {"error_code": 1305, "error_text": "payload failed", "jobs": 2}
    ]
    assert wide["ces"][ARC_B]["failed_in_window"] == 2
    assert wide["window"]["seconds"] == 3 * 3600.0

    narrow = json.loads(
        _ok(actctl(db_url, config_file, "report", "--queue", "Q2", "--ce", ARC_A, "--json"))
    )
    assert list(narrow["queues"]) == ["Q2"] and list(narrow["ces"]) == [ARC_A]
    assert narrow["filters"] == {"queue": "Q2", "ce": ARC_A}
    assert narrow["queues"]["Q2"]["failed_in_window"] == 2
    assert narrow["ces"][ARC_A]["failed_in_window"] == 1

    bad = actctl(db_url, config_file, "report", "--since", "soon")
    assert bad.exit_code == exitcodes.USAGE and "is not a duration" in bad.output


def test_report_text_tables(db: Database, db_url: URL, config_file: Path) -> None:
    db.run(lambda c: _seed(c, utcnow()))
    text = _ok(actctl(db_url, config_file, "report"))
    header, rows = table_rows(text.split("PanDA jobs per queue\n")[1])
    assert header == [
        "queue",
        "queued",
        "running",
        "failed",
        "donefailed",
        "total",
        "failed (1h)",
        "overdue",
        "heartbeat lag",
    ]
    assert rows[0] == ["Q1", "0", "2", "1", "1", "4", "1", "0", ""]
    assert rows[1][:8] == ["Q2", "1", "0", "2", "0", "3", "2", "1"]
    assert rows[1][8].startswith("00:30:")
    header, rows = table_rows(text.split("CE jobs per CE\n")[1])
    assert header[:3] == ["ce", "enabled", "breaker"] and header[-1] == "failed (1h)"
    assert rows[1][:3] == [ARC_B, "drained", "forced open"]
    _, rows = table_rows(text.split("Top errors of PanDA jobs")[1])
    assert ["Q2", "1201", "2", "stage-in failed"] in rows
    assert "Heartbeats to PanDA (all queues): 1 of 2 overdue, lag 00:30:" in text


def test_report_of_an_empty_store(db_url: URL, tmp_path: Path) -> None:
    empty = write_config(tmp_path / "empty.yaml", {"root": str(tmp_path)})
    report = json.loads(_ok(actctl(db_url, empty, "report", "--json")))
    assert (report["queues"], report["ces"]) == ({}, {})
    assert report["heartbeat"]["lag_seconds"] is None
    text = _ok(actctl(db_url, empty, "report"))
    assert "(no queues)" in text and "(no CEs)" in text and "(no failures)" in text


def test_durations() -> None:
    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("2d") == timedelta(days=2)
    assert parse_duration(" 1.5h ") == timedelta(minutes=90)
    for wrong in ("", "0", "h", "1x", "-1h", "1h 30m"):
        with pytest.raises(ValueError):
            parse_duration(wrong)
    assert [short_duration(s) for s in (3600, 5400, 86400 + 60, 0)] == ["1h", "1h30m", "1d1m", "0s"]


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


@pytest.mark.slow
def test_report_reads_only_the_window_of_the_history(db: Database) -> None:
    """Apart from the two GROUP BYs over the (queue|ce_name, state, id) indexes (the same
    as `actctl status`), no statement of the report reads a whole table or index."""
    now = utcnow()
    fill_store(db, 20000, now, random.Random(2), quiet=True)  # a week of history, 60k rows
    analyze(db, ["panda_jobs", "ce_jobs", "transitions"])
    scope = Scope(None, None, now - timedelta(hours=1), utcnow())
    with capture(db) as statements, db.read() as conn:
        found = build(conn, scope)
    failed = sum(queue["failed_in_window"] for queue in found["queues"].values())
    assert failed == sum(ce["failed_in_window"] for ce in found["ces"].values()) == 29
    grouped = (
        "GROUP BY panda_jobs.queue, panda_jobs.state",
        "GROUP BY ce_jobs.ce_name, ce_jobs.state",
    )
    rest = [(s, p) for s, p in statements if not any(g in " ".join(s.split()) for g in grouped)]
    assert len(rest) == len(statements) - 2
    assert full_scans(db, rest, {"panda_jobs", "ce_jobs", "transitions"}) == []
