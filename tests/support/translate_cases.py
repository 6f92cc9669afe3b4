"""Representative PanDA jobs and queues for the translation tests (values invented for tests).

A JSON job is what /api/v1 gives (``spec_format`` "json"); a legacy one is the URL-encoded getJob
reply (``StatusCode=0&PandaID=...``, every value a string, as ``urlencode`` of the server's Python
values wrote it), stored and parsed as the fetcher and translator do (``spec_format`` "form").
``API_V1_JOB`` has the keys, order and value types of a job the real panda-server 1.0.4 handed out
through ``pilot/acquire_jobs`` (tests/harness/panda-server, December 2026), with values changed.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

from act.atlas.queues import Queue, QueueCE
from act.atlas.translate import JobInput

ARC_CE = QueueCE(
    flavour="arc", endpoint="https://arc.example.org/arex", ce_queue="grid", state="ACTIVE"
)
CONDOR_CE = QueueCE(
    flavour="condor", endpoint="ce01.example.org:9619", ce_queue=None, state="ACTIVE"
)

NATIVE = Queue(
    name="EXAMPLE_NG",
    state="ACTIVE",
    online=True,
    cores=1,
    max_walltime_minutes=2880,
    max_memory_mb=None,
    ces=(ARC_CE,),
    truepilot=False,
    heartbeat_less=False,
    prod_source_label="managed",
    pilot_args="",
    pilot_tarball="https://pilot.example.org/pilot3.tar.gz",
    pilot_wrapper="https://pilot.example.org/runpilot2-wrapper.sh",
    max_queued=100,
    max_jobs=1000,
    jobs_per_cycle=20,
    log_url_prefix="https://act.example.org/jobs",
    queuedata={"name": "EXAMPLE_NG", "copytools": {"mv": {}}, "pilot_version": "3.9"},
)
NATIVE_MCORE = replace(
    NATIVE,
    name="EXAMPLE_NG_MCORE",
    cores=8,
    max_memory_mb=32000,
    queuedata={**NATIVE.queuedata, "name": "EXAMPLE_NG_MCORE", "corecount": 8},
)
TRUEPILOT = replace(
    NATIVE,
    name="ANALY_EXAMPLE",
    ces=(ARC_CE, CONDOR_CE),
    truepilot=True,
    prod_source_label="user",
    max_walltime_minutes=1440,
    pilot_args="--es-executor-type 'a b' --label \"q\"",
    queuedata={"name": "ANALY_EXAMPLE", "params": {"pilot_url": "https://pilot.example.org/rc"}},
)
TRUEPILOT_LOCAL_WRAPPER = replace(
    TRUEPILOT, name="EXAMPLE_(TEST)", pilot_wrapper="/opt/act/runpilot2-wrapper.sh"
)

_PROD = {
    "PandaID": 7001,
    "jobsetID": 11,
    "taskID": 30001,
    "prodSourceLabel": "managed",
    "transformation": "Sim_tf.py",
    "jobPars": "--inputEVNTFile=EVNT.01._000001.pool.root.1 --maxEvents=100",
    "inFiles": "EVNT.01._000001.pool.root.1,EVNT.01._000002.pool.root.1",
    "scopeIn": "mc23_13p6TeV,mc23_13p6TeV",
    "GUID": "c0ffee00-0000-0000-0000-000000000001,c0ffee00-0000-0000-0000-000000000002",
    "fsize": "1000,2000",
    "checksum": "ad:00000001,ad:00000002",
    "outFiles": "HITS.01._000001.pool.root.1,log.01._000001.job.log.tgz.1",
    "logFile": "log.01._000001.job.log.tgz.1",
    "logGUID": "c0ffee00-0000-0000-0000-00000000010a",
    "scopeOut": "mc23_13p6TeV",
    "scopeLog": "mc23_13p6TeV",
    "realDatasetsIn": "mc23_13p6TeV.601229.EVNT.e8514,mc23_13p6TeV.601229.EVNT.e8514",
    "realDatasets": "mc23_13p6TeV.601229.HITS.s4162,mc23_13p6TeV.601229.log.s4162",
    "ddmEndPointIn": "NDGF-T1_DATADISK,NDGF-T1_DATADISK",
    "ddmEndPointOut": "NDGF-T1_DATADISK,NDGF-T1_DATADISK",
    "coreCount": 1,
    "minRamCount": 3000,
    "maxCpuCount": 14400,
    "currentPriority": 900,
    "attemptNr": 1,
    "resource_type": "SCORE",
    "jobName": "mc23.simul.01._000001",
    "cmtConfig": "x86_64-el9-gcc13-opt",
    "swRelease": "Atlas-23.0",
}


_DATASET_IN = "user.tester:user.tester.Zürich \"quoted\" 'in'.v1"
API_V1_JOB: dict[str, Any] = {
    "StatusCode": 0,
    "PandaID": 7009,
    "prodSourceLabel": "managed",
    "swRelease": "Atlas-23.0.22",
    "homepackage": "AtlasOffline/23.0.22",
    "transformation": "Reco_tf.py",
    "jobName": "data24.reco.7009",
    "jobDefinitionID": 700,
    "cloud": "WORLD",
    "inFiles": "RAW.1._0001.data,RAW.1._0002.data,RAW.1._0003.data",
    "dispatchDblock": "panda.dis.1,panda.dis.1,panda.dis.1",
    "dispatchDBlockToken": "NULL,NULL,NULL",
    "dispatchDBlockTokenForOut": "NULL,NULL",
    "outFiles": "AOD.1._0001.pool.root.1,log.1._0001.job.log.tgz.1",
    "destinationDblock": "data24.AOD.r1_sub01,data24.log.r1_sub01",
    "destinationDBlockToken": "ATLASDATADISK,ATLASDATADISK",
    "prodDBlocks": f"{_DATASET_IN},{_DATASET_IN},{_DATASET_IN}",
    "prodDBlockToken": "NULL,NULL,NULL",
    "realDatasets": 'data24.AOD.r1 «é» "x",data24.log.r1',
    "realDatasetsIn": f"{_DATASET_IN},{_DATASET_IN},{_DATASET_IN}",
    "fileDestinationSE": "NDGF-T1,NDGF-T1",
    "logFile": "log.1._0001.job.log.tgz.1",
    "logGUID": "0d3a1f2e-0000-4000-8000-000000007009",
    "jobPars": (
        "--inputBSFile=RAW.1._0001.data,RAW.1._0002.data,RAW.1._0003.data "
        "--preExec 'flags.Exec.MaxEvents=10; name=\"é ü 測試\"' "
        "--outputAODFile=AOD.1._0001.pool.root.1 "
        "--autoConfiguration=everything --extra=a&b=c%20d+e"
    ),
    "attemptNr": 2,
    "GUID": (
        "0d3a1f2e-0000-4000-8000-000000000001,0d3a1f2e-0000-4000-8000-000000000002,"
        "0d3a1f2e-0000-4000-8000-000000000003"
    ),
    "checksum": "ad:0a1b2c3d,ad:00ff00ff,md5:0123456789abcdef0123456789abcdef",
    "fsize": "1073741824,2048,1",
    "scopeIn": "data24_13p6TeV,data24_13p6TeV,user.tester",
    "scopeOut": "data24_13p6TeV",
    "scopeLog": "data24_13p6TeV",
    "ddmEndPointIn": "NDGF-T1_DATADISK,NDGF-T1_DATADISK,NDGF-T1_SCRATCHDISK",
    "ddmEndPointOut": "NDGF-T1_DATADISK,NDGF-T1_DATADISK",
    "destinationSE": "NDGF-T1",
    "prodUserID": "/DC=ch/DC=cern/OU=Users/CN=tester",
    "maxCpuCount": 86400,
    "minRamCount": 16000,
    "maxDiskCount": 1000,
    "cmtConfig": "x86_64-el9-gcc13-opt",
    "processingType": "reprocessing",
    "transferType": "NULL",
    "sourceSite": "NULL",
    "currentPriority": 1000,
    "taskID": 40001,
    "coreCount": 8,
    "jobsetID": 7,
    "reqID": "NULL",
    "nucleus": "NDGF-T1",
    "maxWalltime": 43200,
    "resource_type": "MCORE",
    "loopingCheck": False,
    "ioIntensity": None,
    "ioIntensityUnit": None,
    "nSent": 1,
}


@dataclass(frozen=True)
class Case:
    name: str
    job: JobInput


def _job(
    spec: dict[str, Any],
    queue: Queue,
    *,
    legacy: bool = False,
    event_ranges: list[dict[str, Any]] | None = None,
    metadata: dict[str, Any] | None = None,
    log_url: str | None = None,
) -> JobInput:
    panda_id = int(spec["PandaID"])
    if legacy:
        text = urlencode({"StatusCode": "0", **{k: str(v) for k, v in spec.items()}})
        spec = dict(parse_qsl(text, keep_blank_values=True))
    else:
        text = json.dumps(spec)
    return JobInput(
        panda_id=panda_id,
        spec=spec,
        spec_text=text,
        spec_format="form" if legacy else "json",
        queue=queue,
        attempt=1,
        log_url=log_url or f"https://act.example.org/jobs/2026-11-22/{queue.name}/{panda_id}.out",
        event_ranges=event_ranges,
        metadata=metadata or {},
    )


def cases() -> list[Case]:
    mcore = {
        **_PROD,
        "PandaID": 7002,
        "coreCount": 8,
        "minRamCount": 16000,
        "maxCpuCount": 172800,
        "currentPriority": 5000,
        "resource_type": "MCORE",
    }
    analysis = {
        **_PROD,
        "PandaID": 7003,
        "prodSourceLabel": "user",
        "transformation": "https://pandaserver.example.org/trf/user/runGen-00-00-02",
        "jobPars": '-j "" --sourceURL https://pandaserver.example.org:25443 -o "{\'a\': [1]}"',
        "currentPriority": 20000,
        "resource_type": "NULL",
        "minRamCount": 0,
    }
    event_service = {
        **_PROD,
        "PandaID": 7004,
        "eventService": "True",
        "coreCount": 8,
        "minRamCount": 8000,
        "resource_type": "MCORE",
    }
    ranges = [
        {"eventRangeID": "7004-1-1-1-10", "startEvent": 1, "lastEvent": 10, "LFN": "EVNT.1"},
        {"eventRangeID": "7004-1-1-11-20", "startEvent": 11, "lastEvent": 20, "LFN": "EVNT.1"},
    ]
    nulls = {
        key: "NULL"
        for key in (
            "coreCount",
            "minRamCount",
            "maxCpuCount",
            "currentPriority",
            "logFile",
            "jobName",
            "inFiles",
            "scopeIn",
            "resource_type",
            "prodSourceLabel",
        )
    }
    null_spec = {**_PROD, "PandaID": 7005, **nulls}
    missing = {"PandaID": 7006}
    pars = base64.b64encode(b"Sim_tf.py --preExec \"a=1; b='x'\" (paren) \xc3\xa9").decode()
    b64 = {
        **_PROD,
        "PandaID": 7007,
        "jobPars": pars,
        "coreCount": "4",
        "minRamCount": "6000",
        "resource_type": "NULL",
    }
    non_ascii = {
        **_PROD,
        "PandaID": 7008,
        "jobName": "Zürich \"run\" (β) 測試 $(Cluster) 'q'",
        "prodSourceLabel": "user",
    }
    api_v1 = {**API_V1_JOB, "PandaID": 7009}
    legacy_reply = {
        **API_V1_JOB,
        "PandaID": 7010,
        "prodSourceLabel": "user",
        "jobName": "user.tester.Zürich \"run\" 'q'.7010",
    }
    return [
        Case("prod_score_native", _job(_PROD, NATIVE)),
        Case("prod_mcore_native", _job(mcore, NATIVE_MCORE, legacy=True)),
        Case(
            "analysis_truepilot",
            _job(analysis, TRUEPILOT, metadata={"harvesterid": "h1", "harvesterworkerid": 42}),
        ),
        Case("event_service", _job(event_service, NATIVE_MCORE, event_ranges=ranges)),
        Case("null_fields", _job(null_spec, NATIVE, legacy=True)),
        Case("missing_keys", _job(missing, TRUEPILOT)),
        Case("base64_jobpars", _job(b64, TRUEPILOT_LOCAL_WRAPPER, legacy=True)),
        Case(
            "non_ascii",
            _job(
                non_ascii,
                TRUEPILOT_LOCAL_WRAPPER,
                log_url='https://act.example.org/jobs/2026-11-22/EXAMPLE_(TEST)/7008.out?x="é"&y=(z)',
            ),
        ),
        Case("api_v1_multi_input", _job(api_v1, NATIVE_MCORE)),
        Case("legacy_reply_truepilot", _job(legacy_reply, TRUEPILOT_LOCAL_WRAPPER, legacy=True)),
        Case(
            "legacy_reply_harvester",
            _job(
                {**legacy_reply, "PandaID": 7011},
                TRUEPILOT,
                legacy=True,
                metadata={"harvesterid": "h1", "harvesterworkerid": 43},
            ),
        ),
    ]
