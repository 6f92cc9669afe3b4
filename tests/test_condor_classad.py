"""The job ClassAds of what the translator and the HTCondor back end submit, made by HTCondor
itself: htcondor 25's ``htcondor2`` cannot make job ads without a schedd, so the legacy
``htcondor.Submit(text).jobs()`` of ``htcondor<25`` does it, in its own venv
(``tests/harness/ensure-htcondor24``, run here and by ``make test``; a failure to install it is an
error, never a skip). Both CE flavours, one job alone and a combined batch (one transaction with
item data) are checked: universe, grid resource, resource requests and the token attribute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from act.atlas.queues import Queue
from act.atlas.translate import JobInput, to_condor, to_xrsl
from act.condor.submission import Batch, combine, prepare
from tests.support.arc_adl import build_job_adl
from tests.support.arc_real import RealArc, arc_ce
from tests.support.condor import FLAVOURS, descriptions
from tests.support.translate_cases import cases

pytestmark = pytest.mark.condor_classad
__all__ = ["arc_ce"]  # the real ARC CE's session fixture, imported for pytest

REPO = Path(__file__).resolve().parent.parent
ENSURE = REPO / "tests" / "harness" / "ensure-htcondor24"
SCRIPT = REPO / "tests" / "support" / "htcondor24_jobs.py"
HOST = "ce01.example.org"


@pytest.fixture(scope="module")
def python24() -> str:
    env = {**os.environ, "PYTHON": sys.executable}  # the venv is made from the same python
    done = subprocess.run(
        [str(ENSURE)], capture_output=True, text=True, check=False, timeout=900, env=env
    )
    assert done.returncode == 0, f"ensure-htcondor24 failed:\n{done.stderr}"
    return done.stdout.strip().splitlines()[-1]


def job_ads(python: str, batches: list[Batch]) -> list[list[dict[str, Any]]]:
    request = [{"text": b.text, "items": list(b.items) or None} for b in batches]
    env = {**os.environ, "CONDOR_CONFIG": "/dev/null"}
    done = subprocess.run(
        [python, str(SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    ads: list[list[dict[str, Any]]] = json.loads(done.stdout)
    return ads


def _prepared(flavour: str, base: Path) -> list[tuple[int, dict[str, str]]]:
    """The back end's keys for each translation; their initialdirs made (HTCondor checks)."""
    for panda_id, _ in descriptions(flavour):
        (base / f"tok{panda_id}").mkdir(parents=True, exist_ok=True)
    return [
        (
            panda_id,
            prepare(
                text,
                token=f"tok{panda_id}",
                ce_name="condor1",
                iwd=str(base / f"tok{panda_id}"),
                default_grid_resource=None,
                proxy=None,
                token_file=None,
            ),
        )
        for panda_id, text in descriptions(flavour)
    ]


@pytest.mark.parametrize("flavour", ["condor", "arc"])
def test_job_ads_of_single_and_batched_submissions(
    python24: str, flavour: str, tmp_path: Path
) -> None:
    prepared = _prepared(flavour, tmp_path)
    keys = [k for _, k in prepared]
    alone = [Batch((n,), "".join(f"{a} = {b}\n" for a, b in k.items())) for n, k in enumerate(keys)]
    batches = combine(keys)
    assert any(len(b.items) > 1 for b in batches)  # a real batch (one cluster, several procs)
    singles = job_ads(python24, alone)
    batched: list[dict[str, Any]] = [{}] * len(keys)
    for b, ads in zip(batches, job_ads(python24, batches), strict=True):
        assert len(ads) == len(b.indices)
        for index, ad in zip(b.indices, ads, strict=True):
            batched[index] = ad
    for (panda_id, k), ads, ad in zip(prepared, singles, batched, strict=True):
        [single] = ads
        for job in (single, ad):
            assert job["JobUniverse"] == 9
            if flavour == "condor":
                assert job["GridResource"] == f"condor {HOST} {HOST}:9619"
            else:
                assert job["GridResource"] == "arc https://arc.example.org/arex"
            assert job["ActToken"] == f"tok{panda_id}"
            assert job["ActCE"] == "condor1"
            assert job["PandaID"] == panda_id
            assert job["Iwd"] == str(tmp_path / f"tok{panda_id}")
            assert job["RequestCpus"] == int(k["request_cpus"])
            assert job["RequestMemory"] == int(k["request_memory"])
            if flavour == "condor":  # what an HTCondor-CE's router reads; memory: the whole job
                assert job["xcount"] == job["RequestCpus"]
                assert job["maxMemory"] == job["RequestMemory"]
                assert job["maxWallTime"] == int(k["MY.maxWallTime"])
            else:  # the ARC grid type: memory per slot, times in ArcResources, BatchQueue
                assert job["ArcResources"] == k["arc_resources"]
                assert job["BatchQueue"] == k["batch_queue"] == "mcore"
                assert not {"xcount", "maxMemory", "maxWallTime", "remote_queue"} & set(job)
            assert job["Out"].endswith(f"/{panda_id}.out") and job["UserLog"].endswith(".log")
        # The batch's item data gives each proc exactly what its description alone gives.
        for attribute in (
            *("Args", "Arguments", "Environment", "TransferInput", "Out", "Err"),
            *("RequestCpus", "RequestMemory", "ArcResources", "BatchQueue", "maxWallTime"),
        ):
            assert single.get(attribute) == ad.get(attribute), attribute


