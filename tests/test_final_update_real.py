"""A final report built by act from a pilot3-shaped heartbeat, sent through act's client to the
REAL PanDA server (panda-server 1.0.4, /api/v1), then read back from PanDA's own tables
(jobsActive4, metaTable, jobsDebug) to see that each value arrived as sent.

The legacy API cannot be run here (1.0.x has no /server/panda; 0.8.x's updateJob is checked by
name against its source in tests/test_update_fields.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from act.atlas import final_report
from act.atlas.credentials import FileCredentials
from act.atlas.panda_client import JobUpdate, PandaClient
from tests.support.bridge import NODE, panda_settings
from tests.support.panda_real import PandaServer

pytestmark = pytest.mark.panda

COLUMNS = (
    "jobstatus", "starttime", "endtime", "modificationhost", "batchid", "pilotid",
    "schedulerid", "computingelement", "transexitcode", "piloterrorcode", "piloterrordiag",
    "exeerrorcode", "exeerrordiag", "cpuconsumptiontime", "cpuconsumptionunit", "cpuconversion",
    "actualcorecount", "meancorecount", "nevents", "ninputfiles", "pilottiming", "jobmetrics",
    "maxrss", "maxvmem", "maxswap", "maxpss", "avgrss", "avgvmem", "avgswap", "avgpss",
    "totrchar", "totwchar", "totrbytes", "totwbytes", "raterchar", "ratewchar", "raterbytes",
    "ratewbytes", "cpu_architecture_level", "grid", "sourcesite", "destinationsite",
)  # fmt: skip


@pytest.fixture
def client(panda_server: PandaServer) -> Iterator[PandaClient]:
    settings = panda_settings(panda_server)
    with PandaClient(settings, FileCredentials(settings)) as panda:
        yield panda


def heartbeat(queue: str, start: datetime, end: datetime, meta: str) -> dict[str, Any]:
    """What pilot3's get_data_structure writes for a finished job (with the memory monitor's
    and I/O fields, which need prmon), types as pilot3 gives them."""
    return {
        "jobId": "1", "state": "finished", "attemptNr": 1,
        "timestamp": "2026-12-07T11:30:38+00:00", "siteName": queue, "node": "wn042.act.test",
        "schedulerID": "act", "pilotID": "https://logs.example.org/act/1.out|PR|3.7.0.36",
        "startTime": start.timestamp(), "endTime": end.timestamp(),
        "metaData": meta, "stdout": "last lines of the payload",
        "coreCount": 8, "meanCoreCount": 7.5, "nEvents": 10, "nInputFiles": 2,
        "cpuConsumptionTime": 7000, "cpuConversionFactor": 1.25,
        "cpuConsumptionUnit": "s+AMD EPYC 7B13+AVX2", "cpu_architecture_level": "x86_64-v3",
        "maxRSS": 1_000_000, "maxVMEM": 2_000_000, "maxSWAP": 1, "maxPSS": 900_000,
        "avgRSS": 800_000.5, "avgVMEM": 1_500_000, "avgSWAP": 0, "avgPSS": 700_000,
        "totRCHAR": 10240, "totWCHAR": 20480, "totRBYTES": 4096, "totWBYTES": 8192,
        "rateRCHAR": 12288, "rateWCHAR": 25600, "rateRBYTES": 1024, "rateWBYTES": 2048,
        "jobMetrics": "nEvents=10 coreCount=8", "pilotTiming": "5|10|3600|20|1|2",
        "pilotErrorCode": 0, "pilotErrorDiag": "", "transExitCode": 0,
        "exeErrorCode": 0, "exeErrorDiag": "OK", "pilotLog": "",
        "grid": "ARC", "source_site": queue, "destination_site": queue,
    }  # fmt: skip


def stored(server: PandaServer, panda_id: int) -> dict[str, Any]:
    with server.connect() as conn:
        row = conn.execute(
            f"SELECT {', '.join(COLUMNS)} FROM jobsactive4 WHERE pandaid = %s", (panda_id,)
        ).fetchone()
        meta = conn.execute("SELECT metadata FROM metatable WHERE pandaid = %s", (panda_id,))
        stdout = conn.execute("SELECT stdout FROM jobsdebug WHERE pandaid = %s", (panda_id,))
        assert row is not None, f"panda_id={panda_id} not in jobsactive4"
        values = dict(zip(COLUMNS, row, strict=True))
        values["metadata"] = (meta.fetchone() or [None])[0]
        values["stdout"] = (stdout.fetchone() or [None])[0]
    return values


def test_every_field_of_a_final_update_arrives_as_sent(
    client: PandaClient, panda_server: PandaServer, panda_queue: str
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue, core_count=8)
    jobs = client.acquire_jobs(
        queue=panda_queue, prod_source_label="managed", n_jobs=1, node=NODE,
        computing_element="ce-of-acquire.act.test",
    )  # fmt: skip
    assert [job.panda_id for job in jobs] == [panda_id]
    end = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=5)
    start = end - timedelta(hours=1)
    meta = json.dumps({"exitCode": 0, "exitMsg": "OK", "pad": ["payload report"] * 15_000})
    assert len(meta) > 200_000
    pilot = heartbeat(panda_queue, start, end, meta)
    fixes = final_report.Corrections(
        ce="arc1.act.test", ce_job_id="arc-job-123", worker_node="wn-of-the-ce",
        started_at=start - timedelta(minutes=1), ended_at=end + timedelta(minutes=1), cores=8,
    )  # fmt: skip
    built = final_report.build(pilot, fixes)
    assert built.notes == () and built.dropped == ()
    fields = {**built.fields, "xml": panda_server.output_report(panda_id)}
    [result] = client.update_jobs_bulk([JobUpdate(panda_id, "finished", 1, fields)])
    assert (result.ok, result.command, result.error) == (True, None, None)

    got = stored(panda_server, panda_id)
    assert got["jobstatus"] == "holding"  # a final update; PanDA's Adder finishes it
    # the pilot's epoch floats, as PanDA's UTC time (PanDA stores naive UTC)
    assert got["starttime"] == start.replace(tzinfo=None)
    assert got["endtime"] == end.replace(tzinfo=None)
    assert (got["modificationhost"], got["batchid"]) == ("wn042.act.test", "arc-job-123")
    assert got["pilotid"] == pilot["pilotID"] and got["schedulerid"] == "act"
    # the new API has no computingElement, and 1.0.4 replaces the one of acquire_jobs at each
    # update with the CE of the job's Harvester worker: none here (act is no Harvester)
    assert got["computingelement"] is None
    assert (got["transexitcode"], got["piloterrorcode"], got["exeerrorcode"]) == ("0", 0, 0)
    assert got["exeerrordiag"] == "OK"
    assert got["cpuconsumptiontime"] == 7000 and got["cpuconversion"] == Decimal("1.25")
    assert got["cpuconsumptionunit"] == pilot["cpuConsumptionUnit"]
    assert got["cpu_architecture_level"] == "x86_64-v3"
    assert (got["actualcorecount"], got["meancorecount"]) == (8, Decimal(8))  # 7.5: int in 1.0.4
    assert (got["nevents"], got["ninputfiles"]) == (10, 2)
    assert got["pilottiming"] == "5|10|3600|20|1|2"
    assert got["jobmetrics"] == "nEvents=10 coreCount=8"
    memory = ("maxrss", "maxvmem", "maxswap", "maxpss", "avgrss", "avgvmem", "avgswap", "avgpss")
    assert [got[c] for c in memory] == [1_000_000, 2_000_000, 1, 900_000, 800_000, 1_500_000,
                                        0, 700_000]  # fmt: skip
    # PanDA stores the byte totals in kB; 1.0.4 divides the rates by 1024 as well (0.8.x stored
    # them as sent): sent as pilot3 reports them, stored as PanDA decides
    totals = ("totrchar", "totwchar", "totrbytes", "totwbytes")
    assert [got[c] for c in totals] == [10, 20, 4, 8]
    rates = ("raterchar", "ratewchar", "raterbytes", "ratewbytes")
    assert [got[c] for c in rates] == [12, 25, 1, 2]
    assert (got["grid"], got["sourcesite"], got["destinationsite"]) == ("ARC", *[panda_queue] * 2)
    assert got["metadata"] == meta  # whole, 200 kB of valid JSON
    assert got["stdout"] == "last lines of the payload"


def test_a_meta_data_act_does_not_send_is_named_in_pandas_job_metrics(
    client: PandaClient, panda_server: PandaServer, panda_queue: str
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    client.acquire_jobs(queue=panda_queue, prod_source_label="managed", n_jobs=1, node=NODE)
    end = datetime.now(timezone.utc).replace(microsecond=0)
    meta = json.dumps({"exitCode": 0, "pad": "x" * 5000})
    built = final_report.build(
        heartbeat(panda_queue, end - timedelta(hours=1), end, meta),
        final_report.Corrections(),
        max_meta_data=1000,
    )
    assert "metaData not sent" in built.notes[0]
    fields = {**built.fields, "xml": panda_server.output_report(panda_id)}
    [result] = client.update_jobs_bulk([JobUpdate(panda_id, "finished", 1, fields)])
    assert result.ok
    got = stored(panda_server, panda_id)
    assert got["jobmetrics"] == f"actMetaDataDropped={len(json.dumps(meta))} nEvents=10 coreCount=8"
    assert got["metadata"] is None  # none rather than a cut one
