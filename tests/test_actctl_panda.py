"""``actctl panda``: reporting backlog, heartbeat lag, what PanDA was told, credentials."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from sqlalchemy.engine import URL

from act.common.db import Database
from act.common.schema import panda_jobs
from act.common.states import Layer
from act.common.timeutil import utcnow
from act.ctl.cli import cli
from act.testing.panda import TestCA
from tests.support.dbs import url_text
from tests.support.jobs import make_jobs

pytestmark = pytest.mark.usefixtures("isolated_config")


def _set(db: Database, ids: list[int], **values: object) -> None:
    db.run(lambda c: c.execute(sa.update(panda_jobs).where(panda_jobs.c.id.in_(ids)), values))


def test_actctl_panda_shows_backlog_lag_told_states_and_credentials(
    db: Database, db_url: URL, tmp_path: Path
) -> None:
    now = utcnow()
    running = db.run(lambda c: make_jobs(c, Layer.PANDA, "running", 3, first_panda_id=1))
    queued = db.run(lambda c: make_jobs(c, Layer.PANDA, "queued", 2, first_panda_id=10))
    killed = db.run(lambda c: make_jobs(c, Layer.PANDA, "tobekilled", 1, first_panda_id=20))
    db.run(lambda c: make_jobs(c, Layer.PANDA, "done", 4, first_panda_id=30))  # nothing to send
    _set(db, running, panda_status="running", next_report_at=now + dt.timedelta(minutes=20))
    _set(db, running[:1], next_report_at=now - dt.timedelta(minutes=45), report_failures=3)
    _set(db, queued, next_report_at=now - dt.timedelta(minutes=5))
    _set(db, killed, panda_command="badattemptnr")
    proxy = TestCA(tmp_path / "ca").proxy(tmp_path / "x509_production", cn="act-production")
    config_file = tmp_path / "act.yaml"
    config_file.write_text(f"panda:\n  roles:\n    production:\n      proxy: {proxy}\n")

    result = CliRunner().invoke(
        cli, ["--config", str(config_file), "--db-url", url_text(db_url), "panda", "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert (shown["scheduled"], shown["overdue"], shown["failing"]) == (5, 3, 1)
    assert shown["most_failures"] == 3
    assert 45 * 60 <= shown["lag_seconds"] < 50 * 60
    assert shown["told"] == {"(nothing yet)": 2, "running": 3}
    assert shown["stopped_by_command"] == {"badattemptnr": 1}
    (credential,) = shown["credentials"]
    assert (credential["role"], credential["kind"], credential["problem"]) == (
        "production",
        "proxy",
        None,
    )
    assert 95 * 3600 < credential["remaining_seconds"] <= 96 * 3600

    text = CliRunner().invoke(
        cli, ["--config", str(config_file), "--db-url", url_text(db_url), "panda"]
    )
    assert text.exit_code == 0, text.output
    assert "heartbeat lag (oldest overdue)  00:4" in text.output
    assert "production" in text.output and str(proxy) in text.output


def test_actctl_panda_without_backlog_or_credentials(db: Database, db_url: URL) -> None:
    result = CliRunner().invoke(cli, ["--db-url", url_text(db_url), "panda"])
    assert result.exit_code == 0, result.output
    assert "heartbeat lag (oldest overdue)  none" in result.output
    assert "(none configured under panda.roles)" in result.output
