"""What both CE description languages share: reading the job spec and planning the job.

How much the job asks for (cores, walltime, memory, resource type) is decided in
:mod:`act.atlas.translate.sizing`, the one place those rules are written down. The job spec
comes from PanDA (new API: typed JSON; legacy: every value a string) and may hold
"NULL", empty strings, missing keys and text in any script. Everything read from it is checked
here; a value that cannot be used is a :class:`TranslationError` naming the PanDA ID and field.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from act.atlas.pilot_files import OUTPUT_LIST as OUTPUT_LIST_FILE
from act.atlas.pilot_files import job_report_names
from act.atlas.queues import Queue
from act.atlas.translate.errors import TranslationError
from act.atlas.translate.jobfile import harvester_mode, job_file
from act.atlas.translate.sizing import size
from act.atlas.translate.spec import Spec

#: Where a native job's input files come from: Rucio, through the CE's data staging and cache.
RUCIO_REPLICAS = (
    "rucio://rucio-lb-prod.cern.ch;rucioaccount=pilot;transferprotocol=https;"
    "httpgetpartial=no;cache=invariant;accesslatency=disk/replicas"
)
WRAPPER_NAME = "runpilot2-wrapper.sh"
TARBALL_NAME = "pilot3.tar.gz"
JOB_SPEC_FILE = "pandaJobData.out"
QUEUEDATA_FILE = "queuedata.json"
EVENT_RANGES_FILE = "eventranges.json"
HEARTBEAT_FILE = "heartbeat.json"
EVENT_STATUS_FILE = "event_status.dump.json"
#: xRSL: the CE uploads every file ``output.list`` names (ARC's dynamic output list).
OUTPUT_LIST = "@" + OUTPUT_LIST_FILE
RESERVED_NAMES = frozenset(
    {
        WRAPPER_NAME,
        TARBALL_NAME,
        JOB_SPEC_FILE,
        QUEUEDATA_FILE,
        EVENT_RANGES_FILE,
        HEARTBEAT_FILE,
        EVENT_STATUS_FILE,
    }
)

ANALYSIS_LABELS = frozenset({"user", "panda"})
# A file name or scope that is safe in a URL path, a session directory and both languages.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class JobInput:
    """What the translators need about one job."""

    panda_id: int
    spec: Mapping[str, Any]
    spec_text: str
    queue: Queue
    attempt: int
    log_url: str
    event_ranges: Sequence[Mapping[str, Any]] | None = None
    #: PANDA_JSID: who submitted the pilot (Harvester's metadata ``schedulerid`` wins).
    scheduler_id: str = "act"
    #: Harvester metadata of the job (harvesterid, harvesterworkerid, schedulerid), if any.
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: How ``spec_text`` is stored: "json" (an /api/v1 job, or one of a legacy bulk reply) or
    #: "form" (a legacy URL-encoded getJob reply, shipped to the pilot as it is).
    spec_format: str = "json"


@dataclass(frozen=True)
class Translation:
    description: str
    files: Mapping[str, bytes]
    cores: int
    walltime_minutes: int
    #: The job's total memory in MB (ARC's xRSL ``memory`` is this divided by ``cores``).
    memory_mb: int
    priority: int


@dataclass(frozen=True)
class InputFile:
    lfn: str
    scope: str

    @property
    def url(self) -> str:
        return f"{RUCIO_REPLICAS}/{self.scope}/{self.lfn}"


@dataclass(frozen=True)
class Plan:
    """Everything decided about a job, before it is written in either language."""

    panda_id: int
    queue: Queue
    native: bool
    cores: int
    walltime_minutes: int
    memory_mb: int
    priority: int
    label: str
    job_type: str
    resource_type: str
    job_name: str
    log_file: str
    arguments: tuple[str, ...]
    environment: tuple[tuple[str, str], ...]
    inputs: tuple[InputFile, ...]
    files: Mapping[str, bytes]
    #: Whether pilot3 runs in Harvester mode with these arguments and environment; the job file
    #: is written for that mode (:mod:`act.atlas.translate.jobfile`).
    harvester: bool = False

    @property
    def memory_per_core_mb(self) -> int:
        return self.memory_mb // self.cores

    @property
    def stdout_name(self) -> str:
        return stdout_name(self.log_file)


def pilot_reports(panda_id: int) -> list[str]:
    """The pilot's reports a native job's CE is asked to keep for act, besides heartbeat.json
    and the log tarball: ``output.list`` (what the CE uploaded) and ``jobReport.json`` where
    pilot3 leaves it (``PanDA_Pilot-<PandaID>/``) and where older pilots did (the top). See
    :mod:`act.atlas.pilot_files`; a file the pilot did not write is simply not there."""
    return [OUTPUT_LIST_FILE, *job_report_names(panda_id)]


def stdout_name(log_file: str) -> str:
    """The pilot's stdout (aCT: the log file name without ``.tgz``), never the log itself."""
    name = log_file.replace(".tgz", "")
    return name if name != log_file else f"{log_file}.stdout"


