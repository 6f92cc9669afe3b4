"""The translator on every backend: CE jobs for arc/condor/local queues, failures, event ranges
(against the PanDA TEST DOUBLE for the event-service ranges)."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import sqlalchemy as sa

from act.atlas.config import Context
from act.atlas.reporting import report_fields
from act.atlas.translator import TranslatorOptions, run_once
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs
from act.common.states import Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs, transition
from act.local.description import LocalJob
from act.service.settings import Settings
from act.testing.panda import PandaTestServer, make_job_spec
from tests.support.contexts import daemon_context
from tests.support.panda import settings_for

ARC_CE = {"flavour": "arc", "endpoint": "arc1", "ce_queue": "grid"}
CONDOR_CE = {"flavour": "condor", "endpoint": "htc.example.org:9619", "ce_queue": "long"}
ENGINE_CES = {
    "arc1": {"backend": "arc", "url": "https://arc1.example.org/arex", "queue": "grid"},
    "htc": {"backend": "condor", "url": "htc.example.org:9619", "queue": "long"},
    "local1": {"backend": "local"},
}


def make_settings(root: Path, server: PandaTestServer | None = None) -> Settings:
    data: dict[str, Any] = {
        "root": str(root),
        "engine": {"ces": ENGINE_CES, "attempts": 4},
        "queues": {
            "serve": {
                "ARCQ": {"ces": [ARC_CE], "truepilot": True},
                "CONDORQ": {
                    "ces": [CONDOR_CE, {"flavour": "condor", "endpoint": "nowhere:9619"}],
                    "truepilot": True,
                },
                "LOCALQ": {
                    "ces": [{"flavour": "arc", "endpoint": "local1"}],
                    "truepilot": True,
                    "pilot_wrapper": "/bin/echo",
                },
                "NATIVEQ": {
                    "ces": [ARC_CE],
                    "truepilot": False,
                    "pilot_tarball": "https://example.org/pilot3.tar.gz",
                },
            }
        },
    }
    if server is not None:
        data["panda"] = settings_for(server).model_dump(mode="json")
    return Settings.model_validate(data)


def context(db: Database, settings: Settings, **options: Any) -> Context:
    return daemon_context(
        db, settings, "translator", options=TranslatorOptions.model_validate(options)
    )


def received(db: Database, queue: str, *specs: dict[str, Any]) -> list[int]:
    rows = [
        {
            "panda_id": spec["PandaID"],
            "queue": queue,
            "attempt": 1,
            "spec": json.dumps(spec),
            "spec_format": "json",
            "log_url": f"https://logs/{spec['PandaID']}.out",
        }
        for spec in specs
    ]
    return db.run(
        lambda c: create_jobs(c, Layer.PANDA, rows, "received", actor=Actor.PANDA_FETCHER)
    )


def panda_row(db: Database, panda_id: int) -> Any:
    with db.read() as conn:
        return conn.execute(sa.select(panda_jobs).where(panda_jobs.c.panda_id == panda_id)).one()


def ce_rows(db: Database, panda_id: int) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(sa.select(ce_jobs).where(ce_jobs.c.panda_id == panda_id)).all())


def test_arc_queue(db: Database, tmp_path: Path) -> None:
    spec = make_job_spec(11)
    received(db, "ARCQ", spec)
    run_once(context(db, make_settings(tmp_path)))
    job = panda_row(db, 11)
    assert job.state == "queued" and job.next_report_at <= utcnow()
    (ce,) = ce_rows(db, 11)
    assert ce.state == "tosubmit" and ce.backend == "arc" and ce.candidates == "arc1"
    assert ce.attempts_left == 4 and ce.queue == "ARCQ" and ce.panda_job_id == job.id
    assert ce.description.startswith('&(executable = "runpilot2-wrapper.sh")')
    assert '(queue = "grid")' in ce.description
    input_dir = tmp_path / "jobs" / "11" / "input"
    assert ce.input_dir == str(input_dir)
    assert stat.S_IMODE(input_dir.stat().st_mode) == 0o755
    shipped = input_dir / "pandaJobData.out"
    # the /api/v1 JSON job as the legacy getJob reply pilot3 reads (tests/test_jobfile.py)
    assert parse_qsl(shipped.read_text(), keep_blank_values=True) == [
        (key, str(value)) for key, value in spec.items()
    ]
    assert stat.S_IMODE(shipped.stat().st_mode) == 0o644
    assert "GTAG" in ce.description and "https://logs/11.out" in ce.description


def test_condor_queue_matched_by_url_and_unconfigured_ce_warned_once(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    received(db, "CONDORQ", make_job_spec(21), make_job_spec(22))
    with caplog.at_level(logging.WARNING):
        run_once(context(db, make_settings(tmp_path)))
    for panda_id in (21, 22):
        (ce,) = ce_rows(db, panda_id)
        assert ce.backend == "condor" and ce.candidates == "htc"
        assert "grid_resource = condor htc.example.org htc.example.org:9619" in ce.description
        assert '+remote_queue = "long"' in ce.description
        assert panda_row(db, panda_id).state == "queued"
    warnings = [r.getMessage() for r in caplog.records if "nowhere:9619" in r.getMessage()]
    assert len(warnings) == 1 and "CONDORQ" in warnings[0]


def test_condor_output_goes_to_the_day_directory_of_the_web_area(
    db: Database, tmp_path: Path
) -> None:
    received(db, "CONDORQ", make_job_spec(23), make_job_spec(24))
    url = "https://act.example.org/jobs/2026-03-01/CONDORQ/23.out"
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs).where(panda_jobs.c.panda_id == 23).values(log_url=url)
        )
    )
    old = os.umask(0o077)  # the web area's modes do not depend on the umask
    try:
        run_once(context(db, make_settings(tmp_path)))
    finally:
        os.umask(old)
    web = tmp_path / "weblogs"  # weblogs.dir not set: under the state root
    day = web / "2026-03-01" / "CONDORQ"  # the date of the GTAG URL
    (ce,) = ce_rows(db, 23)
    assert f"output = {day / '23.out'}\n" in ce.description  # where GTAG points
    assert f"error = {day / '23.err'}\n" in ce.description
    assert f"log = {day / '23.log'}\n" in ce.description
    created = f"{panda_row(db, 24).created_at:%Y-%m-%d}"  # no usable URL: the creation day
    (other,) = ce_rows(db, 24)
    assert f"output = {web / created / 'CONDORQ' / '24.out'}\n" in other.description
    for directory in (web, web / "2026-03-01", day, web / created / "CONDORQ"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o755, directory


def test_a_condor_queue_named_unusably_for_the_web_area_fails_its_jobs(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    settings.queues.serve["../CONDORQ"] = settings.queues.serve["CONDORQ"]
    received(db, "../CONDORQ", make_job_spec(25))
    run_once(context(db, settings))
    job = panda_row(db, 25)
    assert job.state == "failed" and ce_rows(db, 25) == []
    assert "not usable as a directory name" in report_fields(job.report)["pilotErrorDiag"]
    assert not (tmp_path / "weblogs").exists()


def test_local_queue(db: Database, tmp_path: Path) -> None:
    received(db, "LOCALQ", make_job_spec(31))
    run_once(context(db, make_settings(tmp_path)))
    (ce,) = ce_rows(db, 31)
    assert ce.backend == "local" and ce.candidates == "local1"
    local = LocalJob.parse(ce.description)
    assert local.executable == "/bin/echo"
    assert local.arguments[:2] == ["-q", "LOCALQ"]
    assert local.environment["GTAG"] == "https://logs/31.out"
    assert "pandaJobData.out" in local.inputs
    assert (Path(ce.input_dir) / "pandaJobData.out").is_file()


def test_a_legacy_reply_is_shipped_as_stored(db: Database, tmp_path: Path) -> None:
    text = urlencode({"StatusCode": 0, **make_job_spec(32)})
    row = {"panda_id": 32, "queue": "LOCALQ", "attempt": 1, "spec": text, "spec_format": "form"}
    db.run(lambda c: create_jobs(c, Layer.PANDA, [row], "received", actor=Actor.PANDA_FETCHER))
    run_once(context(db, make_settings(tmp_path)))
    (ce,) = ce_rows(db, 32)
    assert (Path(ce.input_dir) / "pandaJobData.out").read_text() == text


def test_untranslatable_job_fails_with_a_diagnosis(db: Database, tmp_path: Path) -> None:
    bad = {**make_job_spec(41), "coreCount": "eight"}
    received(db, "ARCQ", bad, make_job_spec(42))
    run_once(context(db, make_settings(tmp_path), error_code=1234))
    job = panda_row(db, 41)
    assert job.state == "failed"
    assert job.error_code == 1234 and "coreCount" in job.error_text
    report = report_fields(job.report)
    assert report["pilotErrorCode"] == 1234 and "coreCount" in report["pilotErrorDiag"]
    assert job.next_report_at is not None
    assert ce_rows(db, 41) == []
    assert panda_row(db, 42).state == "queued"  # the batch goes on


def test_unknown_queue_and_bad_spec_fail(db: Database, tmp_path: Path) -> None:
    received(db, "NOSUCHQ", make_job_spec(51))
    rows = [{"panda_id": 52, "queue": "ARCQ", "spec": "{not json", "spec_format": "json"}]
    db.run(lambda c: create_jobs(c, Layer.PANDA, rows, "received", actor=Actor.PANDA_FETCHER))
    run_once(context(db, make_settings(tmp_path)))
    assert "NOSUCHQ" in panda_row(db, 51).error_text
    assert panda_row(db, 52).error_text.startswith("spec: not JSON")


def test_a_resubmission_inherits_the_tries_left_and_fails_when_none_are(
    db: Database, tmp_path: Path
) -> None:
    """One retry budget (act.engine.resubmit): a PanDA-level resubmission's CE job gets one try
    less than its previous CE job had left, whatever that job spent on restarts and CE-level
    resubmissions; with none left the job fails."""
    (pid,) = received(db, "ARCQ", make_job_spec(61))
    ctx = context(db, make_settings(tmp_path))  # engine.attempts: 4
    run_once(ctx)
    assert [row.attempts_left for row in ce_rows(db, 61)] == [4]
    # the first CE job used two more tries at the CE (a restart, a CE-level resubmission)
    db.run(
        lambda c: c.execute(
            sa.update(ce_jobs).where(ce_jobs.c.panda_job_id == pid).values(attempts_left=2)
        )
    )

    def resubmit() -> None:
        db.run(
            lambda c: transition(
                c, Layer.PANDA, [pid], "queued", "toresubmit", actor=Actor.OPERATOR
            )
        )
        run_once(ctx)

    resubmit()
    assert [row.attempts_left for row in ce_rows(db, 61)] == [2, 1]
    resubmit()
    job = panda_row(db, 61)
    assert job.state == "failed" and "no attempts left" in job.error_text
    assert len(ce_rows(db, 61)) == 2


def test_the_second_budget_is_refused_with_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"max_ce_jobs was removed: engine\.attempts is the one"):
        TranslatorOptions.model_validate({"max_ce_jobs": 3})


def test_native_queue_has_inputs_and_queuedata(db: Database, tmp_path: Path) -> None:
    received(db, "NATIVEQ", make_job_spec(71))
    run_once(context(db, make_settings(tmp_path)))
    (ce,) = ce_rows(db, 71)
    assert "rucio://" in ce.description and "pilot3.tar.gz" in ce.description
    assert (Path(ce.input_dir) / "queuedata.json").is_file()


@pytest.fixture
def server() -> Iterator[PandaTestServer]:
    with PandaTestServer() as test_server:
        yield test_server


def test_event_ranges_fetched_before_submission(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    (panda_id,) = server.seed(1, queue="NATIVEQ", event_service=True)
    received(db, "NATIVEQ", server.jobs[panda_id].spec)
    run_once(context(db, make_settings(tmp_path, server), n_event_ranges=5))
    calls = server.received("event/acquire_event_ranges")
    assert len(calls) == 1 and calls[0].params["job_id"] == panda_id
    assert calls[0].params["n_ranges"] == 5
    job = panda_row(db, panda_id)
    stored = json.loads(job.event_ranges)
    assert len(stored["ranges"]) == 5 and stored["reported_at"] is None
    (ce,) = ce_rows(db, panda_id)
    shipped = json.loads((Path(ce.input_dir) / "eventranges.json").read_text())
    assert shipped == stored["ranges"]
    assert "eventranges.json" in ce.description and "event_status.dump.json" in ce.description
    # a resubmission reuses the stored ranges: PanDA is not asked again
    db.run(
        lambda c: transition(c, Layer.PANDA, [job.id], "queued", "toresubmit", actor=Actor.OPERATOR)
    )
    run_once(context(db, make_settings(tmp_path, server)))
    assert len(server.received("event/acquire_event_ranges")) == 1
    assert len(ce_rows(db, panda_id)) == 2


def test_event_service_job_without_ranges_fails(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    spec = {**make_job_spec(81), "eventService": "True"}  # PanDA holds no ranges for it
    received(db, "ARCQ", spec)
    run_once(context(db, make_settings(tmp_path, server)))
    job = panda_row(db, 81)
    assert job.state == "failed" and "no event ranges" in job.error_text
