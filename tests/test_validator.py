"""The validator on every backend, with outputs on local storage (file:// URLs, checked for real)
and unreachable storage (a closed port). The real XRootD server's cases are in
tests/test_validator_xrootd.py."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import tarfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from act.atlas import pilot_files, storage_endpoints
from act.atlas.propagator import PropagatorOptions
from act.atlas.propagator import run_once as propagate
from act.atlas.validator import CRASH_POINT, run_once
from act.common.db import Database
from act.common.faults import EXIT_CODE
from act.common.schema import panda_jobs
from act.common.schema import transitions as history
from act.common.timeutil import utcnow
from tests.support.contexts import daemon_context
from tests.support.dbs import url_text
from tests.support.procs import daemon_once, write_config
from tests.support.validating import Job, context, make_settings, store


def test_all_outputs_valid_make_the_job_finished_with_the_corrected_report(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1001)
    outputs = {
        "EVNT.01.pool.root": store(tmp_path / "se", "EVNT.01.pool.root", b"x" * 5000),
        "1001.log.tgz": store(tmp_path / "se", "1001.log.tgz", b""),
    }
    job.heartbeat(outputs, node="")
    assert run_once(context(db, settings)) is False

    row = job.row()
    assert row.state == "finished" and row.next_report_at is not None
    report = job.report()
    assert json.loads(report["xml"]) == outputs
    assert report["computingElement"] == "arc1" and report["batchID"] == "arcid1001"
    assert report["node"] == "wn042.example.org"  # the pilot's was empty: the CE's
    assert report["coreCount"] == 8 and report["transExitCode"] == 0
    assert {"startTime", "endTime"} <= set(report) and "jobId" not in report
    # the logs are in the web area, where the GTAG URL points, and world-readable
    web = tmp_path / "web" / "2026-11-20" / "NATIVE"
    assert (web / "1001.out").read_text().startswith("pilot says hello")
    assert "A-REX" in (web / "1001.log").read_text()
    assert stat.S_IMODE(os.stat(web / "1001.out").st_mode) == 0o644
    assert row.logs_published_at is not None


@pytest.mark.parametrize(
    ("damage", "code", "words"),
    [
        ("size", 1137, ["EVNT.01.pool.root", "5000", "4999"]),
        ("checksum", 1172, ["EVNT.01.pool.root", "adler32"]),
        ("missing", 1165, ["EVNT.01.pool.root", "missing"]),
    ],
)
def test_a_bad_output_fails_the_job_naming_file_expected_and_found(
    db: Database, tmp_path: Path, damage: str, code: int, words: list[str]
) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1002)
    entry = store(tmp_path / "se", "EVNT.01.pool.root", b"y" * 5000)
    path = tmp_path / "se" / "EVNT.01.pool.root"
    if damage == "size":
        path.write_bytes(b"y" * 4999)
    elif damage == "checksum":
        path.write_bytes(b"z" * 5000)
    else:
        path.unlink()
    job.heartbeat({"EVNT.01.pool.root": entry})
    run_once(context(db, settings, invalid_outputs="fail"))

    row = job.row()
    assert row.state == "failed" and row.error_code == code
    diag = job.report()["pilotErrorDiag"]
    for word in words:
        assert word in diag
    assert job.report()["pilotErrorCode"] == code
    assert "ERROR: boom" in job.report()["pilotLog"]  # the excerpt of the pilot's log


def test_a_bad_output_resubmits_by_default(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1003)
    entry = store(tmp_path / "se", "AOD.pool.root", b"a" * 10)
    entry["adler32"] = "00000001"
    job.heartbeat({"AOD.pool.root": entry})
    run_once(context(db, settings))
    row = job.row()
    assert row.state == "toresubmit" and row.report is None
    assert "AOD.pool.root" in row.validation_note


def test_a_bad_output_on_the_last_try_fails_with_the_files_code(
    db: Database, tmp_path: Path
) -> None:
    """The job's retry budget is spent (act.engine.resubmit): it fails here, with the bad file's
    PanDA code, rather than going back to the translator for a generic "no attempts left"."""
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1013, attempts_left=1)
    entry = store(tmp_path / "se", "AOD.pool.root", b"a" * 10)
    entry["adler32"] = "00000001"
    job.heartbeat({"AOD.pool.root": entry})
    run_once(context(db, settings))
    row = job.row()
    assert row.state == "failed" and row.error_code == 1172
    assert "AOD.pool.root" in row.error_text and "no attempts left" in row.validation_note


def test_unreachable_storage_puts_the_job_off_then_gives_up(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1004)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = f"root://127.0.0.1:{port}//atlas/AOD.pool.root"
    job.heartbeat({"AOD.pool.root": {"surl": url, "fsize": 1, "adler32": "00000001"}})
    ctx = context(db, settings, retry_after=60)
    run_once(ctx)
    row = job.row()
    assert row.state == "tovalidate" and row.validation_deferrals == 1
    assert row.validate_after > utcnow() + timedelta(seconds=50)
    assert f"127.0.0.1:{port}" in row.validation_note
    assert run_once(ctx) is False and job.row().validation_deferrals == 1  # not due yet
    with db.read() as conn:
        known = {r["endpoint"]: r for r in storage_endpoints.rows(conn)}
    assert known[f"root://127.0.0.1:{port}"]["last_error"]

    # due again, and in tovalidate for longer than give_up_after: failed for good
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs)
            .where(panda_jobs.c.id == job.panda_job_id)
            .values(validate_after=None, state_changed_at=utcnow() - timedelta(days=3))
        )
    )
    run_once(ctx)
    row = job.row()
    assert row.state == "failed" and row.error_code == 1137
    assert "gave up" in job.report()["pilotErrorDiag"]


def test_an_endpoint_switched_down_is_not_contacted_and_its_jobs_wait(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1005)
    entry = store(tmp_path / "se", "AOD.pool.root", b"ok")
    job.heartbeat({"AOD.pool.root": entry})
    db.run(lambda c: storage_endpoints.switch(c, "file://", up=False, reason="SE down", by="op"))
    run_once(context(db, settings))
    row = job.row()
    assert row.state == "tovalidate" and "switched down" in row.validation_note
    db.run(lambda c: storage_endpoints.switch(c, "file://", up=True, reason="back", by="op"))
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs)
            .where(panda_jobs.c.id == job.panda_job_id)
            .values(validate_after=None)
        )
    )
    run_once(context(db, settings))
    assert job.row().state == "finished"


def test_a_truepilot_job_is_done_with_its_logs_published_and_no_report(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1006, queue="TRUE")
    (job.output_dir / "1006.log").write_text("truepilot stdout\n")
    run_once(context(db, settings))
    row = job.row()
    assert row.state == "done" and row.next_report_at is None and row.report is None
    out = tmp_path / "web" / "2026-11-20" / "TRUE" / "1006.out"
    assert out.read_text() == "truepilot stdout\n"


def test_a_failed_ce_job_takes_the_pilots_error_report(db: Database, tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1007, ce="donefailed")
    job.heartbeat(None, state="failed", pilotErrorCode=1305, pilotErrorDiag="payload crashed")
    run_once(context(db, settings))
    row = job.row()
    assert row.state == "failed" and row.error_code == 1305
    report = job.report()
    assert (report["pilotErrorCode"], report["pilotErrorDiag"]) == (1305, "payload crashed")
    assert "ERROR: boom" in report["pilotLog"]


def test_a_failed_ce_job_without_a_pilot_report_takes_the_ces_error(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1008, ce="donefailed")
    run_once(context(db, settings))
    row = job.row()
    assert row.state == "failed" and row.error_code == 9000
    assert "LRMS error: (1) job failed" in job.report()["pilotErrorDiag"]
    assert "exit code 1" in job.report()["pilotErrorDiag"]


@pytest.mark.parametrize(
    ("write", "words"),
    [
        (lambda d: None, ["no heartbeat.json"]),
        (lambda d: (d / "heartbeat.json").write_text("{not json"), ["heartbeat.json", "JSON"]),
        (lambda d: (d / "heartbeat.json").write_text("[1, 2]"), ["heartbeat.json"]),
        (
            lambda d: (d / "heartbeat.json").write_text(json.dumps({"state": "finished"})),
            ["no output report"],
        ),
        (
            lambda d: (d / "heartbeat.json").symlink_to("/etc/passwd"),
            ["heartbeat.json"],
        ),
    ],
)
def test_a_missing_or_unusable_pilot_report_fails_the_job_with_a_clear_diagnosis(
    db: Database, tmp_path: Path, write: Callable[[Path], Any], words: list[str]
) -> None:
    settings = make_settings(tmp_path)
    good = Job(db, tmp_path, 1010)
    good.heartbeat({"f": store(tmp_path / "se", "f", b"fine")})
    bad = Job(db, tmp_path, 1009)
    write(bad.output_dir)
    run_once(context(db, settings))
    assert good.row().state == "finished"  # one bad job does not stop the others
    row = bad.row()
    assert row.state == "failed" and row.error_code == 1187
    diag = bad.report()["pilotErrorDiag"]
    for word in words:
        assert word.lower() in diag.lower()


def test_each_decision_is_recorded_with_the_validator_as_actor(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1011)
    job.heartbeat({"f": store(tmp_path / "se", "f", b"x")})
    run_once(context(db, settings))
    with db.read() as conn:
        last = conn.execute(
            sa.select(history)
            .where(history.c.layer == "panda", history.c.job_id == job.panda_job_id)
            .order_by(history.c.id.desc())
            .limit(1)
        ).one()
    assert (last.from_state, last.to_state, last.actor) == ("tovalidate", "finished", "validator")


def test_heartbeat_less_jobs_get_the_final_report_as_job_report_json(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1012)
    access = tmp_path / "access" / "1012"
    access.mkdir(parents=True)
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs)
            .where(panda_jobs.c.id == job.panda_job_id)
            .values(heartbeat_less=True, access_point=str(access))
        )
    )
    outputs = {"f": store(tmp_path / "se", "f", b"data")}
    job.heartbeat(outputs)
    run_once(context(db, settings))
    propagate(daemon_context(db, settings, "propagator", options=PropagatorOptions()))
    assert job.row().state == "done"
    written = json.loads((access / "jobReport.json").read_text())
    assert written["state"] == "finished" and json.loads(written["xml"]) == outputs
    assert written["computingElement"] == "arc1"


@pytest.mark.slow
def test_a_validator_killed_after_publishing_decides_once_on_its_next_run(
    db: Database, db_url: URL, tmp_path: Path
) -> None:
    """A real act-daemon process dies between publishing the logs and committing its decision;
    the next run (after the dead one's lease) decides the job exactly once."""
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1013)
    job.heartbeat({"f": store(tmp_path / "se", "f", b"payload")})
    data = settings.model_dump(mode="json", include={"root", "weblogs", "storage", "queues"})
    config = write_config(
        tmp_path / "act.yaml",
        {**data, "db": {"url": url_text(db_url)}, "daemons": {"validator": {"lease": 1}}},
    )
    crashed = daemon_once("validator", config, tmp_path, fault=CRASH_POINT)
    assert crashed.returncode == EXIT_CODE, crashed.stderr
    assert job.row().state == "tovalidate"
    assert (tmp_path / "web" / "2026-11-20" / "NATIVE" / "1013.out").exists()
    time.sleep(1.2)  # the dead process's lease expires
    clean = daemon_once("validator", config, tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert job.row().state == "finished"
    with db.read() as conn:
        moves = conn.execute(
            sa.select(sa.func.count())
            .select_from(history)
            .where(history.c.job_id == job.panda_job_id, history.c.from_state == "tovalidate")
        ).scalar()
    assert moves == 1


def _tarball(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_failed_jobs_excerpt_comes_from_the_pilot_log_in_its_log_tarball(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1014, ce="donefailed")
    job.heartbeat(None, state="failed", pilotErrorCode=1305, pilotErrorDiag="payload crashed")
    log = b"pilot starting\nERROR: payload segfaulted at line 42\npilot ends\n"
    _tarball(job.output_dir / "1014.log.tgz", {"tarball_PandaJob_1014/pilotlog.txt": log})
    run_once(context(db, settings))
    excerpt = job.report()["pilotLog"]
    assert "pilotlog.txt" in excerpt and "segfaulted at line 42" in excerpt


def test_a_hostile_log_tarball_is_refused_and_the_job_still_ends(
    db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1015, ce="donefailed")
    job.heartbeat(None, state="failed", pilotErrorCode=1305, pilotErrorDiag="payload crashed")
    _tarball(job.output_dir / "1015.log.tgz", {"../../escaped.txt": b"owned", "ok.txt": b"x"})
    run_once(context(db, settings))
    assert job.row().state == "failed"
    assert not (tmp_path / "ce-jobs" / "escaped.txt").exists()
    assert not list(tmp_path.rglob("escaped.txt"))
    assert "ERROR: boom" in job.report()["pilotLog"]  # the excerpt falls back to the stdout
    assert any("log tarball not used" in r.getMessage() and "1015.log.tgz" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_the_transforms_exit_code_comes_from_job_report_json_and_a_bad_one_is_ignored(
    db: Database, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1016, ce="donefailed")
    job.heartbeat(None, state="failed", pilotErrorCode=1305, pilotErrorDiag="payload crashed")
    report = {"exitCode": 65, "exitMsg": "Non-zero return code from AODtoDAOD (8)"}
    (job.output_dir / "jobReport.json").write_text(json.dumps(report))
    other = Job(db, tmp_path, 1017, ce="donefailed")
    other.heartbeat(None, state="failed", pilotErrorCode=1305, pilotErrorDiag="payload crashed")
    (other.output_dir / "jobReport.json").write_text('{"exitCode": 1, "exitCode": 2}')
    run_once(context(db, settings))
    fields = job.report()
    assert (fields["exeErrorCode"], fields["exeErrorDiag"]) == (65, report["exitMsg"])
    assert other.row().state == "failed" and "exeErrorCode" not in other.report()


def test_an_unexpected_error_with_one_job_leaves_it_for_later_and_decides_the_others(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path)
    bad, good = Job(db, tmp_path, 1018), Job(db, tmp_path, 1019)
    for job in (bad, good):
        job.heartbeat({"f": store(tmp_path / "se" / str(job.panda_id), "f", b"x")})
    real = pilot_files.read_heartbeat

    def flaky(directory: Path, **kwargs: Any) -> Any:
        if directory == bad.output_dir:
            raise RuntimeError("a bug")
        return real(directory, **kwargs)

    monkeypatch.setattr(pilot_files, "read_heartbeat", flaky)
    run_once(context(db, settings))
    assert good.row().state == "finished"
    row = bad.row()
    assert row.state == "tovalidate" and row.lease_owner is None  # released, tried next cycle
    assert any(
        "validation failed unexpectedly" in r.getMessage() and "panda_id=1018" in r.getMessage()
        for r in caplog.records
    )


def test_a_meta_data_at_the_limit_is_stored_whole_on_every_database(
    db: Database, tmp_path: Path
) -> None:
    """The default max_meta_data (4 MiB as sent) fits act's own storage of the report on all three
    databases (MariaDB: MEDIUMTEXT, 16 MiB packets) with an output report beside it."""
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 1020)
    head = '{"exitCode": 0, "pad": "'
    meta = head + "x" * ((4 << 20) - len(head) - 200) + '"}'
    assert len(json.dumps(meta)) <= 4 << 20
    job.heartbeat({"f": store(tmp_path / "se", "f", b"x")}, metaData=meta)
    run_once(context(db, settings))
    assert job.row().state == "finished"
    assert job.report()["metaData"] == meta