def plan(job: JobInput, *, native_allowed: bool = True) -> Plan:
    """Apply aCT's rules (domain.md, act-reference §7) to one job; sizing: :mod:`.sizing`."""
    spec = Spec(job.panda_id, job.spec)
    queue = job.queue
    native = not queue.truepilot
    if native and not native_allowed:
        raise TranslationError(
            job.panda_id,
            "queue.truepilot",
            f"queue {queue.name} is native (no-network): only an ARC CE can stage its data",
        )
    label = spec.text("prodSourceLabel", queue.prod_source_label)
    analysis = label in ANALYSIS_LABELS
    sizing = size(spec, queue, analysis=analysis)
    log_file = spec.text("logFile", f"{job.panda_id}.log.tgz")
    check_value(job.panda_id, "logFile", log_file)
    if not _SAFE_NAME.fullmatch(log_file) or log_file in RESERVED_NAMES:
        raise TranslationError(job.panda_id, "logFile", f"{log_file!r} is not a safe file name")
    job_name = spec.text("jobName", f"pandajob-{job.panda_id}")
    check_value(job.panda_id, "jobName", job_name)
    arguments = _arguments(job, label, "user" if analysis else "managed", sizing.resource_type)
    environment = _environment(job)
    inputs = _inputs(spec) if native else ()
    harvester = harvester_mode(arguments, environment)
    files: dict[str, bytes] = {
        JOB_SPEC_FILE: job_file(
            job.panda_id, job.spec, job.spec_text, job.spec_format, harvester=harvester
        )
    }
    if native:
        files[QUEUEDATA_FILE] = json.dumps(queue.queuedata, sort_keys=True).encode("utf-8")
    if job.event_ranges is not None:
        # Shipped as aCT did, although pilot3 (3.5 to 3.11) reads no such file: its event
        # service asks PanDA for ranges itself (pilot/eventservice/communicationmanager).
        files[EVENT_RANGES_FILE] = json.dumps(list(job.event_ranges), sort_keys=True).encode()
    return Plan(
        panda_id=job.panda_id,
        queue=queue,
        native=native,
        cores=sizing.cores,
        walltime_minutes=sizing.walltime_minutes,
        memory_mb=sizing.memory_mb,
        priority=priority(spec),
        label=label,
        job_type="user" if analysis else "managed",
        resource_type=sizing.resource_type,
        job_name=job_name,
        log_file=log_file,
        arguments=arguments,
        environment=environment,
        inputs=inputs,
        files=files,
        harvester=harvester,
    )


def check_value(panda_id: int, key: str, value: str) -> str:
    """Refuse control characters (newlines above all) in anything written to a description."""
    if _CONTROL.search(value):
        raise TranslationError(panda_id, key, f"control characters are not allowed: {value!r}")
    return value


def priority(spec: Spec) -> int:
    """currentPriority onto 1-100: <=1000 -> x0.09, <=10000 -> 90 + (p-1000)/900, else 100."""
    if not spec.given("currentPriority"):
        return 50
    try:
        value = spec.integer("currentPriority", 50)
    except TranslationError:
        return 50
    if value <= 1000:
        mapped = value * 90 // 1000
    elif value <= 10000:
        mapped = 90 + (value - 1000) // 900
    else:
        mapped = 100
    return min(max(mapped, 1), 100)


def _arguments(job: JobInput, label: str, job_type: str, resource_type: str) -> tuple[str, ...]:
    queue = job.queue
    pilot_version = str(queue.queuedata.get("pilot_version") or "3")
    arguments = [
        "-q", queue.name,
        "-j", label,
        "--pilot-user", "ATLAS",
        "--harvester-submit-mode", "PUSH",
        "-w", "generic",
        "--job-type", job_type,
        "--resource-type", resource_type,
        "--pilotversion", pilot_version,
    ]  # fmt: skip
    if queue.truepilot:
        server, _, port = queue.panda_server.rpartition(":")
        if not port.isdigit():
            server, port = queue.panda_server, "25443"
        arguments += ["--url", server, "-p", port]
        params = queue.queuedata.get("params")
        pilot_url = params.get("pilot_url") if isinstance(params, dict) else None
        if isinstance(pilot_url, str) and pilot_url:
            arguments += ["--piloturl", pilot_url]
    else:
        arguments += ["-z", "-t", "--piloturl", "local", "--mute"]
    arguments += shlex.split(queue.pilot_args)
    for index, argument in enumerate(arguments):
        check_value(job.panda_id, f"arguments[{index}]", argument)
    return tuple(arguments)


def _environment(job: JobInput) -> tuple[tuple[str, str], ...]:
    scheduler = job.metadata.get("schedulerid") or job.scheduler_id
    pairs = [("PANDA_JSID", str(scheduler)), ("GTAG", job.log_url), ("PILOT_NOKILL", "YES")]
    if job.queue.truepilot:
        for key, name in (
            ("harvesterid", "HARVESTER_ID"),
            ("harvesterworkerid", "HARVESTER_WORKER_ID"),
        ):
            if job.metadata.get(key) not in (None, ""):
                pairs.append((name, str(job.metadata[key])))
    for name, value in pairs:
        check_value(job.panda_id, f"environment {name}", value)
    return tuple(pairs)


def _inputs(spec: Spec) -> tuple[InputFile, ...]:
    lfns = spec.listing("inFiles")
    scopes = spec.listing("scopeIn")
    if len(scopes) != len(lfns):
        raise spec.error("scopeIn", f"{len(scopes)} scopes for {len(lfns)} inFiles")
    seen: dict[str, InputFile] = {}
    for lfn, scope in zip(lfns, scopes, strict=True):
        if not _SAFE_NAME.fullmatch(lfn) or lfn in RESERVED_NAMES:
            raise spec.error("inFiles", f"{lfn!r} is not a safe file name")
        if not _SAFE_NAME.fullmatch(scope):
            raise spec.error("scopeIn", f"{scope!r} is not a valid scope")
        seen.setdefault(lfn, InputFile(lfn=lfn, scope=scope))
    return tuple(seen.values())
