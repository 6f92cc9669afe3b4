"""Realistic PanDA job specs for the test double (:func:`make_job_spec`)."""

from __future__ import annotations

import random
import uuid
from typing import Any, Literal


def make_job_spec(
    panda_id: int,
    *,
    label: Literal["managed", "user"] = "managed",
    cores: int = 1,
    n_inputs: int = 2,
    n_outputs: int = 1,
    attempt: int = 1,
    task_id: int = 4242,
    jobset_id: int = 7,
    event_service: bool = False,
    priority: int = 1000,
) -> dict[str, Any]:
    """A realistic getJob job spec (the keys and value types of panda.md §3.2): production
    (``managed``) or analysis (``user``), single- or multi-core, with comma lists aligned with
    ``inFiles`` and ``outFiles`` (the log file first, as the server sends it)."""
    rng = random.Random(panda_id)
    scope = "mc23_13p6TeV" if label == "managed" else "user.tester"
    dataset_in = f"{scope}.{600000 + panda_id % 1000}.evgen.EVNT.e8514_tid{task_id:08d}_00"
    ins = [f"EVNT.{task_id:08d}._{index:06d}.pool.root.1" for index in range(1, n_inputs + 1)]
    logfile = f"log.{task_id:08d}._{panda_id:06d}.job.log.tgz.{attempt}"
    outs = [logfile] + [
        f"HITS.{task_id:08d}._{panda_id:06d}.{k}.pool.root.{attempt}" for k in range(n_outputs)
    ]
    out_datasets = [f"{scope}.simul.log.e8514_s4162_tid{task_id:08d}_00"] + [
        f"{scope}.simul.HITS.e8514_s4162_tid{task_id:08d}_00" for _ in range(n_outputs)
    ]
    multi = cores > 1
    spec: dict[str, Any] = {
        "StatusCode": 0,
        "PandaID": panda_id,
        "prodSourceLabel": label,
        "swRelease": "Atlas-23.0.22",
        "homepackage": "AtlasOffline/23.0.22" if label == "managed" else "AnalysisTransforms",
        "transformation": "Sim_tf.py" if label == "managed" else "runGen-00-00-02",
        "jobName": f"{dataset_in}.{panda_id}",
        "jobDefinitionID": panda_id // 10,
        "cloud": "WORLD",
        "inFiles": ",".join(ins),
        "dispatchDblock": ",".join(f"panda.{task_id}.dis" for _ in ins),
        "dispatchDBlockToken": ",".join("NULL" for _ in ins),
        "dispatchDBlockTokenForOut": ",".join("NULL" for _ in outs),
        "outFiles": ",".join(outs),
        "destinationDblock": ",".join(f"{d}_sub0{panda_id}" for d in out_datasets),
        "destinationDBlockToken": ",".join("ATLASDATADISK" for _ in outs),
        "prodDBlocks": ",".join(dataset_in for _ in ins),
        "prodDBlockToken": ",".join("NULL" for _ in ins),
        "realDatasets": ",".join(out_datasets),
        "realDatasetsIn": ",".join(dataset_in for _ in ins),
        "fileDestinationSE": ",".join("TEST_SITE" for _ in outs),
        "logFile": logfile,
        "logGUID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "jobPars": (
            f"--inputEVNTFile={','.join(ins)} --outputHITSFile={outs[-1] if n_outputs else ''} "
            f"--maxEvents=100 --randomSeed={panda_id % 10000} --multithreaded={multi!s}"
        ),
        "attemptNr": attempt,
        "GUID": ",".join(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in ins),
        "checksum": ",".join(f"ad:{rng.getrandbits(32):08x}" for _ in ins),
        "fsize": ",".join(str(rng.randint(10**8, 4 * 10**9)) for _ in ins),
        "scopeIn": ",".join(scope for _ in ins),
        "scopeOut": ",".join(scope for _ in outs[1:]),
        "scopeLog": scope,
        "ddmEndPointIn": ",".join("TEST-SITE_DATADISK" for _ in ins),
        "ddmEndPointOut": ",".join("TEST-SITE_DATADISK" for _ in outs),
        "destinationSE": "TEST_SITE",
        "prodUserID": "/O=act-test/CN=act-test-pilot",
        "maxCpuCount": 86400 if multi else 43200,
        "minRamCount": 2000 * cores if multi else 2000,
        "maxDiskCount": 10000,
        "cmtConfig": "x86_64-el9-gcc13-opt",
        "processingType": "simul" if label == "managed" else "panda-client-1.5.80-jedi-run",
        "transferType": "NULL",
        "sourceSite": "NULL",
        "currentPriority": priority,
        "taskID": task_id,
        "coreCount": cores,
        "jobsetID": jobset_id,
        "reqID": "NULL",
        "nucleus": "TEST_NUCLEUS",
        "maxWalltime": 86400 if multi else 43200,
        "resource_type": "MCORE" if multi else "SCORE",
        "ioIntensity": None,
        "ioIntensityUnit": None,
        "nSent": 0,
    }
    if event_service:
        spec["eventService"] = "True"
    return spec
