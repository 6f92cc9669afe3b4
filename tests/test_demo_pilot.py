"""The demo pilot (act/demo/pilot.py, a TEST DOUBLE of pilot3) held against pilot3's own reader
and writers: it reads act's job file as ``get_job_definition_from_file`` does, and what it leaves
(``heartbeat.json``, ``output.list``, ``PanDA_Pilot-<PandaID>/jobReport.json``, the log tarball)
is what pilot3's ``get_data_structure``/``write_heartbeat_to_file``, ``generate_fileinfo``,
``create_output_list``, ``get_metadata`` and ``create_log`` make for the same job and files."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any

import pytest

from act.atlas.translate import to_xrsl
from act.atlas.translate.common import JOB_SPEC_FILE, plan
from act.demo import pilot
from tests.support.pilot3 import Pilot3, is_harvester_mode
from tests.support.translate_cases import ARC_CE, cases

QUEUE = "DEMO_QUEUE"
CASES = {case.name: case for case in cases()}

#: Runs in pilot3's interpreter, in its own launch directory: the job file read by pilot3's
#: reader, its files marked transferred as the demo reports them, then pilot3's own writers.
_PILOT3_WRITES = """
import argparse, glob, logging, shutil, tarfile, time
from types import SimpleNamespace
logging.basicConfig(level=logging.ERROR)
from pilot.control.data import create_log, generate_fileinfo
from pilot.control.job import (
    get_data_structure, get_job_definition_from_file, write_heartbeat_to_file,
)
from pilot.copytool.mv import create_output_list
from pilot.common.errorcodes import ErrorCodes
from pilot.info.jobdata import JobData
from pilot.info.queuedata import QueueData
from pilot.user.atlas.common import get_metadata
from pilot.util import constants
from pilot.util.timing import add_to_pilot_timing

home = os.environ["PILOT_HOME"]
demo = ARG["workdir"]
shutil.copy(os.path.join(demo, "pandaJobData.out"), home)  # the reader deletes its file
raw = get_job_definition_from_file(os.path.join(home, "pandaJobData.out"), ARG["harvester"], False)
job = JobData(dict(raw))
job.init(None)
job.infosys = SimpleNamespace(queuedata=QueueData({"name": ARG["queue"]}), pandaqueue=ARG["queue"])
args = argparse.Namespace(version_tag="PR", timing={}, harvester=False, update_server=False)
start = time.time()
steps = ["PILOT_START_TIME", "PILOT_PRE_GETJOB", "PILOT_POST_GETJOB", "PILOT_PRE_SETUP",
         "PILOT_POST_SETUP", "PILOT_PRE_STAGEIN", "PILOT_POST_STAGEIN", "PILOT_PRE_PAYLOAD",
         "PILOT_POST_PAYLOAD", "PILOT_PRE_STAGEOUT", "PILOT_POST_STAGEOUT"]
for index, step in enumerate(steps):
    add_to_pilot_timing("0" if index < 2 else job.jobid, getattr(constants, step), start, args)

# the job directory as the demo left it, and the pilot log the pilot links into it
job.workdir = os.path.join(home, f"PanDA_Pilot-{job.jobid}")
shutil.copytree(os.path.join(demo, f"PanDA_Pilot-{job.jobid}"), job.workdir)
with open(os.path.join(home, "pilotlog.txt"), "w") as log:
    log.write("pilot3's log\\n")
os.symlink("../pilotlog.txt", os.path.join(job.workdir, "pilotlog.txt"))

report = json.load(open(os.path.join(demo, "heartbeat.json")))
done = json.loads(report["xml"])
transferred = []
for spec in job.outdata + job.logdata:
    if spec.lfn in done:
        spec.status, spec.guid = "transferred", done[spec.lfn]["guid"]
        spec.filesize, spec.turl = done[spec.lfn]["fsize"], done[spec.lfn]["surl"]
        spec.checksum = {"adler32": done[spec.lfn]["adler32"]}
        transferred.append(spec)
job.fileinfo = generate_fileinfo(job)
create_output_list(transferred, home)
job.cpuconsumptiontime, job.cpuconsumptionunit, job.cpuconversionfactor = 1, "s", 1.0
job.state = report["state"]
if job.state == "failed":
    errors = ErrorCodes()
    job.piloterrorcodes, job.piloterrordiags = errors.add_error_code(
        errors.PAYLOADEXECUTIONFAILURE, msg="payload failed"
    )
    job.transexitcode = job.exeerrorcode = 65
metadata = get_metadata(job.workdir)
data = get_data_structure(job, job.state, args, xml=json.dumps(job.fileinfo), metadata=metadata,
                          final=True)
write_heartbeat_to_file(data)

log_lfn = job.logdata[0].lfn
create_log(job.workdir, log_lfn, f"tarball_PandaJob_{job.jobid}_{ARG['queue']}", False)
with tarfile.open(os.path.join(home, log_lfn)) as tar:
    members = sorted((m.name, m.isdir()) for m in tar.getmembers())