ARC_PARSE = REPO / "tests" / "support" / "arc_parse.py"
#: The CE of the translation tests, reached through HTCondor's ARC grid type.
ARC_VIA_CONDOR = FLAVOURS["arc"]


def _arc_parse(items: list[Any]) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["/usr/bin/python3", str(ARC_PARSE)],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"ARC parser failed (ensure-arc-python): {done.stderr}"
    parsed: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(parsed) == len(items)
    return parsed


def _sized_jobs() -> list[JobInput]:
    """Every truepilot translation case, and jobs of other sizes on queues of other limits."""
    base = next(c.job for c in cases() if c.name == "analysis_truepilot")
    long_queue = replace(base.queue, max_walltime_minutes=4321, max_memory_mb=48000)
    extra: list[tuple[dict[str, Any], Queue]] = [
        ({"coreCount": 8, "minRamCount": 16000, "resource_type": "MCORE"}, base.queue),
        ({"coreCount": 8, "minRamCount": 30000, "resource_type": "MCORE_VHIMEM"}, long_queue),
        ({"coreCount": 16, "minRamCount": 64000, "maxWalltime": 3600}, long_queue),  # capped
        ({"coreCount": 1, "minRamCount": 5000, "resource_type": "SCORE_HIMEM"}, long_queue),
    ]
    jobs = [c.job for c in cases() if c.job.queue.truepilot]
    for n, (changes, queue) in enumerate(extra):
        panda_id = 9100 + n
        spec = {**base.spec, "PandaID": panda_id, **changes}
        jobs.append(replace(base, panda_id=panda_id, spec=spec, queue=queue))
    return jobs


