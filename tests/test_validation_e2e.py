"""Validation end to end with real parts at both ends: jobs from the REAL PanDA server run on the
local CE back end, where a stand-in pilot writes their outputs to the REAL XRootD storage element
and leaves a heartbeat.json naming them (root:// URLs, sizes, adler32, PanDA's GUIDs); act's
validator checks every file on the SE, the propagator sends the final report, and PanDA's own
Adder then finishes (or fails) the job from that report."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from act.common.schema import ce_jobs, panda_jobs
from tests.support.bridge import bridge_config
from tests.support.panda_real import PandaServer
from tests.support.procs import wait_for
from tests.support.xrootd_real import XRootDServer

pytestmark = [pytest.mark.panda, pytest.mark.storage, pytest.mark.slow]

#: The stand-in pilot: a native job's pilot that stages its outputs out itself (to the SE's data
#: directory, as the CE's upload would) and reports them. ``CORRUPT`` names an LFN whose reported
#: adler32 is wrong (the file on storage is not what the pilot meant to write).
PILOT = """#!{python}
import json, os, sys, urllib.parse, zlib
SE_DATA, SE_URL, GUIDS = {data!r}, {url!r}, {guids!r}
# the job file as pilot3 reads it (normal mode: the legacy getJob form)
spec = dict(urllib.parse.parse_qsl(open("pandaJobData.out").read(), keep_blank_values=True))
panda_id = str(spec["PandaID"])
guids = json.load(open(GUIDS)).get(panda_id, {{}})
lfns = [f for f in spec.get("outFiles", "").split(",") if f and f != "NULL"]
if spec["logFile"] not in lfns:
    lfns.append(spec["logFile"])
report = {{}}
for n, lfn in enumerate(lfns):
    data = ("payload of %s %s\\n" % (panda_id, lfn)).encode() * (n + 1)
    where = os.path.join(SE_DATA, "atlas", panda_id)
    os.makedirs(where, exist_ok=True)
    with open(os.path.join(where, lfn), "wb") as out:
        out.write(data)
    adler = "%08x" % (zlib.adler32(data) & 0xFFFFFFFF)
    if guids.get("__corrupt__") == lfn:
        adler = "%08x" % ((int(adler, 16) + 1) & 0xFFFFFFFF)
    report[lfn] = {{"surl": "%s//atlas/%s/%s" % (SE_URL, panda_id, lfn), "fsize": len(data),
                    "adler32": adler, "guid": guids.get(lfn)}}
log = spec["logFile"]
print("stand-in pilot for", panda_id, "wrote", sorted(report))
print("ERROR: nothing really ran")
sys.stdout.flush()
heartbeat = {{"jobId": int(panda_id), "state": "finished", "transExitCode": 0,
              "pilotErrorCode": 0, "node": "wn.test", "cpuConsumptionTime": 1,
              "xml": json.dumps(report)}}
json.dump(heartbeat, open("heartbeat.json", "w"))
"""


def _pilot(se: XRootDServer, guids: Path) -> str:
    return PILOT.format(python=sys.executable, data=str(se.data), url=se.root_url, guids=str(guids))


def _guids(panda_server: PandaServer, panda_id: int) -> dict[str, Any]:
    files = panda_server.files(panda_id)
    return {f["lfn"]: f["guid"] for f in files if f["type"] in ("output", "log")}


def _run(bridge: Any, panda_id: int, until: set[str]) -> Any:
    def ended() -> bool:
        bridge.follow_ce()
        bridge.run("propagator")
        return bool(bridge.job(panda_id).state in until)

    wait_for(ended, 120, f"PanDA job {panda_id} in {sorted(until)}")
    return bridge.job(panda_id)


def test_valid_outputs_on_the_real_se_finish_the_job_at_panda(
    bridge_for: Any, panda_server: PandaServer, panda_queue: str, xrootd_server: XRootDServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    (panda_id,) = panda_server.add_jobs(panda_queue)
    guids = tmp_path / "guids.json"
    guids.write_text(json.dumps({str(panda_id): _guids(panda_server, panda_id)}))
    config = bridge_config(tmp_path, panda_server, panda_queue, pilot="")
    Path(config["queues"]["serve"][panda_queue]["pilot_wrapper"]).write_text(
        _pilot(xrootd_server, guids)
    )
    config["weblogs"] = {"dir": str(tmp_path / "web")}
    config["queues"]["serve"][panda_queue]["log_url_prefix"] = "https://logs.test/act"
    bridge = bridge_for(config)
    bridge.run("panda_fetcher", "propagator", "translator", "submitter")

    job = _run(bridge, panda_id, {"done", "donefailed"})
    assert job.state == "done", job.validation_note
    report = json.loads(job.report)
    outputs = json.loads(report["xml"])
    assert outputs and all(v["surl"].startswith("root://") for v in outputs.values())
    for lfn, entry in outputs.items():  # every reported file is on the SE as reported
        assert xrootd_server.local(f"atlas/{panda_id}/{lfn}").stat().st_size == entry["fsize"]
    # the pilot log is in the web area where the job's GTAG/pilotID URL points
    day = job.log_url.split("/")[-3]
    web = tmp_path / "web" / day / panda_queue / f"{panda_id}.out"
    assert web.read_text().startswith(f"stand-in pilot for {panda_id} wrote")  # its stdout
    assert oct(web.stat().st_mode & 0o777) == oct(0o644)

    assert panda_server.run_adder([panda_id]) == {panda_id: "finished"}
    bridge.run("app_status", "cleaner")
    with bridge.db.read() as conn:
        ce = conn.execute(sa.select(ce_jobs).where(ce_jobs.c.panda_id == panda_id)).one()
    assert ce.state == "cleaned" and not Path(ce.output_dir).exists()  # local copy removed


def test_a_corrupt_output_on_the_real_se_fails_the_job_at_panda_with_1172(
    bridge_for: Any, panda_server: PandaServer, panda_queue: str, xrootd_server: XRootDServer,
    tmp_path: Path,
) -> None:  # fmt: skip
    (panda_id,) = panda_server.add_jobs(panda_queue)
    outputs = _guids(panda_server, panda_id)
    bad = sorted(lfn for lfn in outputs if not lfn.endswith(".tgz"))[0]
    guids = tmp_path / "guids.json"
    guids.write_text(json.dumps({str(panda_id): {**outputs, "__corrupt__": bad}}))
    config = bridge_config(tmp_path, panda_server, panda_queue, pilot="")
    Path(config["queues"]["serve"][panda_queue]["pilot_wrapper"]).write_text(
        _pilot(xrootd_server, guids)
    )
    bridge = bridge_for(config)
    bridge.options["validator"] = {"invalid_outputs": "fail"}
    bridge.run("panda_fetcher", "propagator", "translator", "submitter")

    job = _run(bridge, panda_id, {"done", "donefailed"})
    assert job.state == "donefailed" and job.error_code == 1172
    assert bad in job.error_text and "adler32" in job.error_text
    with bridge.db.read() as conn:
        row = conn.execute(sa.select(panda_jobs).where(panda_jobs.c.panda_id == panda_id)).one()
    assert "ERROR: nothing really ran" in json.loads(row.report)["pilotLog"]
    row = panda_server.job(panda_id)
    assert row is not None and row.pilot_error_code == 1172
    assert os.path.exists(xrootd_server.local(f"atlas/{panda_id}/{bad}"))  # nothing deleted
