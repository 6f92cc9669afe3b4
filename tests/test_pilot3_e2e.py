"""One job fully real, end to end: the real PanDA server, act on MariaDB or PostgreSQL, the real
ARC CE (or act's local CE), the real pilot (pilot3, PyPI panda-pilot) as the payload, and the
real XRootD storage element.

act fetches the job from PanDA, submits it, and the CE runs the pilot through a stand-in for
runpilot2-wrapper.sh (the real one needs CVMFS/ALRB; tests/support/pilot3_worker.py makes the
worker node: the pilot tarball, the wrapper, the CRIC queue and storage stand-ins pilot3 reads,
a stand-in ATLAS software area with the test's transformation). The pilot reads act's job file,
runs the transformation, and leaves its reports:

* native (the queue's copytool is ``mv``: ``-z -t``, no server updates): the pilot moves its
  outputs beside itself and names them in ``output.list``; the CE uploads them to the real XRootD
  server (A-REX's data staging with ARC's xrootd DMC; act's local CE likewise,
  act.local.stageout); act checks them on storage and sends the final heartbeat; PanDA's own
  Adder then finishes the job. The job must end ``finished`` in PanDA's tables with the pilot's
  times, codes and files, and a failing payload ``failed`` with the pilot's codes;
* truepilot: the pilot copies its outputs to storage itself (its ``xrdcp`` copytool) and reports
  to PanDA itself. pilot3 3.7.0.36, the newest on PyPI, reports through the legacy
  ``/server/panda/updateJob``, which panda-server 1.0.4 no longer serves (403, "method updateJob
  is forbidden": updateJob is not in pandaserver/srvcore/allowed_methods.py); pilot3's GitHub
  master (3.11) speaks ``/api/v1/pilot/update_job`` but is not on PyPI and GitHub is not
  reachable here. The truepilot test therefore holds what does happen: the outputs on storage
  from the pilot's own copytool, and every pilot report refused by the server.

How long the real pilot takes (printed by each test; 2-core machine, December 2026, pilot3
3.7.0.36): a successful job's final heartbeat 3-12 s after the pilot starts, the pilot process
ending ~25 s later (its threads wind down on fixed 1-10 s loops); a failing payload's final
heartbeat ~2 min after the start: pilot3 waits ``2 * 60 - 5`` s for the stage-out of a failed
job (``wait_for_aborted_job_stageout`` in pilot/control/job.py, hard-coded), then ~25 s more.
pilot3's own waits made short through its configuration (tests/support/pilot3_worker.py:
SHORT_WAITS): no memory monitor (60 s of naps otherwise), 2 s between server update attempts
(120 s). Options of the pilot's own used: ``--storagedata-url`` (the storage stand-in) and
``--use-rucio-traces false`` (no traces to CERN's Rucio).

What the tests rest on in act besides the CE upload: the job file in the URL-encoded form
pilot3 reads (without it pilot3 finds no PandaID and never runs the job) and the pilot's epoch
times and reports read where pilot3 leaves them (without it PanDA gets the CE's times).
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from act.common.schema import ce_jobs
from tests.support.arc_real import RealArc, arc_ce
from tests.support.bridge import panda_settings
from tests.support.panda_real import PandaServer
from tests.support.pilot3 import Pilot3
from tests.support.pilot3_worker import (
    PILOT_USER,
    TRANSFORMATION,
    Worker,
    cric_entry,
    timing,
    worker_node,
)
from tests.support.procs import wait_for
from tests.support.xrootd_real import XRootDServer

__all__ = ["arc_ce"]  # the session fixture, imported for pytest
pytestmark = [
    pytest.mark.panda,
    pytest.mark.storage,
    pytest.mark.slow,
    pytest.mark.timeout(600),  # a failing payload's pilot alone takes ~2.5 minutes
]

LOCAL_CE = "local1"
#: The longest a job may take from PanDA to act's final report: the pilot's ~2.5 minutes for a
#: failing payload, plus the CE's and act's own rounds.
DEADLINE = 400.0


@dataclass
class Outcome:
    """One job's way through, as the test saw it."""

    panda_id: int
    state: str  # act's final PanDA-layer state
    panda_status: str  # PanDA's, after its Adder
    heartbeat: dict[str, Any]  # the pilot's heartbeat.json (native), {} if none came back
    output_dir: Path
    seconds: float  # PanDA job handed out -> act's final state
    pilot: dict[str, float]  # the wrapper's timing lines


