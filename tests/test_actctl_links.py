"""actctl job: the PanDA monitor link, log_url, the web area's files and the CE jobs' own URLs."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import URL, Connection

from act.atlas.panda_settings import DEFAULT_MONITOR_URL, PandaServerSettings
from act.common import exitcodes
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs
from act.common.states import Actor, Layer
from act.common.transitions import create_jobs
from act.ctl.cli import cli
from tests.support.dbs import url_text
from tests.support.jobs import ce_row, panda_row
from tests.support.procs import write_config

LOG_URL = "https://logs.example.org/act/2026-11-20/Q1/5001.out"
CREATED = datetime(2026, 11, 21, 8, 0, tzinfo=timezone.utc)


pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "act.yaml",
        {
            "root": str(tmp_path),
            "panda": {"monitor_url": "https://mon.example.org/jobs/{panda_id}/"},
            "weblogs": {"dir": str(tmp_path / "web")},
            "engine": {
                "ces": {
                    "arc1": {"backend": "arc", "url": "https://arc1.example.org:443/arex/"},
                    "arc7": {
                        "backend": "arc",
                        "url": "https://arc7.example.org/arex",
                        "options": {"rest_version": "1.1"},
                    },
                    "condor1": {"backend": "condor", "url": "ce1.example.org:9619"},
                    "local1": {"backend": "local", "options": {"workdir": str(tmp_path / "lw")}},
                    "local2": {"backend": "local"},
                }
            },
        },
    )


def actctl(url: URL, config_file: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config_file), "--db-url", url_text(url), *args])


def _job(conn: Connection, panda_id: int, queue: str, log_url: str | None) -> int:
    row = {**panda_row(panda_id, queue), "log_url": log_url}
    (job_id,) = create_jobs(conn, Layer.PANDA, [row], "received", actor=Actor.PANDA_FETCHER)
    conn.execute(sa.update(panda_jobs).where(panda_jobs.c.id == job_id).values(created_at=CREATED))
    return job_id


def _ce(conn: Connection, job_id: int, ce: str, backend: str, ce_job_id: str | None) -> None:
    row = {**ce_row(ce, backend), "panda_job_id": job_id}
    (ce_id,) = create_jobs(conn, Layer.CE, [row], "tosubmit", actor=Actor.TRANSLATOR)
    values = {"ce_job_id": ce_job_id, "output_dir": f"/outputs/{ce_id}" if ce_job_id else None}
    conn.execute(sa.update(ce_jobs).where(ce_jobs.c.id == ce_id).values(**values))


def _seed(conn: Connection) -> None:
    job = _job(conn, 5001, "Q1", LOG_URL)
    _ce(conn, job, "arc1", "arc", "a/b c")
    _ce(conn, job, "arc7", "arc", "xyz")
    _ce(conn, job, "condor1", "condor", "12.0")
    _ce(conn, job, "local1", "local", "l-1")
    _ce(conn, job, "local2", "local", "l-2")
    _ce(conn, job, "arc1", "arc", None)  # not submitted yet
    _job(conn, 5002, "Q1", None)
    _job(conn, 5003, "bad/queue", None)


def test_job_json_links(db: Database, db_url: URL, config_file: Path, tmp_path: Path) -> None:
    db.run(_seed)
    day = tmp_path / "web" / "2026-11-20" / "Q1"
    day.mkdir(parents=True)
    (day / "5001.out").write_text("pilot stdout\n")

    links = json.loads(_ok(actctl(db_url, config_file, "job", "5001", "--json")))["links"]
    assert links["panda_monitor"] == "https://mon.example.org/jobs/5001/"
    assert links["log_url"] == LOG_URL
    base = LOG_URL.removesuffix(".out")
    assert links["web"] == {
        "out": {"path": str(day / "5001.out"), "url": LOG_URL, "published": True},
        "err": {"path": str(day / "5001.err"), "url": f"{base}.err", "published": False},
        "log": {"path": str(day / "5001.log"), "url": f"{base}.log", "published": False},
    }
    arc1, arc7, condor1, local1, local2, unsubmitted = links["ce_jobs"]
    job_url = "https://arc1.example.org:443/arex/rest/1.0/jobs/a%2Fb%20c"
    assert arc1["session_url"] == f"{job_url}/session/"
    assert arc1["diagnose_url"] == f"{job_url}/diagnose/errors"
    assert arc1["output_dir"] == f"/outputs/{arc1['id']}"
    assert arc7["session_url"] == "https://arc7.example.org/arex/rest/1.1/jobs/xyz/session/"
    assert (condor1["ce_job_id"], condor1["backend"]) == ("12.0", "condor")
    assert "session_url" not in condor1 and "job_dir" not in condor1
    assert local1["job_dir"] == str(tmp_path / "lw" / "jobs" / "l-1")
    assert local2["job_dir"] == str(tmp_path / "local-ce" / "local2" / "jobs" / "l-2")
    assert set(unsubmitted) == {"id", "ce", "backend", "ce_job_id", "output_dir"}


def test_job_links_without_log_url_or_a_usable_queue(
    db: Database, db_url: URL, config_file: Path, tmp_path: Path
) -> None:
    db.run(_seed)
    links = json.loads(_ok(actctl(db_url, config_file, "job", "5002", "--json")))["links"]
    day = tmp_path / "web" / "2026-11-21" / "Q1"  # the date the job was created
    assert links["log_url"] is None and links["ce_jobs"] == []
    assert links["web"] == {
        "out": {"path": str(day / "5002.out"), "url": None, "published": False},
        "log": {"path": str(day / "5002.log"), "url": None, "published": False},
    }
    links = json.loads(_ok(actctl(db_url, config_file, "job", "5003", "--json")))["links"]
    assert "not usable as a directory name" in links["web"]["problem"]


def test_job_text_shows_links_before_the_history(
    db: Database, db_url: URL, config_file: Path, tmp_path: Path
) -> None:
    db.run(_seed)
    text = _ok(actctl(db_url, config_file, "job", "5001"))
    part = text.split("Links and logs\n")[1].split("History")[0]
    lines: dict[str, str] = {}
    for line in part.strip().splitlines():
        name, _, value = line.partition("  ")
        lines[name.strip()] = value.strip()
    assert lines["PanDA monitor"] == "https://mon.example.org/jobs/5001/"
    assert lines["log_url (GTAG)"] == LOG_URL
    day = tmp_path / "web" / "2026-11-20" / "Q1"
    assert lines["web .out"] == f"{day / '5001.out'} (not yet published)"
    assert lines["web .log URL"] == LOG_URL.removesuffix(".out") + ".log"
    assert any(
        value == "https://arc1.example.org:443/arex/rest/1.0/jobs/a%2Fb%20c/session/"
        for value in lines.values()
    )
    assert text.index("Links and logs") < text.index("History")


def test_job_with_the_default_monitor_url(db: Database, db_url: URL, tmp_path: Path) -> None:
    db.run(_seed)
    plain = write_config(tmp_path / "plain.yaml", {"root": str(tmp_path)})
    links = json.loads(_ok(actctl(db_url, plain, "job", "5001", "--json")))["links"]
    assert links["panda_monitor"] == DEFAULT_MONITOR_URL.format(panda_id=5001)
    assert links["panda_monitor"] == "https://bigpanda.cern.ch/job?pandaid=5001"
    # The CEs are not configured here: no URL can be derived, the rows are still shown.
    assert all("session_url" not in ce for ce in links["ce_jobs"])


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://mon.example.org/job", "must contain {panda_id}"),
        ("https://mon.example.org/{panda_id}/{task}", "the only field"),
        ("ftp://mon.example.org/{panda_id}", "should match pattern"),
    ],
)
def test_a_bad_monitor_url_is_a_config_error(tmp_path: Path, url: str, problem: str) -> None:
    bad = write_config(tmp_path / "bad.yaml", {"panda": {"monitor_url": url}})
    result = CliRunner().invoke(cli, ["--config", str(bad), "job", "1"])
    assert result.exit_code == exitcodes.CONFIG
    assert "panda.monitor_url" in result.stderr and problem in result.stderr
    assert PandaServerSettings(monitor_url="http://m/{panda_id}").monitor_link(7) == "http://m/7"


def _ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout
