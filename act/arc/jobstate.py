"""ARC job states as act's engine sees them: the REST states mapped to CE states
(:data:`STATES`) and a job's status read from its ``info`` reply (:func:`job_status`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from act.arc.rest import JobResult, as_list
from act.engine.backend import CEReportedState, JobStatus

#: ARC REST states (A-REX 6 and 7) and what they mean to the engine.
STATES: dict[str, CEReportedState] = {
    "ACCEPTING": CEReportedState.SUBMITTED,
    "ACCEPTED": CEReportedState.SUBMITTED,
    "PREPARING": CEReportedState.SUBMITTED,
    "PREPARED": CEReportedState.SUBMITTED,
    "SUBMITTING": CEReportedState.SUBMITTED,
    "QUEUING": CEReportedState.SUBMITTED,
    "HELD": CEReportedState.SUBMITTED,
    "RUNNING": CEReportedState.RUNNING,
    "EXITINGLRMS": CEReportedState.RUNNING,
    "EXECUTED": CEReportedState.RUNNING,
    "OTHER": CEReportedState.RUNNING,
    "KILLING": CEReportedState.RUNNING,
    "FINISHING": CEReportedState.FINISHING,
    "FINISHED": CEReportedState.FINISHED,
    "FAILED": CEReportedState.FAILED,
    "KILLED": CEReportedState.CANCELLED,
}
GONE_STATES = {"WIPED", "DELETED"}
#: A failed job the CE can restart: it failed while staging (ARC's RestartState).
RESTARTABLE_FROM = {"PREPARING", "FINISHING"}


def activity_of(reply: JobResult) -> dict[str, Any]:
    """The ``ComputingActivity`` of a job's ``info`` reply (the first if several), or {}."""
    doc = reply.raw.get("info_document")
    activity = doc.get("ComputingActivity") if isinstance(doc, dict) else None
    if isinstance(activity, list):  # several documents for one job: take the first
        activity = activity[0] if activity else None
    return activity if isinstance(activity, dict) else {}


def _arcrest_state(values: Any) -> str | None:
    for value in as_list(values):
        if isinstance(value, str) and value.startswith("arcrest:"):
            return value.split(":", 1)[1]
    return None


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def job_status(reply: JobResult) -> JobStatus:
    """A job's status from its ``info`` reply (falls back to the plain ``state``)."""
    activity = activity_of(reply)
    raw = _arcrest_state(activity.get("State")) or reply.state
    if raw is None:
        raise ValueError("the CE gave no state")
    if raw in GONE_STATES:
        raise ValueError(f"state {raw}: the job is gone")
    state = STATES.get(raw)
    if state is None:
        raise ValueError(f"unknown ARC state {raw!r}")
    exit_code = _int(activity.get("ExitCode"))
    errors = tuple(str(e) for e in as_list(activity.get("Error")) if str(e).strip())
    if state is CEReportedState.FINISHED and exit_code not in (None, 0):
        state = CEReportedState.FAILED
    nodes = [str(n) for n in as_list(activity.get("ExecutionNode"))]
    memory_mb = _int(activity.get("UsedMainMemory"))
    restart_state = _arcrest_state(activity.get("RestartState"))
    return JobStatus(
        ce_job_id=reply.id,
        state=state,
        raw_state=raw,
        exit_code=exit_code,
        errors=errors,
        worker_node=nodes[0] if nodes else None,
        cpu_seconds=_int(activity.get("UsedTotalCPUTime")),
        wall_seconds=_int(activity.get("UsedTotalWallTime")),
        max_rss_kb=memory_mb * 1024 if memory_mb is not None else None,
        started_at=_time(activity.get("StartTime")),
        ended_at=_time(activity.get("EndTime") or activity.get("ComputingManagerEndTime")),
        restartable=state is CEReportedState.FAILED and restart_state in RESTARTABLE_FROM,
    )