@pytest.fixture
def se_area(xrootd_server: XRootDServer) -> Iterator[str]:
    """A URL path of the test's own on the SE (the outputs' deterministic paths go below it)."""
    area = f"/act-e2e/{secrets.token_hex(4)}"
    yield area
    target = xrootd_server.local(area)
    if target.exists():
        for path in sorted(target.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        target.rmdir()


def _queue_config(
    tmp_path: Path,
    panda_server: PandaServer,
    queue: str,
    worker: Worker,
    *,
    ces: dict[str, Any],
    wrapper: str,
    tarball: str,
) -> dict[str, Any]:
    """act's configuration: the queue from its CRIC document (the worker's, which pilot3 reads
    too), the CE(s), the stand-in wrapper and the pilot tarball."""
    return {
        "root": str(tmp_path / "root"),
        "panda": panda_settings(panda_server).model_dump(mode="json", exclude_defaults=True),
        "queues": {
            "cric_file": str(worker.cric_queues),
            "serve": {
                queue: {
                    "pilot_wrapper": wrapper,
                    "pilot_tarball": tarball,
                    "pilot_args": worker.pilot_args(),
                    "panda_server": panda_server.url.removeprefix("https://"),
                    "jobs_per_cycle": 5,
                }
            },
        },
        "engine": {
            "ces": ces,
            "poll": {"submitted": 0.5, "running": 0.5, "finishing": 0.5, "cancelling": 0.5},
        },
    }


def _local_ces(worker: Worker) -> dict[str, Any]:
    """act's local CE, its jobs under the worker directory: the wrapper stand-in runs the pilot
    as an unprivileged user, who must reach the job's directory."""
    options = {"slots": 2, "workdir": str(worker.root / "local-ce")}
    return {LOCAL_CE: {"backend": "local", "options": options, "min_spacing": 0}}


def _arc_ces(arc: RealArc) -> dict[str, Any]:
    return {
        "arc1": {
            "backend": "arc",
            "url": arc.url,
            "queue": "fork",
            "credential": arc.proxy,
            "ca": arc.ca_dir,
            "min_spacing": 0,
        }
    }


def _add_job(panda_server: PandaServer, queue: str, *, exit_code: int = 0) -> int:
    """A job as JEDI would define it, running the test's transformation on one output."""
    (panda_id,) = panda_server.add_jobs(queue, transformation=TRANSFORMATION)
    parameters = f"--out act.test.out.{panda_id}.root"
    if exit_code:
        parameters += f" --exit {exit_code}"
    panda_server.set_parameters(panda_id, parameters)
    return panda_id


def _run(bridge: Any, panda_id: int) -> tuple[str, float]:
    """act's daemons round by round until the job's final report is accepted."""
    started = time.monotonic()
    bridge.run("panda_fetcher", "propagator", "translator", "submitter")

    def over() -> bool:
        bridge.follow_ce()
        bridge.run("propagator")
        return bool(bridge.job(panda_id).state in ("done", "donefailed", "donecancelled"))

    wait_for(over, DEADLINE, f"PanDA job {panda_id} through act")
    return str(bridge.job(panda_id).state), time.monotonic() - started


def _outcome(
    bridge: Any, panda_server: PandaServer, worker: Worker, panda_id: int, *, adder: bool
) -> Outcome:
    state, seconds = _run(bridge, panda_id)
    with bridge.db.read() as conn:
        ce = conn.execute(sa.select(ce_jobs).where(ce_jobs.c.panda_id == panda_id)).one()
    output_dir = Path(ce.output_dir)
    heartbeat_file = output_dir / "heartbeat.json"
    heartbeat = json.loads(heartbeat_file.read_text()) if heartbeat_file.exists() else {}
    if adder:
        panda_status = panda_server.run_adder([panda_id])[panda_id]
    else:
        found = panda_server.job(panda_id)
        panda_status = found.status if found else "absent"
    outcome = Outcome(panda_id, state, panda_status, heartbeat, output_dir, seconds, timing(worker))
    _print_timing(outcome)
    return outcome


def _print_timing(outcome: Outcome) -> None:
    pilot = outcome.pilot
    parts = [f"panda_id={outcome.panda_id} act: {outcome.seconds:.1f} s to {outcome.state}"]
    if "pilot start" in pilot and "pilot end" in pilot:
        parts.append(f"pilot process {pilot['pilot end'] - pilot['pilot start']:.1f} s")
    if "pilot start" in pilot and "heartbeat written" in pilot:
        parts.append(
            f"final heartbeat at {pilot['heartbeat written'] - pilot['pilot start']:.1f} s"
        )
    if outcome.heartbeat.get("pilotTiming"):
        names = ("getjob", "stagein", "payload", "stageout", "initial setup", "setup")
        values = str(outcome.heartbeat["pilotTiming"]).split("|")
        parts.append(
            "pilot's own timing: "
            + ", ".join(f"{n} {v} s" for n, v in zip(names, values, strict=False))
        )
    print("pilot3 timing: " + "; ".join(parts))


def _utc(epoch: Any) -> datetime:
    return datetime.fromtimestamp(float(epoch), timezone.utc).replace(tzinfo=None, microsecond=0)


#: heartbeat.json field -> PanDA column: what the pilot reports that PanDA keeps as it is.
PILOT_COLUMNS = {
    "state": "jobstatus",
    "pilotErrorCode": "piloterrorcode",
    "exeErrorCode": "exeerrorcode",
    "exeErrorDiag": "exeerrordiag",
    "nEvents": "nevents",
    "jobMetrics": "jobmetrics",
    "pilotTiming": "pilottiming",
    "pilotID": "pilotid",
    "cpuConsumptionUnit": "cpuconsumptionunit",
}


def _assert_pilots_report_in_panda(panda_server: PandaServer, outcome: Outcome) -> None:
    """PanDA's row holds what the pilot reported: its codes, times, events, timing."""
    beat = outcome.heartbeat
    present = {field: column for field, column in PILOT_COLUMNS.items() if field in beat}
    assert {"state", "pilotErrorCode", "exeErrorCode"} <= set(present), sorted(beat)
    row = panda_server.columns(
        outcome.panda_id, "transexitcode", "starttime", "endtime", *present.values()
    )
    assert {field: row[column] for field, column in present.items()} == {
        field: None if beat[field] == "" else beat[field]
        for field in present  # '': NULL
    }
    assert str(row["transexitcode"]) == str(beat["transExitCode"])
    # the pilot's own times (epoch floats in its heartbeat), not the CE's
    assert (row["starttime"], row["endtime"]) == (_utc(beat["startTime"]), _utc(beat["endTime"]))


def _assert_files(panda_server: PandaServer, se: XRootDServer, outcome: Outcome) -> None:
    """Every file the pilot reported is on the SE as reported, and PanDA's file table has it."""
    reported = json.loads(outcome.heartbeat["xml"])
    files = {f["lfn"]: f for f in panda_server.files(outcome.panda_id)}
    for lfn, report in reported.items():
        path = report["surl"].split("//", 2)[2]
        size, adler32 = se.local(path).stat().st_size, _adler32(se.local(path))
        assert (size, adler32) == (report["fsize"], report["adler32"]), lfn
        assert files[lfn]["guid"] == report["guid"], lfn
        assert files[lfn]["fsize"] == report["fsize"], lfn
        assert files[lfn]["checksum"] == f"ad:{report['adler32']}", lfn


def _adler32(path: Path) -> str:
    from act.atlas.storage.model import adler32_of_file

    return adler32_of_file(path)


# -- native: the CE uploads what the pilot's output.list names ---------------------------------


@pytest.mark.arc
@pytest.mark.parametrize("backend", ["postgresql"])
def test_a_native_job_on_the_arc_ce_ends_finished_in_panda_with_the_pilots_report(
    bridge_for: Any,
    panda_server: PandaServer,
    arc_ce: RealArc,
    xrootd_server: XRootDServer,
    pilot3: Pilot3,
    se_area: str,
    tmp_path: Path,
) -> None:
    queue = panda_server.add_queue()
    with worker_node(pilot3, root_url=xrootd_server.root_url, se_path=se_area) as worker:
        worker.write_cric(
            {queue: cric_entry(queue, worker, ce_endpoint=arc_ce.url, ce_queue="fork")}
        )
        # A-REX downloads the wrapper and the pilot tarball as a site's CE does (from the SE's
        # http door here, from CERN's web server in production)
        shipped = {}
        for name, path in (("wrapper", worker.wrapper), ("tarball", worker.tarball)):
            where = f"{se_area}/worker/{path.name}"
            xrootd_server.write(where, path.read_bytes())
            shipped[name] = xrootd_server.http(where)
        config = _queue_config(
            tmp_path, panda_server, queue, worker, ces=_arc_ces(arc_ce), **shipped
        )
        panda_id = _add_job(panda_server, queue)
        outcome = _outcome(bridge_for(config), panda_server, worker, panda_id, adder=True)
    assert outcome.heartbeat, (
        f"no heartbeat.json came back: {sorted(p.name for p in outcome.output_dir.iterdir())}"
    )
    assert outcome.heartbeat["state"] == "finished", outcome.heartbeat
    assert (outcome.state, outcome.panda_status) == ("done", "finished")
    _assert_pilots_report_in_panda(panda_server, outcome)
    _assert_files(panda_server, xrootd_server, outcome)


@pytest.mark.parametrize("backend", ["mariadb"])
def test_a_native_job_on_the_local_ce_ends_finished_in_panda_with_the_pilots_report(
    bridge_for: Any,
    panda_server: PandaServer,
    xrootd_server: XRootDServer,
    pilot3: Pilot3,
    se_area: str,
    tmp_path: Path,
) -> None:
    queue = panda_server.add_queue()
    with worker_node(pilot3, root_url=xrootd_server.root_url, se_path=se_area) as worker:
        worker.write_cric({queue: cric_entry(queue, worker, ce_endpoint=LOCAL_CE)})
        config = _queue_config(
            tmp_path,
            panda_server,
            queue,
            worker,
            ces=_local_ces(worker),
            wrapper=str(worker.wrapper),
            tarball=str(worker.tarball),
        )
        panda_id = _add_job(panda_server, queue)
        outcome = _outcome(bridge_for(config), panda_server, worker, panda_id, adder=True)
    assert outcome.heartbeat, (
        f"no heartbeat.json came back: {sorted(p.name for p in outcome.output_dir.iterdir())}"
    )
    assert outcome.heartbeat["state"] == "finished", outcome.heartbeat
    assert (outcome.state, outcome.panda_status) == ("done", "finished")
    _assert_pilots_report_in_panda(panda_server, outcome)
    _assert_files(panda_server, xrootd_server, outcome)


@pytest.mark.parametrize("backend", ["mariadb"])
def test_a_failing_payload_ends_failed_in_panda_with_the_pilots_codes(
    bridge_for: Any,
    panda_server: PandaServer,
    xrootd_server: XRootDServer,
    pilot3: Pilot3,
    se_area: str,
    tmp_path: Path,
) -> None:
    queue = panda_server.add_queue()
    with worker_node(pilot3, root_url=xrootd_server.root_url, se_path=se_area) as worker:
        worker.write_cric({queue: cric_entry(queue, worker, ce_endpoint=LOCAL_CE)})
        config = _queue_config(
            tmp_path,
            panda_server,
            queue,
            worker,
            ces=_local_ces(worker),
            wrapper=str(worker.wrapper),
            tarball=str(worker.tarball),
        )
        panda_id = _add_job(panda_server, queue, exit_code=3)
        outcome = _outcome(bridge_for(config), panda_server, worker, panda_id, adder=True)
    beat = outcome.heartbeat
    assert beat, (
        f"no heartbeat.json came back: {sorted(p.name for p in outcome.output_dir.iterdir())}"
    )
    assert (beat["state"], beat["transExitCode"], beat["exeErrorCode"]) == ("failed", 3, 3), beat
    assert beat["pilotErrorCode"] != 0 and beat["exeErrorDiag"] == "act-e2e-trf failed on purpose"
    assert (outcome.state, outcome.panda_status) == ("donefailed", "failed")
    _assert_pilots_report_in_panda(panda_server, outcome)
    row = panda_server.columns(panda_id, "piloterrordiag")
    assert row["piloterrordiag"] and beat["pilotErrorDiag"].startswith(row["piloterrordiag"])
    # the pilot's log reached the SE all the same (the CE uploaded what output.list named)
    _assert_files(panda_server, xrootd_server, outcome)


# -- truepilot: the pilot's own copytool and its own reports -----------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
def test_truepilot_the_pilot_stages_out_itself_and_panda_1_0_refuses_its_legacy_reports(
    bridge_for: Any,
    panda_server: PandaServer,
    xrootd_server: XRootDServer,
    pilot3: Pilot3,
    se_area: str,
    tmp_path: Path,
) -> None:
    """The local CE, the simplest place for a truepilot job: the pilot gets the production-role
    proxy and the PanDA CA from the wrapper stand-in (an ARC CE gives it the delegated proxy
    through the ENV/PROXY RTE, and a proxy delegated to the test CE carries no production role;
    what the pilot does with it is the same)."""
    secrets_dir = Path(tempfile.mkdtemp(prefix="act-pilot3-credentials-", dir="/tmp"))
    secrets_dir.chmod(0o755)
    ca_dir, proxy = secrets_dir / "certificates", secrets_dir / "proxy.pem"
    ca_dir.mkdir(mode=0o755)
    (ca_dir / "ca.pem").write_bytes(panda_server.ca.read_bytes())
    _rehash(ca_dir)
    proxy.write_bytes(panda_server.pilot_proxy.read_bytes())
    proxy.chmod(0o600)
    user = pwd.getpwnam(PILOT_USER)
    os.chown(proxy, user.pw_uid, user.pw_gid)  # the pilot runs as PILOT_USER
    credentials = {"X509_USER_PROXY": str(proxy), "X509_CERT_DIR": str(ca_dir)}
    queue = panda_server.add_queue()
    with (
        _removed(secrets_dir),
        worker_node(
            pilot3, root_url=xrootd_server.root_url, se_path=se_area, credentials=credentials
        ) as worker,
    ):
        worker.write_cric({queue: cric_entry(queue, worker, ce_endpoint=LOCAL_CE, truepilot=True)})
        config = _queue_config(
            tmp_path,
            panda_server,
            queue,
            worker,
            ces=_local_ces(worker),
            wrapper=str(worker.wrapper),
            tarball=str(worker.tarball),
        )
        panda_id = _add_job(panda_server, queue)
        outcome = _outcome(bridge_for(config), panda_server, worker, panda_id, adder=False)
    assert outcome.state == "done"  # truepilot: act is done once the CE job is
    stdout = (outcome.output_dir / "stdout").read_text(errors="replace")
    # the pilot's own copytool put the output and the log on the SE
    for lfn in (f"act.test.out.{panda_id}.root", f"act.test.log.{panda_id}.tgz"):
        assert f"lfn={lfn}, status_code=0, status=transferred" in stdout, lfn
        assert list(xrootd_server.local(se_area).rglob(lfn)), f"{lfn} not on the SE"
    # ... and its reports to PanDA were refused: pilot3 3.7 speaks the legacy API only
    assert "method updateJob is forbidden" in stdout
    assert "server responded with: res = {" not in stdout  # no update was ever answered
    row = panda_server.job(panda_id)
    assert row is not None and row.status in ("starting", "running"), row


@contextmanager
def _removed(directory: Path) -> Iterator[None]:
    try:
        yield
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _rehash(directory: Path) -> None:
    """``<hash>.0`` links for the CA files of ``directory``: what pilot3's curl and Python's ssl
    read through X509_CERT_DIR."""
    subprocess.run(["openssl", "rehash", str(directory)], check=True, capture_output=True)
