"""The update fields act sends, held against the REAL update functions of both PanDA servers.

* panda-server 1.0.4 (the new API): ``pandaserver.api.v1.pilot_api.update_job`` is imported and
  introspected in the PanDA server's own venv (``tests/harness/panda-server env``:
  PANDA_PYTHON), and act's typed values are put through the same two checks its
  ``request_validation`` makes before the function runs (binding the arguments; ``isinstance``
  of each value against its annotation);
* panda-server 0.8.1 (the legacy API, not installable next to 1.0.4): the sdist's
  ``JobDispatcher.updateJob`` is read with ``ast`` (``tests/harness/ensure-panda-legacy-source``).
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from act.atlas.update_fields import (
    LEGACY_ARGS,
    LEGACY_TO_NEW,
    NEW_ARGS,
    for_legacy_api,
    for_new_api,
)
from tests.support.panda_real import PandaServer

REPO = Path(__file__).resolve().parent.parent
LEGACY_HARNESS = REPO / "tests" / "harness" / "ensure-panda-legacy-source"

#: Run in the PanDA server's interpreter: the real update_job's signature and, for ARG (a body
#: act would send), the checks of pandaserver.api.v1.common.request_validation.
INTROSPECT = r"""
import inspect, json, sys
from pandaserver.api.v1 import pilot_api
sig = inspect.signature(pilot_api.update_job)
params = {name: str(p.annotation) for name, p in sig.parameters.items()}
body = json.loads(sys.stdin.read())
problems = []
try:
    sig.bind(None, **body)
except TypeError as error:
    problems.append(f"Argument error: {error}")
for name, value in body.items():
    if name in sig.parameters and not isinstance(value, sig.parameters[name].annotation):
        problems.append(f"Type error: {name!r} must be {params[name]}, got {type(value).__name__}")
