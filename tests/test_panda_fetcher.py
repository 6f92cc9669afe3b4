"""The PanDA fetcher against the PanDA TEST DOUBLE (act.testing.panda), every backend."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from act.atlas import spool
from act.atlas.config import Context
from act.atlas.fetcher import FetcherOptions, jobs_wanted, run_once
from act.atlas.served import served_queues
from act.common.db import Database
from act.common.faults import EXIT_CODE
from act.common.schema import panda_jobs
from act.common.schema import queues as queues_table
from act.common.states import Layer
from act.common.timeutil import utcnow
from act.service.settings import Settings
from act.testing.panda import PandaTestServer, make_job_spec
from tests.support.contexts import daemon_context
from tests.support.dbs import url_text
from tests.support.jobs import make_jobs
from tests.support.panda import settings_for
from tests.support.procs import daemon_once, write_config

QUEUE = "TEST_QUEUE"
CE = {"flavour": "arc", "endpoint": "https://ce.example.org/arex", "ce_queue": "q"}


def queue_config(**values: Any) -> dict[str, Any]:
    return {"ces": [CE], "max_queued": 100, "max_jobs": 1000, "jobs_per_cycle": 50, **values}


def make_settings(
    root: Path, server: PandaTestServer, *, api: str = "new", **queues: dict[str, Any]
) -> Settings:
    return Settings.model_validate(
        {
            "root": str(root),
            "panda": settings_for(server, api=api).model_dump(mode="json"),
            "queues": {"serve": queues or {QUEUE: queue_config(log_url_prefix="https://logs/x")}},
        }
    )


def context(db: Database, settings: Settings) -> Context:
    return daemon_context(db, settings, "panda_fetcher", options=FetcherOptions())


@pytest.fixture
def server() -> Iterator[PandaTestServer]:
    with PandaTestServer() as test_server:
        yield test_server


def stored(db: Database) -> dict[int, Any]:
    with db.read() as conn:
        return {r.panda_id: r for r in conn.execute(sa.select(panda_jobs)).all()}


def handed_out(server: PandaTestServer) -> list[int]:
    return sorted(p for p, job in server.jobs.items() if job.status != "activated")


def test_fetches_and_stores_the_spec_verbatim(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    ids = server.seed(3, queue=QUEUE)
    ctx = context(db, make_settings(tmp_path, server))
    run_once(ctx)
    rows = stored(db)
    assert sorted(rows) == ids == handed_out(server)
    for panda_id, row in rows.items():
        assert row.state == "received"
        assert row.spec_format == "json"
        assert json.loads(row.spec) == server.jobs[panda_id].spec
        assert row.attempt == 1 and row.prod_source_label == "managed"
        assert row.next_report_at is not None and row.next_report_at <= utcnow()
        assert row.log_url.startswith("https://logs/x/")
        assert row.log_url.endswith(f"/{QUEUE}/{panda_id}.out")
        assert not row.heartbeat_less
    assert len(server.received("pilot/acquire_jobs")) == 1
    assert spool.pending(spool.spool_dir(tmp_path)) == []


def test_spec_is_byte_identical_to_the_reply(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    odd = '{"PandaID": 77,  "jobName": "caf\\u00e9 \u2603", "attemptNr": "2", "x": 1.50}'
    body = '{"success": true, "message": "", "data": {"StatusCode": 0, "jobs": [' + odd + "]}}"
    server.inject("malformed", body=body, method="pilot/acquire_jobs")
    run_once(context(db, make_settings(tmp_path, server)))
    row = stored(db)[77]
    assert row.spec == odd
    assert row.attempt == 2


def test_legacy_api_urlencoded_single_job(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    server.legacy_accept_json = False
    (panda_id,) = server.seed(1, queue=QUEUE)
    settings = make_settings(
        tmp_path, server, api="legacy", **{QUEUE: queue_config(jobs_per_cycle=1)}
    )
    run_once(context(db, settings))  # nJobs=1: one URL-encoded job, the whole reply stored
    row = stored(db)[panda_id]
    assert row.spec_format == "form"
    assert row.spec.startswith("StatusCode=0&") and f"PandaID={panda_id}" in row.spec


def test_limits_per_queue(db: Database, server: PandaTestServer, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        server,
        A=queue_config(jobs_per_cycle=4),
        B=queue_config(max_queued=5),
        C=queue_config(max_jobs=7),
    )
    for name in "ABC":
        server.seed(20, queue=name)
    # B already has 3 waiting (received/queued) jobs; C has 5 active ones (running counts too).
    db.run(lambda c: make_jobs(c, Layer.PANDA, "received", 2, first_panda_id=10_001))
    db.run(lambda c: make_jobs(c, Layer.PANDA, "queued", 1, first_panda_id=10_010))
    db.run(lambda c: make_jobs(c, Layer.PANDA, "running", 5, first_panda_id=10_020))
    db.run(lambda c: make_jobs(c, Layer.PANDA, "done", 4, first_panda_id=10_030))
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs).where(panda_jobs.c.panda_id < 10_020).values(queue="B")
        )
    )
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs).where(panda_jobs.c.panda_id >= 10_020).values(queue="C")
        )
    )
    ctx = context(db, settings)
    queues = served_queues(ctx)
    assert db.run(lambda c: jobs_wanted(c, queues)) == {"A": 4, "B": 2, "C": 2}
    run_once(ctx)
    by_queue: dict[str, int] = {}
    for row in stored(db).values():
        if row.panda_id < 10_000:
            by_queue[row.queue] = by_queue.get(row.queue, 0) + 1
    assert by_queue == {"A": 4, "B": 2, "C": 2}
    # next cycle: B is full (5 waiting), C is full (7 active), A gets 4 more
    run_once(ctx)
    assert db.run(lambda c: jobs_wanted(c, served_queues(ctx))) == {"A": 4, "B": 0, "C": 0}
    assert len([r for r in stored(db).values() if r.queue == "A"]) == 8


def test_offline_and_disabled_queues_get_nothing(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, server, OFF=queue_config(status="offline"), DIS=queue_config(), ON=queue_config()
    )
    for name in ("OFF", "DIS", "ON"):
        server.seed(2, queue=name)
    db.run(
        lambda c: c.execute(
            sa.insert(queues_table).values(name="DIS", enabled=False, updated_at=utcnow())
        )
    )
    run_once(context(db, settings))
    assert sorted({r.queue for r in stored(db).values()}) == ["ON"]
    asked = [r.params["site_name"] for r in server.received("pilot/acquire_jobs")]
    assert asked == ["ON"]


def test_operator_limits_override_the_config(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    server.seed(10, queue=QUEUE)
    db.run(
        lambda c: c.execute(
            sa.insert(queues_table).values(name=QUEUE, max_queued=3, updated_at=utcnow())
        )
    )
    run_once(context(db, make_settings(tmp_path, server)))
    assert len(stored(db)) == 3


def test_bad_panda_id_is_kept_aside_and_the_others_stored(
    db: Database, server: PandaTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    good = json.dumps(make_job_spec(501))
    jobs = [good, '{"PandaID": "abc", "jobName": "x"}', '{"jobName": "no id"}']
    body = json.dumps({"success": True, "message": "", "data": {"StatusCode": 0, "jobs": []}})
    body = body.replace('"jobs": []', '"jobs": [' + ", ".join(jobs) + "]")
    server.inject("malformed", body=body, method="pilot/acquire_jobs")
    with caplog.at_level(logging.ERROR):
        run_once(context(db, make_settings(tmp_path, server)))
    assert list(stored(db)) == [501]
    assert stored(db)[501].spec == good
    rejected = spool.spool_dir(tmp_path) / "rejected"
    kept = sorted(p.read_text() for p in rejected.glob("*.txt"))
    assert kept == sorted(jobs[1:])
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2
    assert all(QUEUE in e and "pilot/acquire_jobs" in e for e in errors)
    assert any("'abc'" in e for e in errors) and any("no valid PandaID (None)" in e for e in errors)
    assert spool.pending(spool.spool_dir(tmp_path)) == []


def test_malformed_reply_is_one_clear_error_and_kept(
    db: Database, server: PandaTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.seed(2, queue=QUEUE)
    server.inject("malformed", body="<html>Proxy Error</html>", method="pilot/acquire_jobs")
    with caplog.at_level(logging.ERROR):
        run_once(context(db, make_settings(tmp_path, server)))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert QUEUE in errors[0] and "pilot/acquire_jobs" in errors[0]
    assert "Proxy Error" in errors[0]
    assert stored(db) == {}
    rejected = spool.spool_dir(tmp_path) / "rejected"
    assert [p.read_text() for p in rejected.glob("*.txt")] == ["<html>Proxy Error</html>"]


def test_leftover_spool_is_ingested_once(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    directory = spool.spool_dir(tmp_path)
    body = json.dumps(
        {"success": True, "data": {"StatusCode": 0, "jobs": [make_job_spec(1), make_job_spec(2)]}}
    )
    spool.write_reply(directory, queue=QUEUE, api="new", label="managed", reply=body)
    db.run(lambda c: make_jobs(c, Layer.PANDA, "running", 1, first_panda_id=2))
    before = stored(db)[2]
    run_once(context(db, make_settings(tmp_path, server, Q=queue_config(status="offline"))))
    rows = stored(db)
    assert sorted(rows) == [1, 2]
    assert rows[1].state == "received" and rows[2].spec == before.spec  # job 2 kept as it was
    assert spool.pending(directory) == []


def test_a_spool_write_cut_short_by_a_kill_is_finished_or_put_aside(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    # A fetcher SIGKILLed inside spool.write_reply leaves its temporary file: complete (killed in
    # the fsync, before the rename) or cut short (killed inside the write).
    directory = spool.spool_dir(tmp_path)
    directory.mkdir(parents=True)
    body = json.dumps({"success": True, "data": {"jobs": [make_job_spec(1), make_job_spec(2)]}})
    document = json.dumps(
        {"queue": QUEUE, "api": "new", "prod_source_label": "managed", "reply": body}
    )
    whole = directory / ".00000000000000000001-TEST_QUEUE-aa.json.k2j4h_x9.tmp"
    whole.write_text(document)
    cut = directory / ".00000000000000000002-TEST_QUEUE-bb.json.q8z0w1e3.tmp"
    cut.write_text(document[: len(document) // 2])
    young = directory / ".00000000000000000003-TEST_QUEUE-cc.json.m5n6b7v8.tmp"
    young.write_text(document[:10])
    old = time.time() - spool.PARTIAL_AGE - 5
    os.utime(cut, (old, old))
    run_once(context(db, make_settings(tmp_path, server, Q=queue_config(status="offline"))))
    assert sorted(stored(db)) == [1, 2]  # the complete reply's jobs, from the recovered file
    assert not whole.exists() and not cut.exists()
    assert young.exists()  # maybe still being written: left alone for now
    rejected = directory / "rejected"
    kept = rejected / "00000000000000000002-TEST_QUEUE-bb.txt"
    assert kept.read_text() == document[: len(document) // 2]
    reason = (rejected / "00000000000000000002-TEST_QUEUE-bb.reason").read_text()
    assert "the fetcher died while writing it" in reason
    assert spool.pending(directory) == []


# -- the crash test: a real act-daemon process killed between PanDA's reply and the commit ----


def _daemon(tmp_path: Path, config: Path, fault: str | None) -> subprocess.CompletedProcess[str]:
    log = tmp_path / f"fetcher-{fault or 'clean'}.log"
    return daemon_once("panda_fetcher", config, tmp_path, fault=fault, log=log)


@pytest.mark.slow
@pytest.mark.parametrize("api", ["new", "legacy"])
def test_crash_after_spool_loses_nothing_and_stores_once(
    db: Database, db_url: URL, server: PandaTestServer, tmp_path: Path, api: str
) -> None:
    ids = server.seed(7, queue=QUEUE)
    config = write_config(
        tmp_path / "act.yaml",
        {
            "root": str(tmp_path),
            "db": {"url": url_text(db_url)},
            "panda": settings_for(server, api=api).model_dump(mode="json"),
            "queues": {"serve": {QUEUE: queue_config(jobs_per_cycle=5)}},
            "daemons": {"panda_fetcher": {}},
        },
    )
    crashed = _daemon(tmp_path, config, "panda_fetcher:after-spool")
    assert crashed.returncode == EXIT_CODE, crashed.stderr
    assert stored(db) == {}  # died before the commit ...
    assert len(spool.pending(spool.spool_dir(tmp_path))) == 1  # ... with the reply spooled
    assert handed_out(server) == ids[:5]  # PanDA thinks we have 5 jobs

    clean = _daemon(tmp_path, config, None)
    assert clean.returncode == 0, clean.stderr
    rows = stored(db)
    # every job PanDA handed out is stored exactly once (panda_id is unique), the spooled ones
    # from the leftover reply, then two more asked for in the same cycle
    assert sorted(rows) == ids == handed_out(server)
    assert all(r.state == "received" for r in rows.values())
    asked = server.received("pilot/acquire_jobs" if api == "new" else "getJob")
    assert len(asked) == 2  # PanDA was asked once per run, never again for the same jobs
    assert spool.pending(spool.spool_dir(tmp_path)) == []
    with db.read() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(panda_jobs)).scalar()
    assert count == 7


def test_heartbeat_less_queue_marks_its_jobs(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    (panda_id,) = server.seed(1, queue="HBL")
    run_once(context(db, make_settings(tmp_path, server, HBL=queue_config(heartbeat_less=True))))
    row = stored(db)[panda_id]
    assert row.heartbeat_less and row.log_url is None  # no log_url_prefix configured


def test_refusal_is_logged_and_nothing_stored(
    db: Database, server: PandaTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.seed(2, queue=QUEUE)
    server.refuse_role = True
    with caplog.at_level(logging.ERROR):
        run_once(context(db, make_settings(tmp_path, server)))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and QUEUE in errors[0] and "acquire_jobs" in errors[0]
    assert stored(db) == {} and handed_out(server) == []
    assert spool.pending(spool.spool_dir(tmp_path)) == []
