"""act's validator reads the reports the REAL pilot3 writes, written by pilot3's own functions
(:mod:`tests.support.pilot3_reports`): heartbeat.json (``get_data_structure`` +
``write_heartbeat_to_file``), output.list (the mv copytool's ``create_output_list``), the log
tarball (``create_log``) and jobReport.json in the pilot's job directory. Outputs are on local
storage (file://, checked for real); the CE's upload of output.list is a labelled test double.
The final report PanDA would get is asserted field by field, for both APIs. The real XRootD
case is in tests/test_validator_xrootd.py."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from act.atlas.pilot_times import panda_text
from act.atlas.update_fields import for_legacy_api, for_new_api
from act.atlas.validator import run_once
from act.common.db import Database
from tests.support.pilot3 import Pilot3
from tests.support.pilot3_reports import ce_uploads, pilot3_leaves, to_file_url
from tests.support.validating import Job, context, make_settings

OUTPUTS = {"EVNT.4301._000001.pool.root": 5000, "HIST.4301._000001.root": 700}
#: Fields of pilot3's final update that reach the report as the pilot wrote them.
PILOTS_OWN = (
    "coreCount", "meanCoreCount", "nEvents", "cpuConsumptionTime", "cpuConversionFactor",
    "cpuConsumptionUnit", "pilotID", "schedulerID", "siteName", "jobMetrics", "pilotTiming",
    "transExitCode", "pilotErrorCode", "pilotErrorDiag", "exeErrorCode", "exeErrorDiag",
    "timestamp", "node", "pilotLog",
)  # fmt: skip


def epoch_text(value: float) -> str:
    return panda_text(datetime.fromtimestamp(value, timezone.utc))


def test_a_finished_job_reported_by_pilot3_is_validated_and_its_report_complete(
    db: Database, tmp_path: Path, pilot3: Pilot3
) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 4301)
    se = (tmp_path / "se" / "mc23").as_uri()
    report_text = json.dumps({"exitCode": 0, "exitMsg": "OK", "files": {"output": []}})
    left = pilot3_leaves(
        pilot3, job.output_dir, 4301, se=se, outputs=OUTPUTS, job_report=report_text
    )
    heartbeat = left["heartbeat"]
    uploaded = ce_uploads(job.output_dir, to_file_url)
    assert sorted(uploaded) == sorted([*OUTPUTS, "4301.log.tgz"])
    # pilot3 left jobReport.json in its job directory, not at the top
    assert (job.output_dir / "PanDA_Pilot-4301" / "jobReport.json").read_text() == report_text
    assert not (job.output_dir / "jobReport.json").exists()

    run_once(context(db, settings))

    row = job.row()
    assert row.state == "finished", row.validation_note
    report = job.report()
    # the pilot's own values, as it wrote them
    for key in PILOTS_OWN:
        assert report[key] == heartbeat[key], key
    assert heartbeat["meanCoreCount"] == 7.5 and heartbeat["coreCount"] == 8
    # the output report and the whole jobReport, as the pilot wrote them
    assert json.loads(report["xml"]) == left["fileinfo"] == json.loads(heartbeat["xml"])
    assert report["metaData"] == heartbeat["metaData"] == report_text
    # pilot3's epoch floats, as PanDA's text form
    assert isinstance(heartbeat["startTime"], float) and isinstance(heartbeat["endTime"], float)
    assert report["startTime"] == epoch_text(heartbeat["startTime"])
    assert report["endTime"] == epoch_text(heartbeat["endTime"])
    # what act knows better
    assert report["computingElement"] == "arc1" and report["batchID"] == "arcid4301"
    assert "jobId" not in report and "state" not in report and "attemptNr" not in report

    # what each API gets of it (the propagator adds jobId, state, attemptNr)
    new = for_new_api(report)
    assert new.refused == [] and sorted(new.dropped) == ["computingElement", "timestamp"]
    body = new.values
    assert body["start_time"] == report["startTime"] and body["end_time"] == report["endTime"]
    assert body["mean_core_count"] == 8  # 1.0.4 annotates it int: 7.5 rounded half up
    assert body["core_count"] == 8 and body["n_events"] == 10
    assert body["cpu_consumption_time"] == 7000 and body["cpu_conversion_factor"] == 1.0
    assert body["meta_data"] == report_text and json.loads(body["job_output_report"])
    assert body["batch_id"] == "arcid4301" and body["node"] == heartbeat["node"]
    legacy = for_legacy_api(report)
    assert legacy.refused == [] and legacy.dropped == []
    assert legacy.values["computingElement"] == "arc1"
    assert legacy.values["meanCoreCount"] == "7.5" and legacy.values["timestamp"]
    assert legacy.values["startTime"] == report["startTime"]


def test_a_large_job_report_goes_whole_or_not_at_all(
    db: Database, tmp_path: Path, pilot3: Pilot3, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path)
    big = json.dumps({"exitCode": 0, "exitMsg": "OK", "resource": ["x" * 100] * 3000})
    assert len(big) > 300_000  # far over the 16,000 characters act used to cut it to

    def reported_by_pilot3(panda_id: int) -> Job:
        job = Job(db, tmp_path, panda_id)
        se = (tmp_path / "se" / str(panda_id)).as_uri()
        pilot3_leaves(pilot3, job.output_dir, panda_id, se=se, outputs={"A.root": 10},
                      job_report=big)  # fmt: skip
        ce_uploads(job.output_dir, to_file_url)
        return job

    whole = reported_by_pilot3(4302)
    run_once(context(db, settings))
    assert whole.row().state == "finished" and whole.row().validation_note is None
    assert whole.report()["metaData"] == big  # whole, valid JSON

    dropped = reported_by_pilot3(4303)
    caplog.set_level(logging.WARNING)
    run_once(context(db, settings, max_meta_data=100_000))
    row = dropped.row()
    assert row.state == "finished"
    report = dropped.report()
    assert "metaData" not in report
    assert report["jobMetrics"].split()[0] == f"actMetaDataDropped={len(json.dumps(big))}"
    assert "nEvents=10" in report["jobMetrics"].split()  # the pilot's own metrics kept
    assert "metaData not sent" in row.validation_note and "100000" in row.validation_note
    assert any("panda_id=4303" in r.getMessage() and "metaData not sent" in r.getMessage()
               for r in caplog.records)  # fmt: skip


def test_a_failed_payload_reported_by_pilot3_keeps_the_pilots_codes_and_log(
    db: Database, tmp_path: Path, pilot3: Pilot3
) -> None:
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 4304, ce="donefailed")
    se = (tmp_path / "se").as_uri()
    heartbeat = pilot3_leaves(
        pilot3, job.output_dir, 4304, se=se, outputs={"A.root": 10}, state="failed",
        job_report='{"exitCode": 65, "exitMsg": "Non-zero return code from EVNTtoHITS (8)"}',
        pilot_log="ERROR: payload segfaulted at line 42\n",
    )["heartbeat"]  # fmt: skip
    run_once(context(db, settings))
    row = job.row()
    assert row.state == "failed" and row.error_code == 1305
    report = job.report()
    assert report["pilotErrorCode"] == heartbeat["pilotErrorCode"] == 1305
    assert report["pilotErrorDiag"] == heartbeat["pilotErrorDiag"] == "Failed to execute payload"
    assert report["transExitCode"] == 65
    # the excerpt comes from pilotlog.txt inside pilot3's own log tarball
    assert "segfaulted at line 42" in report["pilotLog"]
    assert "pilotlog.txt" in report["pilotLog"]


@pytest.mark.parametrize("damage", ["unreported", "checksum"])
def test_output_list_and_the_output_report_must_agree(
    db: Database, tmp_path: Path, pilot3: Pilot3, damage: str
) -> None:
    """A pilot whose two lists of outputs disagree (a TEST-MADE inconsistency of pilot3's files:
    the real pilot writes both from the same file specs) fails, naming the file."""
    settings = make_settings(tmp_path)
    job = Job(db, tmp_path, 4305)
    se = (tmp_path / "se").as_uri()
    pilot3_leaves(pilot3, job.output_dir, 4305, se=se, outputs=OUTPUTS)
    ce_uploads(job.output_dir, to_file_url)
    path = job.output_dir / "heartbeat.json"
    heartbeat: dict[str, Any] = json.loads(path.read_text())
    xml = json.loads(heartbeat["xml"])
    lfn = "HIST.4301._000001.root"
    if damage == "unreported":
        del xml[lfn]
    else:
        xml[lfn]["adler32"] = "0badcafe"
    heartbeat["xml"] = json.dumps(xml)
    path.write_text(json.dumps(heartbeat))
    run_once(context(db, settings))
    row = job.row()
    assert row.state == "failed"
    assert row.error_code == (1187 if damage == "unreported" else 1172)
    diag = job.report()["pilotErrorDiag"]
    assert lfn in diag and "output.list" in diag
    if damage == "checksum":
        assert "0badcafe" in diag
