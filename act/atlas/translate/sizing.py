"""How a job is sized: its cores, wall time, memory and resource type, from the job and its queue.

This module is the one place the sizing rules live: every CE description (xRSL, HTCondor, local)
is written from what :func:`size` decides, and the README's "How a job is sized" shows the same
table. PanDA's fields are read as the PanDA server fills them (panda-server 1.0.4:
``srvcore/CoreUtils.getJobMaxWalltime``, ``taskbuffer/JobUtils.getJobMinRamCount``,
``taskbuffer/ResourceSpec.py``); a rule taken from aCT (``aCTPanda2Xrsl``) says so.

Cores
    ``coreCount``; the queue's ``corecount`` when the job gives none (or less than 1).
Wall time of a native job
    ``maxWalltime`` (seconds: the wall time PanDA expects, already divided by the queue's
    cores, core power and the task's CPU efficiency, plus its base wall time) times the queue's
    ``walltime_margin`` (default 1.5: aCT's "JEDI underestimates walltime by 50%").
    Without ``maxWalltime`` (missing, "NULL", 0), aCT's rule on ``maxCpuCount`` (seconds):
    600 is a placeholder read as 24 h (aCT's "hack for group production"), missing or <= 0
    is 2 days; times the margin, and times 2 again above 15 cores.
Wall time limits
    At least the queue's minimum (``min_walltime_minutes``, else CRIC ``mintime``; never
    below 60 minutes, aCT's floor for short analysis estimates), at most the queue's maximum
    (``max_walltime_minutes``, else CRIC ``maxtime`` or its CEs' ``ce_queue_maxwctime``, else
    7 days); the maximum wins when the two conflict.
Wall time of a truepilot job
    The queue's maximum. pilot3 outside Harvester reads the shipped job and then, in PUSH mode,
    asks PanDA for more jobs while the queue's ``timefloor`` allows (``pilot/control/job.py``
    ``proceed_with_getjob``; ATLAS's ``allow_timefloor`` is always true), limiting itself by
    the queue's ``maxtime`` (``pilot/control/monitor.py`` ``get_max_running_time``): a slot
    sized for the first job would cut the next ones. aCT and Harvester's worker maker do the
    same.
CPU time
    Wall time times cores (xRSL ``cputime``, ADL ``TotalCPUTime``).
Memory
    ``minRamCount``: MB for the whole job (PanDA sets it core-scaled and already "compensated"
    by 0.9; its brokerage compares it with the queue's ``maxrss``). Without it, 2000 MB per
    core for multicore, 4000 MB (production) or 2000 MB (analysis) for one core (aCT's
    defaults). Then: at least 1000 MB; rounded up to aCT's 500 MB units (few distinct sizes
    for the batch system to pack, and part of PanDA's 0.9 given back); one core at least
    2000 MB (aCT's "min 2GB for single core": the standard grid slot is 2 GB per core, PanDA's
    HIMEM threshold too); at least 250 MB per core; at most the queue's maximum
    (``max_memory_mb``, else CRIC ``maxrss``: the whole job), always a whole multiple of the
    cores.
Memory per description
    Per slot (memory / cores) for ARC: xRSL ``memory``, ADL ``IndividualPhysicalMemory`` and
    so HTCondor's ARC grid type's ``request_memory``. The whole job for an HTCondor-CE
    (``request_memory``, ``+maxMemory``). The local CE sets no memory limit.
Resource type
    The pilot's ``--resource-type``: pilot 3.7 accepts only SCORE, MCORE, SCORE_HIMEM and
    MCORE_HIMEM (argparse choices in ``pilot.py``; anything else exits 2 before the job runs).
    The job's ``resource_type`` is mapped: SCORE_LOMEM -> SCORE, MCORE_LOMEM -> MCORE,
    SCORE_VHIMEM -> SCORE_HIMEM, MCORE_VHIMEM -> MCORE_HIMEM, the four kept. Unknown,
    "Undefined" (PanDA's own "no match"), "NULL" or missing: from the job's cores (MCORE above
    one) and memory per core as PanDA's ``match_job`` counts it (``minRamCount`` / cores, or
    what act asks for when the job gives none), with ``_HIMEM`` above 2000 MB per core.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from act.atlas.queues import DEFAULT_MAX_WALLTIME_MINUTES, Queue
from act.atlas.translate.spec import Spec

#: maxCpuCount aCT reads as a placeholder, and what it stands for (s).
PLACEHOLDER_CPU_SECONDS = 600
PLACEHOLDER_MEANS_SECONDS = 24 * 3600
#: maxCpuCount when the job gives none (s).
DEFAULT_CPU_SECONDS = 2 * 24 * 3600
#: Above this many cores the maxCpuCount estimate is doubled (aCT).
LARGE_CORE_COUNT = 15
DEFAULT_WALLTIME_MARGIN = 1.5
MIN_WALLTIME_MINUTES = 60
MEMORY_STEP_MB = 500
MIN_MEMORY_MB = 1000
MIN_SINGLE_CORE_MB = 2000
MIN_PER_CORE_MB = 250
DEFAULT_PER_CORE_MB = 2000
DEFAULT_SINGLE_CORE_PRODUCTION_MB = 4000
DEFAULT_SINGLE_CORE_ANALYSIS_MB = 2000
#: PanDA's HIMEM threshold (taskbuffer/ResourceSpec.py HIMEM_THRESHOLD), MB per core.
HIMEM_THRESHOLD_MB = 2000
#: What pilot 3.7's ``--resource-type`` accepts (pilot.py get_args, argparse choices).
PILOT_RESOURCE_TYPES = ("SCORE", "MCORE", "SCORE_HIMEM", "MCORE_HIMEM")
#: PanDA's resource types (its resource_types table) -> what the pilot accepts.
PANDA_RESOURCE_TYPES = {
    "SCORE": "SCORE",
    "MCORE": "MCORE",
    "SCORE_HIMEM": "SCORE_HIMEM",
    "MCORE_HIMEM": "MCORE_HIMEM",
    "SCORE_LOMEM": "SCORE",
    "MCORE_LOMEM": "MCORE",
    "SCORE_VHIMEM": "SCORE_HIMEM",
    "MCORE_VHIMEM": "MCORE_HIMEM",
}


@dataclass(frozen=True)
class Sizing:
    """What a job asks of a CE."""

    cores: int
    walltime_minutes: int
    #: The whole job's memory (MB): a multiple of ``cores``.
    memory_mb: int
    #: One of :data:`PILOT_RESOURCE_TYPES`.
    resource_type: str


def size(spec: Spec, queue: Queue, *, analysis: bool) -> Sizing:
    """Apply the rules of this module's table to one job; raises TranslationError."""
    n = cores(spec, queue)
    memory = memory_mb(spec, queue, n, analysis=analysis)
    return Sizing(
        cores=n,
        walltime_minutes=walltime_minutes(spec, queue, n),
        memory_mb=memory,
        resource_type=resource_type(spec, n, memory),
    )


