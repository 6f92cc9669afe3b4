"""How a job is sized (act/atlas/translate/sizing.py), rule by rule, table-driven; and the real
pilot3 launcher's own argument parser on every ``--resource-type`` act can write."""

from __future__ import annotations

import re
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from act.atlas.queues import DEFAULT_MAX_WALLTIME_MINUTES
from act.atlas.translate import JobInput, TranslationError, sizing
from act.atlas.translate.common import plan
from act.atlas.translate.sizing import PANDA_RESOURCE_TYPES, PILOT_RESOURCE_TYPES
from tests.support.pilot3 import Pilot3
from tests.support.translate_cases import NATIVE, NATIVE_MCORE, TRUEPILOT

# NATIVE: walltime limits [60, 2880] minutes, no memory maximum, margin 1.5 (the default);
# TRUEPILOT: maximum 1440 minutes.


def _job(queue: Any = NATIVE, **spec: Any) -> JobInput:
    return JobInput(
        panda_id=1,
        spec={"PandaID": 1, **spec},
        spec_text="{}",
        queue=queue,
        attempt=0,
        log_url="https://x.example.org/1.out",
    )


@pytest.mark.parametrize(
    ("spec", "minutes"),
    [
        # maxWalltime (s) is PanDA's expected wall time: x 1.5, whatever maxCpuCount says.
        ({"maxWalltime": 3600, "maxCpuCount": 10**6}, 90),
        ({"maxWalltime": "3600", "maxCpuCount": 600}, 90),  # legacy API: text
        ({"maxWalltime": 3600, "coreCount": 16}, 90),  # already per core: no x 2
        ({"maxWalltime": 7201}, 181),  # rounded up to the minute
        # Without maxWalltime (missing, "NULL", 0, negative): aCT's rule on maxCpuCount.
        ({"maxCpuCount": 14400}, 360),
        ({"maxWalltime": "NULL", "maxCpuCount": 14400}, 360),
        ({"maxWalltime": 0, "maxCpuCount": 14400}, 360),
        ({"maxWalltime": -1, "maxCpuCount": 14400}, 360),
        ({"maxWalltime": None, "maxCpuCount": "14400"}, 360),
        # aCT's placeholder: 600 s means 24 h (x 1.5 = 36 h), not a 60-minute job.
        ({"maxCpuCount": 600}, 2160),
        ({"maxCpuCount": "600", "maxWalltime": "NULL"}, 2160),
        ({"maxCpuCount": 601}, 60),  # a real (short) estimate: the one-hour floor
        # Above 15 cores the maxCpuCount estimate is doubled (aCT).
        ({"maxCpuCount": 14400, "coreCount": 16}, 720),
        ({"maxCpuCount": 14400, "coreCount": 15}, 360),
        ({"maxCpuCount": 600, "coreCount": 64}, 2880),  # 24 h x 1.5 x 2, capped
        # Limits: at least an hour, at most the queue's maximum.
        ({"maxWalltime": 60}, 60),
        ({"maxWalltime": 10**6}, 2880),
        ({}, 2880),  # nothing: 2 days x 1.5, capped
        ({"maxCpuCount": "NULL"}, 2880),
        ({"maxCpuCount": 0}, 2880),
        ({"maxCpuCount": -600}, 2880),
    ],
)
def test_walltime_of_a_native_job(spec: dict[str, Any], minutes: int) -> None:
    assert plan(_job(**spec)).walltime_minutes == minutes


@pytest.mark.parametrize(
    ("queue_changes", "spec", "minutes"),
    [
        ({"walltime_margin": 1.2}, {"maxWalltime": 3600}, 72),
        ({"walltime_margin": 1.0}, {"maxCpuCount": 14400}, 240),
        ({"min_walltime_minutes": 240}, {"maxWalltime": 3600}, 240),
        ({"min_walltime_minutes": 30}, {"maxWalltime": 600}, 60),  # never below an hour
        ({"min_walltime_minutes": 5000}, {"maxWalltime": 600}, 2880),  # the maximum wins
        ({"max_walltime_minutes": 120}, {"maxWalltime": 7200}, 120),
        ({"max_walltime_minutes": None}, {"maxWalltime": 10**7}, DEFAULT_MAX_WALLTIME_MINUTES),
    ],
)
def test_walltime_follows_the_queue(
    queue_changes: dict[str, Any], spec: dict[str, Any], minutes: int
) -> None:
    assert plan(_job(replace(NATIVE, **queue_changes), **spec)).walltime_minutes == minutes


@pytest.mark.parametrize("spec", [{}, {"maxWalltime": 600}, {"maxCpuCount": 600}])
def test_a_truepilot_job_gets_the_queue_maximum(spec: dict[str, Any]) -> None:
    # The pilot may run more jobs after this one (see sizing.py): the slot lasts the queue max.
    assert plan(_job(TRUEPILOT, **spec)).walltime_minutes == TRUEPILOT.max_walltime_minutes