print(json.dumps({"params": params, "problems": problems}))
"""

#: A final update with every field pilot3 or act puts in it, with the awkward types seen.
EVERY_FIELD: dict[str, Any] = {
    "timestamp": "2026-12-07T11:30:38+00:00",
    "siteName": "ACT_TEST_QUEUE",
    "node": "wn042.act.test",
    "schedulerID": "act",
    "pilotID": "https://logs.example.org/act/1.out|PR|3.7.0.36",
    "batchID": 123456,  # a number: the API wants text
    "startTime": 1796639438.5501385,  # pilot3's epoch float
    "endTime": "1796643038.6",
    "xml": {"A.root": {"guid": "g", "fsize": 10, "adler32": "0a0b0c0d", "surl": "file:///a"}},
    "metaData": '{"exitCode": 0}',
    "stdout": "payload stdout tail",
    "coreCount": "8",
    "meanCoreCount": 7.5,  # pilot3's mean: the API wants an int
    "nEvents": 10,
    "nInputFiles": "2",
    "cpuConsumptionTime": 7000.4,
    "cpuConversionFactor": 1,
    "cpuConsumptionUnit": "s+AMD EPYC+AVX2",
    "cpu_architecture_level": "x86_64-v3",
    "maxRSS": 1_000_000, "maxVMEM": "2000000", "maxSWAP": 0, "maxPSS": 900_000,
    "avgRSS": 800_000.5, "avgVMEM": 1_500_000, "avgSWAP": 0, "avgPSS": 700_000,
    "totRCHAR": 10240, "totWCHAR": 20480, "totRBYTES": 4096, "totWBYTES": 8192,
    "rateRCHAR": 12.5, "rateWCHAR": 25, "rateRBYTES": 1, "rateWBYTES": 2,
    "jobMetrics": "nEvents=10 coreCount=8",
    "pilotTiming": "1|2|3|4|5|6",
    "pilotErrorCode": 0, "pilotErrorDiag": "", "exeErrorCode": "0", "exeErrorDiag": "OK",
    "transExitCode": 0,
    "pilotLog": "",
    "jobSubStatus": "",
    "corruptedFiles": "",
    "grid": "ARC", "source_site": "ACT_TEST_QUEUE", "destination_site": "ACT_TEST_QUEUE",
    "computingElement": "arc1.act.test",
    "workdir": "/scratch/job",
}  # fmt: skip


def introspect(server: PandaServer, body: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(
        [str(server.python), "-c", INTROSPECT],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=server.home,
        env={"PATH": "/usr/bin:/bin", "PANDA_HOME": str(server.home), "LC_ALL": "C.UTF-8"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def kind(annotation: str) -> str:
    return {
        "<class 'int'>": "int",
        "<class 'str'>": "str",
        "float | int": "number",
        "int | float": "number",
    }[annotation]


@pytest.mark.panda
def test_the_new_api_names_and_types_are_those_of_the_real_update_job(
    panda_server: PandaServer,
) -> None:
    params = introspect(panda_server, {})["params"]
    real = {name: kind(annotation) for name, annotation in params.items() if name != "req"}
    assert real == NEW_ARGS
    assert set(LEGACY_TO_NEW.values()) == set(real)
    # what the new API does not take at all: act never sends it there
    for missing in ("computing_element", "computingElement", "timestamp", "workdir"):
        assert missing not in params


@pytest.mark.panda
def test_every_field_act_sends_passes_the_real_servers_checks(panda_server: PandaServer) -> None:
    converted = for_new_api(EVERY_FIELD)
    assert converted.refused == []
    assert sorted(converted.dropped) == ["computingElement", "timestamp", "workdir"]
    body = {**converted.values, "job_id": 1, "job_status": "finished", "attempt_nr": 1}
    assert introspect(panda_server, body)["problems"] == []
    # the values PanDA stores, typed as it wants them
    assert body["batch_id"] == "123456" and body["mean_core_count"] == 8
    assert body["start_time"] == "2026-12-07 10:30:38" and body["end_time"] == "2026-12-07 11:30:38"
    assert body["core_count"] == 8 and body["n_input_files"] == 2
    assert body["cpu_consumption_time"] == 7000 and body["exe_error_code"] == 0
    assert body["max_vmem"] == 2_000_000 and body["avg_rss"] == 800_000.5
    assert json.loads(body["job_output_report"]) == EVERY_FIELD["xml"]
    # and without act's typing, the real checks refuse them: the reason for it
    raw = {LEGACY_TO_NEW[k]: v for k, v in EVERY_FIELD.items() if k in LEGACY_TO_NEW}
    raw = {**raw, "job_id": 1, "job_status": "finished", "computing_element": "ce"}
    problems = " ".join(introspect(panda_server, raw)["problems"])
    assert "computing_element" in problems
    for name in ("mean_core_count", "batch_id", "start_time", "core_count"):
        assert repr(name) in problems, name


def test_values_the_new_api_would_refuse_are_named_and_not_sent() -> None:
    converted = for_new_api(
        {"coreCount": "eight", "maxRSS": float("nan"), "startTime": -5, "nEvents": True}
    )
    assert converted.values == {}
    reasons = dict(item.split(": ", 1) for item in converted.refused)
    assert "not a number" in reasons["coreCount"] and "finite" in reasons["maxRSS"]
    assert "negative" in reasons["startTime"] and "not a number" in reasons["nEvents"]


def _legacy_update_job_args(source: Path) -> list[str]:
    tree = ast.parse((source / "pandaserver/jobdispatcher/JobDispatcher.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "updateJob":
            return [arg.arg for arg in node.args.args]
    raise AssertionError("no module-level updateJob in JobDispatcher.py")


@pytest.fixture(scope="module")
def legacy_source() -> Path:
    proc = subprocess.run(
        [str(LEGACY_HARNESS)], capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"{LEGACY_HARNESS} failed: {proc.stderr[-2000:]}", pytrace=False)
    line = proc.stdout.strip().splitlines()[-1]
    return Path(line.split("=", 1)[1].strip("'\""))


def test_the_legacy_names_are_those_of_the_real_update_job_0_8_1(legacy_source: Path) -> None:
    args = _legacy_update_job_args(legacy_source)
    assert args[0] == "req"
    assert set(args[1:]) == LEGACY_ARGS
    assert set(LEGACY_TO_NEW) <= LEGACY_ARGS  # every field act keeps has its legacy name
    assert {"computingElement", "timestamp"} <= LEGACY_ARGS  # sent to the legacy API
    converted = for_legacy_api(EVERY_FIELD)
    assert converted.refused == [] and converted.dropped == []
    assert all(isinstance(value, str) for value in converted.values.values())
    assert converted.values["computingElement"] == "arc1.act.test"
    assert converted.values["startTime"] == "2026-12-07 10:30:38"
    assert converted.values["meanCoreCount"] == "7.5"
    # an unknown name would make 0.8.1's updateJobsInBulk fail the whole call: never sent
    assert for_legacy_api({"madeUp": 1, "node": "wn"}).values == {"node": "wn"}
