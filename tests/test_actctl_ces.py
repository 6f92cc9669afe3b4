"""actctl ces and actctl ce open|close|auto|drain|enable, on every backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import URL

from act.common import exitcodes
from act.common.db import Database
from act.common.schema import ces
from act.common.states import Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs, transition
from act.ctl.cli import cli
from act.engine import breaker
from act.engine.settings import BreakerSettings
from tests.support.dbs import url_text
from tests.support.procs import write_config

pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "act.yaml",
        {
            "root": str(tmp_path),
            "engine": {
                "ces": {
                    "arc1": {"backend": "arc", "url": "https://arc1.example.org/arex"},
                    "local1": {"backend": "local"},
                }
            },
        },
    )


def actctl(url: URL, config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config_file), "--db-url", url_text(url), *args])


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def _jobs_at_arc1(db: Database) -> None:
    rows = [{"backend": "arc", "ce_name": "arc1", "attempts_left": 1} for _ in range(3)]
    ids = db.run(lambda c: create_jobs(c, Layer.CE, rows, "tosubmit", actor=Actor.TRANSLATOR))
    db.run(
        lambda c: transition(c, Layer.CE, ids[:2], "tosubmit", "submitting", actor=Actor.SUBMITTER)
    )
    db.run(
        lambda c: transition(c, Layer.CE, ids[:2], "submitting", "submitted", actor=Actor.SUBMITTER)
    )


def test_ces_lists_configured_ces_with_breaker_failures_and_jobs(
    db: Database, db_url: URL, config_file: Path
) -> None:
    _jobs_at_arc1(db)
    settings = BreakerSettings(failures=1)
    db.run(
        lambda c: breaker.record_failure(
            c, "arc1", error="TLS: certificate verify failed", now=utcnow(), settings=settings
        )
    )
    records = json.loads(ok(actctl(db_url, config_file, "ces", "--json")))
    by_name = {r["ce"]: r for r in records}
    assert set(by_name) == {"arc1", "local1"}
    arc1 = by_name["arc1"]
    assert (arc1["backend"], arc1["breaker"], arc1["failures"], arc1["enabled"]) == (
        "arc",
        "open",
        1,
        True,
    )
    assert arc1["last_error"] == "TLS: certificate verify failed"
    assert arc1["jobs"] == {"tosubmit": 1, "submitted": 2}
    assert by_name["local1"]["breaker"] == "closed" and by_name["local1"]["jobs"] == {}
    text = ok(actctl(db_url, config_file, "ces"))
    line = next(line for line in text.splitlines() if line.startswith("arc1"))
    assert "open" in line and "tosubmit=1 submitted=2" in line and "TLS" in line


def test_ce_commands_force_drain_and_record_who_and_why(
    db: Database, db_url: URL, config_file: Path
) -> None:
    out = ok(
        actctl(db_url, config_file, "ce", "open", "arc1", "--reason", "downtime", "--who", "al")
    )
    assert out.startswith("arc1: breaker forced open")
    with db.read() as conn:
        row = conn.execute(sa.select(ces).where(ces.c.name == "arc1")).mappings().one()
    assert (row["breaker_forced"], row["reason"], row["updated_by"]) == ("open", "downtime", "al")
    text = ok(actctl(db_url, config_file, "ces"))
    assert "forced open (auto: closed)" in text and "arc1: downtime (by al" in text

    ok(actctl(db_url, config_file, "ce", "close", "arc1", "--reason", "fixed"))
    assert json.loads(ok(actctl(db_url, config_file, "ces", "--json")))[0]["breaker_forced"] == (
        "closed"
    )
    ok(actctl(db_url, config_file, "ce", "auto", "arc1", "--reason", "normal again"))
    ok(actctl(db_url, config_file, "ce", "drain", "local1", "--reason", "retiring", "--who", "bo"))
    records = {r["ce"]: r for r in json.loads(ok(actctl(db_url, config_file, "ces", "--json")))}
    assert records["arc1"]["breaker_forced"] is None
    assert records["local1"]["enabled"] is False and records["local1"]["updated_by"] == "bo"
    assert "drained" in ok(actctl(db_url, config_file, "ces"))
    ok(actctl(db_url, config_file, "ce", "enable", "local1", "--reason", "back"))
    records = {r["ce"]: r for r in json.loads(ok(actctl(db_url, config_file, "ces", "--json")))}
    assert records["local1"]["enabled"] is True


def test_unknown_ce_and_missing_reason_are_errors(
    db: Database, db_url: URL, config_file: Path
) -> None:
    unknown = actctl(db_url, config_file, "ce", "open", "nope", "--reason", "x")
    assert unknown.exit_code == exitcodes.NOT_FOUND and "no CE 'nope'" in unknown.stderr
    missing = actctl(db_url, config_file, "ce", "drain", "arc1")
    assert missing.exit_code == exitcodes.USAGE and "--reason" in missing.stderr