def test_condor_g_gives_an_arc_ce_the_size_direct_xrsl_gives(python24: str, tmp_path: Path) -> None:
    """act's submit description for an ARC CE -> the full job ad (real htcondor<25) -> the ADL
    HTCondor's ARC grid type writes from it (tests/support/arc_adl.py, a labelled TEST DOUBLE of
    arcjob.cpp's ArcJob::buildJobADL) -> ARC's own parser; the direct xRSL of the same job on the
    same CE -> ARC's own parser. Both must ask for the same cores, memory per slot, wall and CPU
    time, queue and runtime environment."""
    jobs = _sized_jobs()
    xrsl, adl, expected = [], [], []
    for job in jobs:
        inputs = tmp_path / "inputs" / str(job.panda_id)
        direct_xrsl = to_xrsl(job, ARC_VIA_CONDOR, input_dir=inputs)
        via_condor = to_condor(job, ARC_VIA_CONDOR, input_dir=inputs, web_dir=tmp_path / "web")
        (tmp_path / f"tok{job.panda_id}").mkdir()
        keys = prepare(
            via_condor.description,
            token=f"tok{job.panda_id}",
            ce_name="condor1",
            iwd=str(tmp_path / f"tok{job.panda_id}"),
            default_grid_resource=None,
            proxy=None,
            token_file=None,
        )
        [[ad]] = job_ads(python24, [Batch((0,), "".join(f"{k} = {v}\n" for k, v in keys.items()))])
        xrsl.append(direct_xrsl.description)
        adl.append({"text": build_job_adl(ad, delegation_id="deleg-1"), "language": "emies:adl"})
        expected.append(direct_xrsl)
    parsed = _arc_parse(xrsl + adl)
    for job, translation, direct, via in zip(
        jobs, expected, parsed[: len(jobs)], parsed[len(jobs) :], strict=True
    ):
        assert "error" not in direct and "error" not in via, (job.panda_id, direct, via)
        cores = translation.cores
        seconds = translation.walltime_minutes * 60
        # What the CE is asked for, read back by ARC from both descriptions.
        assert via["slots"] == (cores if cores > 1 else -1)  # ADL: no SlotRequirement for 1
        assert direct["slots"] == cores  # xRSL count; ARC's default of an unset count is 1 too
        assert via["slots_per_host"] == direct["slots_per_host"]
        assert via["memory"] == direct["memory"] == translation.memory_mb // cores
        assert via["walltime_seconds"] == direct["walltime_seconds"] == seconds
        assert via["cputime_seconds"] == direct["cputime_seconds"] == seconds * cores
        assert via["queue"] == direct["queue"] == "mcore"
        assert via["runtime_environments"] == direct["runtime_environments"] == ["ENV/PROXY"]
        assert via["executable"] in ("runpilot2-wrapper.sh", "/bin/bash")
    # The extra jobs really differ: 1, 4 (base64 case), 8 and 16 cores, several memory sizes.
    assert {t.cores for t in expected} >= {1, 4, 8, 16}
    assert len({t.memory_mb // t.cores for t in expected}) >= 4
    assert len({t.walltime_minutes for t in expected}) >= 2


def test_the_adl_double_reads_only_what_arcjob_cpp_reads() -> None:
    """The HTCondor-CE attributes mean nothing to the ARC grid type: an ad with only them gets
    no size at all, so sizing through them (act's old description) never reached an ARC CE."""
    ad = {
        "Iwd": "/tmp/x",
        "Cmd": "/bin/true",
        "RequestCpus": 8,
        "RequestMemory": 16000,
        "xcount": 8,
        "maxMemory": 16000,
        "maxWallTime": 120,
        "remote_queue": "mcore",
        "BatchRuntime": 7200,
    }
    [fields] = _arc_parse([{"text": build_job_adl(ad), "language": "emies:adl"}])
    assert fields["slots"] == 8
    assert fields["memory"] == 16000  # RequestMemory is per slot: 8 x 16000 MB on an 8-core job
    assert fields["walltime_seconds"] == -1 and fields["cputime_seconds"] == -1
    assert fields["queue"] == ""


def _grami(control: Path, job_id: str) -> dict[str, str]:
    """The job options A-REX hands its batch system back end (``job.<id>.grami``)."""
    path = control / f"job.{job_id}.grami"
    deadline = time.monotonic() + 60
    while not path.exists():
        assert time.monotonic() < deadline, f"A-REX wrote no {path}"
        time.sleep(0.5)
    options = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("joboption_"):
            options[key] = value.strip("'")
    return options


@pytest.mark.arc
def test_the_real_arc_ce_sizes_both_descriptions_alike(
    python24: str, arc_ce: RealArc, tmp_path: Path
) -> None:
    """The real A-REX takes the direct xRSL and the ADL HTCondor would write for the same
    8-core job and prepares the same batch job from both: the job options it passes its batch
    back end (count, memory per slot, wall and CPU time, queue, runtime environment)."""
    control = Path(os.environ.get("ACT_ARC_DIR", "/var/lib/act-arc-ce")) / "control"
    assert os.access(control, os.R_OK), f"cannot read A-REX's control directory {control}"
    base = next(c.job for c in cases() if c.name == "analysis_truepilot")
    spec = {**base.spec, "PandaID": 9200, "coreCount": 8, "minRamCount": 20000}
    job = replace(base, panda_id=9200, spec=spec)
    ce = replace(ARC_VIA_CONDOR, endpoint=arc_ce.url, ce_queue="fork")  # the test CE's queue
    direct = to_xrsl(job, ce, input_dir=tmp_path / "inputs")
    via = to_condor(job, ce, input_dir=tmp_path / "inputs", web_dir=tmp_path / "web")
    (tmp_path / "iwd").mkdir()
    keys = prepare(
        via.description,
        token="tok9200",
        ce_name="condor1",
        iwd=str(tmp_path / "iwd"),
        default_grid_resource=None,
        proxy=None,
        token_file=None,
    )
    [[ad]] = job_ads(python24, [Batch((0,), "".join(f"{k} = {v}\n" for k, v in keys.items()))])
    client = arc_ce.client()
    ids: list[str] = []
    try:
        for description in (direct.description, build_job_adl(ad)):
            [created] = client.submit([description])
            assert created.ok, created
            ids.append(created.id)
        from_xrsl, from_adl = (_grami(control, job_id) for job_id in ids)
    finally:
        if ids:
            client.kill(ids)
            client.clean(ids)
        client.close()
    seconds = direct.walltime_minutes * 60
    expected = {
        "joboption_count": "8",
        "joboption_countpernode": "8",
        "joboption_memory": str(direct.memory_mb // 8),
        "joboption_walltime": str(seconds),
        "joboption_cputime": str(seconds * 8),
        "joboption_queue": "fork",
        "joboption_runtime_0": "ENV/PROXY",
    }
    assert {k: from_xrsl.get(k) for k in expected} == expected
    assert {k: from_adl.get(k) for k in expected} == expected
