"""A CE job's outputs as the REAL pilot3 leaves them, written by pilot3's own code.

:func:`pilot3_leaves` runs, in pilot3's interpreter (:class:`tests.support.pilot3.Pilot3`), the
steps a native-mode pilot takes at the end of a job, each with the pilot's own function:

* the job built from its job definition by ``JobData`` (with pilot3's ``QueueData``), its job
  directory ``PanDA_Pilot-<PandaID>/`` below the launch directory, where the payload leaves its
  outputs and ``jobReport.json``;
* stage-out of the outputs with the ``mv`` copytool (``pilot.copytool.mv.copy_out``: the files
  move to the launch directory and ``create_output_list`` writes ``output.list``), checksums by
  ``calculate_checksum``;
* the log tarball by ``pilot.control.data.create_log`` and its stage-out, the output report by
  ``generate_fileinfo``;
* for a failed payload, the error code by ``errors.add_error_code``;
* the final update by ``get_data_structure`` (metaData from the user module's ``get_metadata``:
  the job directory's jobReport.json) written by ``write_heartbeat_to_file``.

pilot3's ATLAS clean-up before the log tarball (``remove_redundant_files``) is never run: it
deletes ``/work``, ``/cores`` and ``/panda_pilot*`` at the filesystem root (its list of
"redundant" paths joined to the job directory with ``os.path.join``, which an absolute path
wins), and as root it wiped this project's working tree. ``create_log`` is called with
``cleanup=False``, and the snippet replaces the clean-up functions with ones that raise.

The launch directory is the CE job's fetched output directory, as if the CE had run the pilot in
its session directory and act had fetched it. What the CE itself does in between - uploading the
files ``output.list`` names - is :func:`ce_uploads`, a TEST DOUBLE of ARC's data staging that
copies each file to where the URL points (a ``file://`` path, or the test XRootD server's export
directory), checked against what the real pilot listed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from act.atlas import pilot_files
from tests.support.pilot3 import Pilot3

SNIPPET = r"""
import json, os, time, types
os.environ.update(PILOT_USER="atlas", PILOT_SITENAME=ARG["queue"], PANDA_JSID="act",
                  GTAG=ARG["gtag"], PILOT_VERSION="3.7.0.36")
import pilot.user.atlas.common as atlas_common

def _never(*args, **kwargs):  # pilot3's ATLAS cleanup deletes /work at the filesystem root
    raise RuntimeError("pilot3's ATLAS cleanup must never run in act's tests")

atlas_common.remove_redundant_files = atlas_common.remove_special_files = _never
from pilot.common.errorcodes import ErrorCodes
from pilot.control.data import create_log, generate_fileinfo
from pilot.control.job import get_data_structure, write_heartbeat_to_file
from pilot.copytool import mv
from pilot.info.jobdata import JobData
from pilot.info.queuedata import QueueData
from pilot.user.atlas.common import get_metadata
from pilot.util import constants
from pilot.util.filehandling import calculate_checksum
from pilot.util.timing import add_to_pilot_timing

home = os.environ["PILOT_HOME"]
queuedata = QueueData({"nickname": ARG["queue"], "catchall": "", "corecount": 8,
                       "maxwdir": 20000, "maxrss": 16000,
                       "acopytools": {"pw": ["mv"], "pl": ["mv"]}})
job = JobData(ARG["spec"])
job.init(types.SimpleNamespace(queuedata=queuedata, pandaqueue=ARG["queue"]))
args = types.SimpleNamespace(timing={}, version_tag="PR", queue=ARG["queue"], pod=False,
                             workflow="generic")
now = time.time()
add_to_pilot_timing(job.jobid, constants.PILOT_START_TIME, now - ARG["ran"] - 30, args)
add_to_pilot_timing(job.jobid, constants.PILOT_POST_GETJOB, now - ARG["ran"], args)
job.workdir = os.path.join(home, f"PanDA_Pilot-{job.jobid}")
os.mkdir(job.workdir)
with open(os.path.join(job.workdir, "pilotlog.txt"), "w") as log:
    log.write("pilot3 starting\n" + ARG["pilot_log"])
if ARG["job_report"] is not None:
    with open(os.path.join(job.workdir, "jobReport.json"), "w") as report:
        report.write(ARG["job_report"])

def produced(fspec, size):
    path = os.path.join(job.workdir, fspec.lfn)
    with open(path, "wb") as f:
        f.write(bytes([65 + len(fspec.lfn) % 26]) * size)
    fspec.filesize = os.path.getsize(path)
    fspec.checksum = {"adler32": calculate_checksum(path, algorithm="adler32")}
    fspec.turl = ARG["se"].rstrip("/") + "/" + fspec.lfn
    if not fspec.guid:
        fspec.guid = ARG["guids"][fspec.lfn]

add_to_pilot_timing(job.jobid, constants.PILOT_PRE_STAGEOUT, time.time(), args)
if ARG["state"] == "finished":
    for fspec in job.outdata:
        produced(fspec, ARG["sizes"][fspec.lfn])
    mv.copy_out(job.outdata, copy_type="mv", workdir=job.workdir)
