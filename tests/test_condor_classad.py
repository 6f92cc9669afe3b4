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
from pathlib import Path
from typing import Any

import pytest

from act.condor.submission import Batch, combine, prepare
from tests.support.condor import descriptions

pytestmark = pytest.mark.condor_classad

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
    for pandaid, _ in descriptions(flavour):
        (base / f"tok{pandaid}").mkdir(parents=True, exist_ok=True)
    return [
        (
            pandaid,
            prepare(
                text,
                token=f"tok{pandaid}",
                ce_name="condor1",
                iwd=str(base / f"tok{pandaid}"),
                default_grid_resource=None,
                proxy=None,
                token_file=None,
            ),
        )
        for pandaid, text in descriptions(flavour)
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
    for (pandaid, k), ads, ad in zip(prepared, singles, batched, strict=True):
        [single] = ads
        for job in (single, ad):
            assert job["JobUniverse"] == 9
            if flavour == "condor":
                assert job["GridResource"] == f"condor {HOST} {HOST}:9619"
            else:
                assert job["GridResource"] == "arc https://arc.example.org/arex"
            assert job["ActToken"] == f"tok{pandaid}"
            assert job["ActCE"] == "condor1"
            assert job["PandaID"] == pandaid
            assert job["Iwd"] == str(tmp_path / f"tok{pandaid}")
            assert job["RequestCpus"] == int(k["request_cpus"]) == job["xcount"]
            assert job["RequestMemory"] == int(k["request_memory"]) == job["maxMemory"]
            assert job["maxWallTime"] == int(k["MY.maxWallTime"])
            assert job["Out"].endswith(f"/{pandaid}.out") and job["UserLog"].endswith(".log")
        # The batch's item data gives each proc exactly what its description alone gives.
        for attribute in ("Args", "Arguments", "Environment", "TransferInput", "Out", "Err"):
            assert single.get(attribute) == ad.get(attribute), attribute