@pytest.mark.parametrize(
    ("ram", "cores", "label", "total"),
    [
        (3001, 1, "managed", 3500),  # rounded up to 500 MB
        ("2500", 1, "managed", 2500),
        (500, 1, "managed", 2000),  # single core: at least 2000
        (0, 1, "managed", 4000),  # 0 = not given
        ("NULL", 1, "managed", 4000),
        ("NULL", 1, "user", 2000),
        ("NULL", 8, "managed", 16000),  # multicore default: 2000 per core
        (16000, 8, "managed", 16000),
        (14400, 8, "managed", 14504),  # PanDA's 0.9 of 16000: 14500, then 1813 per core
        (1000, 8, "managed", 2000),  # at least 250 per core
        (100, 1, "user", 2000),  # at least 1000, then the single-core floor
        (32000, 16, "managed", 32000),
    ],
)
def test_memory_of_the_whole_job(ram: Any, cores: int, label: str, total: int) -> None:
    p = plan(_job(minRamCount=ram, coreCount=cores, prodSourceLabel=label))
    assert p.memory_mb == total
    assert p.memory_per_core_mb * p.cores == total  # whole multiple: xRSL gets the per-core part


@pytest.mark.parametrize(
    ("maximum", "ram", "cores", "total"),
    [(3000, 8000, 1, 3000), (12001, 16000, 8, 12000), (16000, 8000, 8, 8000), (7, 8000, 8, 8)],
)
def test_memory_never_above_the_queue_maximum(
    maximum: int, ram: int, cores: int, total: int
) -> None:
    queue = replace(NATIVE, max_memory_mb=maximum)
    assert plan(_job(queue, minRamCount=ram, coreCount=cores)).memory_mb == total


@pytest.mark.parametrize(
    ("given", "cores", "ram", "expected"),
    [
        # The four the pilot accepts are kept, whatever the job's size.
        ("SCORE", 1, 2000, "SCORE"),
        ("MCORE", 8, 16000, "MCORE"),
        ("SCORE_HIMEM", 1, 6000, "SCORE_HIMEM"),
        ("MCORE_HIMEM", 8, 32000, "MCORE_HIMEM"),
        # PanDA's others map to the nearest the pilot accepts.
        ("SCORE_LOMEM", 1, 900, "SCORE"),
        ("MCORE_LOMEM", 8, 7200, "MCORE"),
        ("SCORE_VHIMEM", 1, 12000, "SCORE_HIMEM"),
        ("MCORE_VHIMEM", 8, 64000, "MCORE_HIMEM"),
        ("mcore_himem", 8, 32000, "MCORE_HIMEM"),
        # Unknown, PanDA's "Undefined", "NULL", missing: from the job's cores and memory.
        ("Undefined", 1, 2000, "SCORE"),
        ("Undefined", 1, 2001, "SCORE_HIMEM"),
        ("NULL", 8, 16000, "MCORE"),
        ("NULL", 8, 16004, "MCORE"),  # PanDA: round(16004 / 8) = 2000, not above
        ("NULL", 8, 16008, "MCORE_HIMEM"),
        (None, 4, 6000, "MCORE"),
        ("GPU", 1, 3000, "SCORE_HIMEM"),
        ("ANY", 2, 3000, "MCORE"),
        (None, 1, 0, "SCORE_HIMEM"),  # no minRamCount: act asks 4000 MB for production
        (None, 8, 0, "MCORE"),  # 2000 per core
    ],
)
def test_resource_type_is_one_the_pilot_accepts(
    given: str | None, cores: int, ram: int, expected: str
) -> None:
    spec: dict[str, Any] = {"coreCount": cores, "minRamCount": ram}
    if given is not None:
        spec["resource_type"] = given
    p = plan(_job(**spec))
    assert p.resource_type == expected in PILOT_RESOURCE_TYPES
    at = p.arguments.index("--resource-type")
    assert p.arguments[at + 1] == expected


def test_the_legacy_resource_type_key_is_read_too() -> None:
    assert plan(_job(resourceType="MCORE_LOMEM", coreCount=8)).resource_type == "MCORE"
    # resource_type (what the server sends) wins over resourceType.
    both = _job(resource_type="SCORE_VHIMEM", resourceType="SCORE")
    assert plan(both).resource_type == "SCORE_HIMEM"


def test_a_resource_type_that_is_not_text_names_the_field() -> None:
    with pytest.raises(TranslationError) as error:
        plan(_job(resource_type=["SCORE"]))
    assert (error.value.panda_id, error.value.field) == (1, "resource_type")


def test_every_panda_resource_type_maps_into_the_pilots_set() -> None:
    assert set(PANDA_RESOURCE_TYPES.values()) == set(PILOT_RESOURCE_TYPES)
    for name in PILOT_RESOURCE_TYPES:
        assert PANDA_RESOURCE_TYPES[name] == name