create_log(job.workdir, job.logdata[0].lfn, f"tarball_PandaJob_{job.jobid}_{ARG['queue']}",
           False, output_files=[f.lfn for f in job.outdata])
logfile = job.logdata[0]
path = os.path.join(job.workdir, logfile.lfn)
logfile.filesize = os.path.getsize(path)
logfile.checksum = {"adler32": calculate_checksum(path, algorithm="adler32")}
logfile.turl = ARG["se"].rstrip("/") + "/" + logfile.lfn
mv.copy_out([logfile], copy_type="mv", workdir=job.workdir)
add_to_pilot_timing(job.jobid, constants.PILOT_POST_STAGEOUT, time.time(), args)
job.fileinfo = generate_fileinfo(job)
job.state = ARG["state"]
job.transexitcode = ARG["trans_exit_code"]
job.cpuconsumptiontime = ARG["cpu"]
job.cpuconversionfactor = 1.0
job.corecounts = [8, 7]
job.nevents = 10
if ARG["state"] == "failed":
    job.piloterrorcodes, job.piloterrordiags = ErrorCodes().add_error_code(
        ErrorCodes.PAYLOADEXECUTIONFAILURE)
data = get_data_structure(job, ARG["state"], args, xml=json.dumps(job.fileinfo),
                          metadata=get_metadata(job.workdir))
assert write_heartbeat_to_file(data)
RESULT = {"heartbeat": data, "fileinfo": job.fileinfo}
"""


def job_spec(panda_id: int, outputs: Mapping[str, int], *, queue: str) -> dict[str, str]:
    """A legacy getJob job definition (what pilot3 reads) with ``outputs`` and a log file."""
    lfns = [*outputs, f"{panda_id}.log.tgz"]
    return {
        "PandaID": str(panda_id),
        "jobsetID": "7",
        "taskID": "4242",
        "attemptNr": "1",
        "transformation": "Sim_tf.py",
        "jobPars": "--maxEvents 10",
        "coreCount": "8",
        "prodSourceLabel": "managed",
        "outFiles": ",".join(lfns),
        "scopeOut": ",".join("mc23_13p6TeV" for _ in outputs),
        "scopeLog": "mc23_13p6TeV",
        "logFile": f"{panda_id}.log.tgz",
        "logGUID": "0c1d2e3f-0000-4000-8000-00000000000a",
        "realDatasets": ",".join(f"mc23.ds{i}" for i in range(len(lfns))),
        "destinationDblock": ",".join(f"mc23.ds{i}_sub" for i in range(len(lfns))),
        "ddmEndPointOut": ",".join("ACT_TEST_DATADISK" for _ in lfns),
        "maxCpuCount": "3600",
        "maxWalltime": "3600",
        "computingSite": queue,
        "inFiles": "",
    }


def pilot3_leaves(
    pilot3: Pilot3,
    launch_dir: Path,
    panda_id: int,
    *,
    se: str,
    outputs: Mapping[str, int],
    queue: str = "NATIVE",
    state: str = "finished",
    job_report: str | None = '{"exitCode": 0, "exitMsg": "OK"}',
    pilot_log: str = "",
    ran: float = 3600.0,
    cpu: int = 7000,
) -> dict[str, Any]:
    """Run pilot3's end-of-job steps with ``launch_dir`` as its launch directory (see the module
    docstring); returns ``{"heartbeat": <the final update>, "fileinfo": <its output report>}``.
    ``se`` is the storage URL the outputs' TURLs start with; ``outputs`` maps an lfn to the
    size of the file the payload writes (none are written for a failed payload)."""
    guids = {lfn: f"{index:08x}-2222-4333-8444-555555555555" for index, lfn in enumerate(outputs)}
    arg = {
        "spec": job_spec(panda_id, outputs, queue=queue),
        "queue": queue,
        "gtag": f"https://logs.example.org/act/2026-11-20/{queue}/{panda_id}.out",
        "se": se,
        "sizes": dict(outputs),
        "guids": guids,
        "state": state,
        "job_report": job_report,
        "pilot_log": pilot_log,
        "ran": ran,
        "cpu": cpu,
        "trans_exit_code": 0 if state == "finished" else 65,
    }
    result: dict[str, Any] = pilot3.call(SNIPPET, arg, cwd=launch_dir)
    return result


def ce_uploads(launch_dir: Path, place: Callable[[str, bytes], None]) -> list[str]:
    """TEST DOUBLE of the ARC CE's upload of ``output.list`` (``@output.list``): each listed
    file of the launch directory is handed to ``place(url, content)``; returns the lfns."""
    listed = pilot_files.read_output_list(launch_dir)
    assert listed, "pilot3 wrote no output.list"
    for entry in listed:
        place(entry.url, (launch_dir / entry.lfn).read_bytes())
    return [entry.lfn for entry in listed]


def to_file_url(url: str, content: bytes) -> None:
    """``place`` for ``file://`` URLs: the file written at the URL's path."""
    path = Path(urlsplit(url).path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