RESULT = {
    "raw": raw,
    "heartbeat": json.load(open(os.path.join(home, "heartbeat.json"))),
    "fileinfo": job.fileinfo,
    "output_list": open(os.path.join(home, "output.list")).read(),
    "metadata": metadata,
    "log_members": members,
}
"""


def _run_demo(
    tmp_path: Path, case: str, *, fail: bool, harvester: bool = False
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """The demo pilot on the job file act ships for ``case``; (its workdir, what it read, the
    heartbeat it returned)."""
    job = CASES[case].job
    work = tmp_path / case
    work.mkdir()
    translation = to_xrsl(job, ARC_CE, input_dir=Path("/act/input"))
    (work / JOB_SPEC_FILE).write_bytes(translation.files[JOB_SPEC_FILE])
    read = pilot.read_job(work / JOB_SPEC_FILE, harvester=harvester)
    heartbeat = pilot.run(
        work, tmp_path / "storage", sleep=(0, 0), fail_fraction=1.0 if fail else 0.0,
        out=io.StringIO(), queue=QUEUE, harvester=harvester,
    )  # fmt: skip
    return work, read, heartbeat


def _members(tarball: Path) -> list[tuple[str, bool]]:
    with tarfile.open(tarball) as tar:
        return sorted((m.name, m.isdir()) for m in tar.getmembers())


@pytest.mark.parametrize(
    ("case", "fail", "harvester"),
    [
        ("api_v1_multi_input", False, False),  # an /api/v1 job: the legacy form
        ("prod_mcore_native", False, False),  # a legacy reply as stored
        ("prod_score_native", True, False),  # a payload failing on purpose
        ("analysis_truepilot", False, True),  # Harvester mode: {PandaID: job}
    ],
)
def test_the_demo_pilot_reads_and_writes_what_pilot3_does(
    tmp_path: Path, pilot3: Pilot3, case: str, fail: bool, harvester: bool
) -> None:
    assert plan(CASES[case].job).harvester is harvester
    work, read, heartbeat = _run_demo(tmp_path, case, fail=fail, harvester=harvester)
    found = pilot3.call(
        _PILOT3_WRITES,
        {"workdir": str(work), "queue": QUEUE, "harvester": harvester},
        env={"PILOT_USER": "ATLAS", "GTAG": "https://act.example.org/x.out", "PANDA_JSID": "act",
             "PILOT_SITENAME": QUEUE},
    )  # fmt: skip
    # the job file: read as pilot3's reader reads it
    assert read == found["raw"]
    # heartbeat.json: pilot3's keys, with pilot3's types
    written = json.loads((work / pilot.HEARTBEAT).read_text())
    assert written == json.loads(json.dumps(heartbeat))
    theirs = found["heartbeat"]
    assert sorted(written) == sorted(theirs)
    assert {k: type(v).__name__ for k, v in written.items()} == {
        k: type(v).__name__ for k, v in theirs.items()
    }
    for key in ("jobId", "state", "attemptNr", "coreCount", "pilotErrorCode", "siteName"):
        assert written[key] == theirs[key], key
    assert isinstance(written["startTime"], float) and written["startTime"] <= written["endTime"]
    # xml: pilot3's generate_fileinfo for the same transferred files; metaData: its get_metadata
    assert json.loads(written["xml"]) == found["fileinfo"] == json.loads(theirs["xml"])
    assert written["metaData"] == found["metadata"] == theirs["metaData"]
    job_report = work / f"PanDA_Pilot-{read['PandaID']}" / pilot.JOB_REPORT
    assert json.loads(job_report.read_text())["exitCode"] == (65 if fail else 0)
    # output.list: pilot3's mv copytool's lines, same order
    assert (work / pilot.OUTPUT_LIST).read_text() == found["output_list"]
    # the log tarball: create_log's layout
    log_file = read["logFile"]
    assert _members(work / log_file) == [tuple(m) for m in found["log_members"]]
    assert f"tarball_PandaJob_{read['PandaID']}_{QUEUE}/pilotlog.txt" in {
        name for name, _ in _members(work / log_file)
    }
    if fail:
        assert (written["state"], written["pilotErrorCode"]) == ("failed", pilot.FAILED_CODE)
        assert list(json.loads(written["xml"])) == [log_file]


def test_the_demo_pilot_enters_harvester_mode_as_pilot3_does(pilot3: Pilot3) -> None:
    runs: list[tuple[list[str], dict[str, str]]] = []
    for mode in ("PUSH", "push", "PULL"):
        for environment in ({}, {"HARVESTER_ID": "h"}, {"HARVESTER_WORKER_ID": "7"}):
            arguments = ["-q", QUEUE, "--pilot-user", "ATLAS", "--harvester-submit-mode", mode]
            runs.append((arguments, environment))
    theirs = is_harvester_mode(pilot3, runs)
    mine = [pilot.harvester_mode(arguments[-1], environment) for arguments, environment in runs]
    assert mine == theirs and True in mine and False in mine


def test_harvester_mode_reaches_the_demo_pilot_through_main(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = CASES["analysis_truepilot"].job
    work = tmp_path / "w"
    work.mkdir()
    (work / JOB_SPEC_FILE).write_bytes(to_xrsl(job, ARC_CE, input_dir=work).files[JOB_SPEC_FILE])
    monkeypatch.chdir(work)
    monkeypatch.setenv("HARVESTER_ID", "h1")
    arguments = [*plan(job).arguments, "--storage-dir", str(tmp_path / "s"), "--sleep", "0"]
    assert pilot.main(arguments) == 0
    heartbeat = json.loads((work / pilot.HEARTBEAT).read_text())
    assert heartbeat["jobId"] == str(job.panda_id) and heartbeat["siteName"] == job.queue.name
    monkeypatch.delenv("HARVESTER_ID")
    shutil.rmtree(work / f"PanDA_Pilot-{job.panda_id}")
    with pytest.raises(KeyError):  # the JSON file read as a form: no PandaID, as in pilot3
        pilot.main(arguments)