def cores(spec: Spec, queue: Queue) -> int:
    n = spec.integer("coreCount", queue.cores)
    return n if n >= 1 else queue.cores


def walltime_limits(queue: Queue) -> tuple[int, int]:
    """(minimum, maximum) minutes a job of ``queue`` may ask for."""
    maximum = queue.max_walltime_minutes or DEFAULT_MAX_WALLTIME_MINUTES
    minimum = max(MIN_WALLTIME_MINUTES, queue.min_walltime_minutes or 0)
    return min(minimum, maximum), maximum


def walltime_minutes(spec: Spec, queue: Queue, n_cores: int) -> int:
    low, high = walltime_limits(queue)
    if queue.truepilot:
        return high
    margin = queue.walltime_margin or DEFAULT_WALLTIME_MARGIN
    expected = spec.integer("maxWalltime", 0)
    if expected > 0:
        minutes = math.ceil(expected / 60 * margin)
    else:
        seconds = spec.integer("maxCpuCount", DEFAULT_CPU_SECONDS)
        if seconds == PLACEHOLDER_CPU_SECONDS:
            seconds = PLACEHOLDER_MEANS_SECONDS
        elif seconds <= 0:
            seconds = DEFAULT_CPU_SECONDS
        minutes = math.ceil(seconds / 60 * margin)
        if n_cores > LARGE_CORE_COUNT:
            minutes *= 2
    return min(max(low, minutes), high)


def memory_mb(spec: Spec, queue: Queue, n_cores: int, *, analysis: bool) -> int:
    """The whole job's memory in MB (see the table)."""
    ram = spec.integer("minRamCount", 0)
    if ram <= 0:
        ram = _default_memory(n_cores, analysis)
    ram = max(ram, MIN_MEMORY_MB)
    ram = math.ceil(ram / MEMORY_STEP_MB) * MEMORY_STEP_MB
    if n_cores == 1:
        ram = max(ram, MIN_SINGLE_CORE_MB)
    total = max(math.ceil(ram / n_cores), MIN_PER_CORE_MB) * n_cores
    if queue.max_memory_mb and total > queue.max_memory_mb:
        total = max(queue.max_memory_mb // n_cores, 1) * n_cores
    return total


def _default_memory(n_cores: int, analysis: bool) -> int:
    if n_cores > 1:
        return DEFAULT_PER_CORE_MB * n_cores
    return DEFAULT_SINGLE_CORE_ANALYSIS_MB if analysis else DEFAULT_SINGLE_CORE_PRODUCTION_MB


def resource_type(spec: Spec, n_cores: int, memory: int) -> str:
    """The pilot's ``--resource-type`` (see the table)."""
    given = spec.text("resource_type", spec.text("resourceType", ""))
    mapped = PANDA_RESOURCE_TYPES.get(given.strip().upper())
    if mapped is not None:
        return mapped
    ram = spec.integer("minRamCount", 0)
    per_core = round(ram / n_cores) if ram > 0 else memory // n_cores
    kind = "MCORE" if n_cores > 1 else "SCORE"
    return f"{kind}_HIMEM" if per_core > HIMEM_THRESHOLD_MB else kind
