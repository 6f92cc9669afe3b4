"""Reading HTCondor job ClassAds for the HTCondor back end: the constraints that select
jobs by id or by act's token, typed values of an ad, and a job's status (:func:`job_status`,
:func:`hold_error`) as act's engine sees it."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

from act.condor.submission import TOKEN, classad_string
from act.engine.backend import CEReportedState, JobStatus

#: HTCondor JobStatus values.
IDLE, RUNNING, REMOVED, COMPLETED, HELD, TRANSFERRING, SUSPENDED = 1, 2, 3, 4, 5, 6, 7
STATUS_NAMES = {
    IDLE: "idle",
    RUNNING: "running",
    REMOVED: "removed",
    COMPLETED: "completed",
    HELD: "held",
    TRANSFERRING: "transferring_output",
    SUSPENDED: "suspended",
}
#: GridJobStatus words (HTCondor-CE: the remote JobStatus; ARC: its state) meaning the payload
#: ended and outputs are on their way back while the local job still says running.
ENDING_GRID_STATES = frozenset(
    {"COMPLETED", "TRANSFERRING_OUTPUT", "FINISHING", "FINISHED", "EXECUTED", "EXITINGLRMS"}
)
PROJECTION = [
    "ClusterId",
    "ProcId",
    "JobStatus",
    "ActToken",
    "ActCE",
    "Iwd",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "HoldReason",
    "HoldReasonCode",
    "HoldReasonSubCode",
    "NumHolds",
    "RemoveReason",
    "GridJobStatus",
    "GridJobId",
    "GridResourceUnavailableTime",
    "LastRemoteHost",
    "RemoteHost",
    "RemoteWallClockTime",
    "RemoteUserCpu",
    "RemoteSysCpu",
    "ResidentSetSize",
    "JobStartDate",
    "CompletionDate",
    "EnteredCurrentStatus",
]
JOB_ID = re.compile(r"([0-9]{1,12})\.([0-9]{1,9})")
STATE_LEN = 128


def ids_constraint(ids: Iterable[str]) -> str:
    """A constraint matching ``<cluster>.<proc>`` ids, grouped by cluster."""
    procs: dict[int, list[int]] = defaultdict(list)
    for job_id in ids:
        match = JOB_ID.fullmatch(job_id)
        if match:
            procs[int(match.group(1))].append(int(match.group(2)))
    parts = [
        f"(ClusterId == {cluster} && member(ProcId, {{{', '.join(map(str, sorted(p)))}}}))"
        for cluster, p in sorted(procs.items())
    ]
    return " || ".join(parts) or "False"


def tokens_constraint(tokens: Iterable[str]) -> str:
    quoted = [classad_string(t) for t in tokens if TOKEN.fullmatch(t)]
    if not quoted:
        return "False"
    return f"isString(ActToken) && member(ActToken, {{{', '.join(quoted)}}})"


def ad_value(ad: Any, key: str) -> Any:
    try:
        return ad.get(key)
    except Exception:  # an expression the bindings cannot turn into a value
        return None


def text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def integer(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def job_id_of(ad: Any) -> str | None:
    cluster, proc = integer(ad_value(ad, "ClusterId")), integer(ad_value(ad, "ProcId"))
    return None if cluster is None or proc is None else f"{cluster}.{proc}"


def keep(found: dict[str, Any], ad: Any, wanted: Sequence[str]) -> None:
    job_id = job_id_of(ad)
    if job_id is not None and job_id in wanted and job_id not in found:
        found[job_id] = ad


def found_token(found: dict[str, str], ad: Any, wanted: Sequence[str]) -> None:
    token = text(ad_value(ad, "ActToken"))
    job_id = job_id_of(ad)
    if token is not None and token in wanted and job_id is not None and token not in found:
        found[token] = job_id


def epoch(value: Any) -> datetime | None:
    seconds = integer(value)
    if not seconds or seconds <= 0:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc)


def hold_error(ad: Any) -> str:
    reason = (text(ad_value(ad, "HoldReason")) or "no reason given").strip().replace("\n", " ")
    code = integer(ad_value(ad, "HoldReasonCode"))
    subcode = integer(ad_value(ad, "HoldReasonSubCode"))
    return f"held: {reason} (code {code if code is not None else '?'}, subcode {subcode or 0})"


def job_status(
    job_id: str, ad: Any, *, now: datetime, stale: float, max_holds: int = 3
) -> JobStatus:
    """A job's status from its ad (queue or history); ValueError if the ad makes no sense."""
    code = integer(ad_value(ad, "JobStatus"))
    if code not in STATUS_NAMES:
        raise ValueError(f"unknown JobStatus {ad_value(ad, 'JobStatus')!r}")
    assert code is not None
    grid = text(ad_value(ad, "GridJobStatus"))
    if grid is None and integer(ad_value(ad, "GridJobStatus")) is not None:
        grid = str(integer(ad_value(ad, "GridJobStatus")))
    raw = STATUS_NAMES[code] + (f" (grid: {grid})" if grid else "")
    exit_code = integer(ad_value(ad, "ExitCode"))
    errors: tuple[str, ...] = ()
    restartable = False
    state: CEReportedState
    if code == IDLE:
        state = CEReportedState.SUBMITTED
        since = epoch(ad_value(ad, "GridResourceUnavailableTime"))
        if since is not None:
            raw = f"idle (grid resource unavailable since {since:%Y-%m-%dT%H:%M:%SZ})"
            if (now - since).total_seconds() > stale:
                state = CEReportedState.FAILED
                errors = (f"grid resource unavailable since {since:%Y-%m-%dT%H:%M:%SZ}",)
    elif code in (RUNNING, SUSPENDED):
        ending = code == RUNNING and grid is not None and grid.upper() in ENDING_GRID_STATES
        state = CEReportedState.FINISHING if ending else CEReportedState.RUNNING
    elif code == TRANSFERRING:
        state = CEReportedState.FINISHING
    elif code == REMOVED:
        state = CEReportedState.CANCELLED
        reason = text(ad_value(ad, "RemoveReason"))
        errors = (f"removed: {reason}",) if reason else ()
    elif code == HELD:
        state = CEReportedState.FAILED
        restartable = (integer(ad_value(ad, "NumHolds")) or 1) <= max_holds
        errors = (hold_error(ad),)
    else:  # COMPLETED
        signal = (
            integer(ad_value(ad, "ExitSignal")) if ad_value(ad, "ExitBySignal") is True else None
        )
        if signal is not None:
            state, errors = CEReportedState.FAILED, (f"killed by signal {signal}",)
        elif exit_code == 0:
            state = CEReportedState.FINISHED
        else:
            state = CEReportedState.FAILED
            errors = (f"exit code {exit_code if exit_code is not None else 'unknown'}",)
    host = text(ad_value(ad, "RemoteHost")) or text(ad_value(ad, "LastRemoteHost"))
    user, system = integer(ad_value(ad, "RemoteUserCpu")), integer(ad_value(ad, "RemoteSysCpu"))
    cpu = None if user is None and system is None else (user or 0) + (system or 0)
    wall = ad_value(ad, "RemoteWallClockTime")
    ended = epoch(ad_value(ad, "CompletionDate"))
    if ended is None and code in (REMOVED, HELD):
        ended = epoch(ad_value(ad, "EnteredCurrentStatus"))
    return JobStatus(
        ce_job_id=job_id,
        state=state,
        raw_state=raw[:STATE_LEN],
        exit_code=exit_code if code == COMPLETED else None,
        errors=errors,
        worker_node=host,
        cpu_seconds=cpu,
        wall_seconds=int(wall) if isinstance(wall, (int, float)) and wall >= 0 else None,
        max_rss_kb=integer(ad_value(ad, "ResidentSetSize")),
        started_at=epoch(ad_value(ad, "JobStartDate")),
        ended_at=ended,
        restartable=restartable,
    )


def diagnostics(ad: Any) -> str | None:
    code = integer(ad_value(ad, "JobStatus"))
    if code == HELD:
        return hold_error(ad)
    parts = [f"JobStatus {STATUS_NAMES.get(code or 0, code)}"]
    for key in ("ExitCode", "ExitSignal", "RemoveReason", "GridJobStatus"):
        value = ad_value(ad, key)
        if value is not None:
            parts.append(f"{key} {value}")
    return "; ".join(parts)