def test_the_readme_states_the_rules_of_the_code() -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("### How a job is sized", 1)[1].split("\n## ", 1)[0]
    for panda, pilot in PANDA_RESOURCE_TYPES.items():
        assert panda in section and (panda == pilot or f"{panda} → {pilot}" in section)
    numbers = (
        sizing.PLACEHOLDER_CPU_SECONDS,
        sizing.DEFAULT_WALLTIME_MARGIN,
        sizing.LARGE_CORE_COUNT,
        sizing.MIN_WALLTIME_MINUTES,
        sizing.MEMORY_STEP_MB,
        sizing.MIN_MEMORY_MB,
        sizing.MIN_SINGLE_CORE_MB,
        sizing.MIN_PER_CORE_MB,
        sizing.DEFAULT_PER_CORE_MB,
        sizing.DEFAULT_SINGLE_CORE_PRODUCTION_MB,
        sizing.HIMEM_THRESHOLD_MB,
    )
    for number in numbers:
        assert re.search(rf"(?<![\d.]){re.escape(str(number))}(?![\d.])", section), number
    for key in ("min_walltime_minutes", "walltime_margin", "max_walltime_minutes", "max_memory_mb"):
        assert f"`{key}`" in section


# -- the real pilot3 launcher --------------------------------------------------------------

#: What runpilot2-wrapper.sh (PanDAWMS/pilot-wrapper) keeps for itself: options with a value,
#: and flags. It starts ``pilot.py -q <q> -i <i> -j <j>`` followed by every other argument.
_WRAPPER_OPTIONS = {"-q", "-i", "-j", "-r", "-s", "--piloturl", "--pilotversion", "--pythonversion"}
_WRAPPER_FLAGS = {"--mute", "--container", "--localpy"}


def _as_the_wrapper_starts_the_pilot(arguments: tuple[str, ...]) -> list[str]:
    """TEST DOUBLE of the wrapper's argument split (its ``case $key`` loop and ``pilot_cmd``)."""
    kept, values, words = [], {"-i": "PR", "-j": "managed"}, list(arguments)
    while words:
        word = words.pop(0)
        if word in _WRAPPER_OPTIONS:
            values[word] = words.pop(0)
        elif word not in _WRAPPER_FLAGS:
            kept.append(word)
    return ["-q", values["-q"], "-i", values["-i"], "-j", values["-j"], *kept]


_GET_ARGS = """
import contextlib, importlib.util, io
spec = importlib.util.spec_from_file_location("pilot_launcher", ARG["launcher"])
launcher = importlib.util.module_from_spec(spec)
spec.loader.exec_module(launcher)
RESULT = []
for argv in ARG["argvs"]:
    sys.argv = ["pilot.py", *argv]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            args = launcher.get_args()
    except SystemExit as stop:
        RESULT.append({"exit": stop.code, "stderr": err.getvalue()})
    else:
        RESULT.append({"resource_type": args.resource_type, "queue": args.queue})
"""


def test_the_real_pilot_accepts_every_resource_type_act_writes(pilot3: Pilot3) -> None:
    """pilot.py's own get_args() (the argparse that exits 2 on a bad --resource-type) on the
    full argument lists act writes, native and truepilot, for every PanDA resource type and for
    jobs without one."""
    truepilot = replace(TRUEPILOT, pilot_args="")  # the test queue's args are invented words
    jobs = [
        _job(queue, resource_type=given, coreCount=cores, minRamCount=ram)
        for queue in (NATIVE, NATIVE_MCORE, truepilot)
        for given, cores, ram in [
            *((name, 8 if name.startswith("MCORE") else 1, 2000) for name in PANDA_RESOURCE_TYPES),
            ("Undefined", 1, 6000),
            ("NULL", 8, 8000),
            (None, 8, 40000),
        ]
    ]
    plans = [plan(job) for job in jobs]
    assert {p.resource_type for p in plans} == set(PILOT_RESOURCE_TYPES)
    argvs = [_as_the_wrapper_starts_the_pilot(p.arguments) for p in plans]
    parsed = pilot3.call(_GET_ARGS, {"launcher": str(pilot3.launcher), "argvs": argvs})
    for p, argv, result in zip(plans, argvs, parsed, strict=True):
        assert result == {"resource_type": p.resource_type, "queue": p.queue.name}, (argv, result)


def test_the_real_pilot_refuses_panda_types_it_does_not_know(pilot3: Pilot3) -> None:
    """Why the mapping exists: the launcher itself stops at once on the types PanDA also has."""
    argv = ["-q", "Q", "--pilot-user", "ATLAS", "-w", "generic", "--resource-type"]
    for name in ("SCORE_LOMEM", "MCORE_VHIMEM"):
        done = subprocess.run(
            [str(pilot3.python), str(pilot3.launcher), *argv, name],
            capture_output=True, text=True, timeout=120, check=False, cwd=pilot3.src,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert f"invalid choice: '{name}'" in done.stderr
