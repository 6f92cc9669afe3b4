"""What the propagator reports and to whom: the act states and what PanDA is told of each,
its options, the due jobs it claims and the fields of their reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import Field
from sqlalchemy.engine import Connection

from act.atlas.config import Context
from act.atlas.latest_ce import latest_ce_name
from act.atlas.panda_client import (
    JobUpdate,
)
from act.atlas.panda_status import PandaCommand, PandaServerStatus
from act.atlas.queries import DueReport
from act.atlas.reporting import report_fields
from act.common.claims import claim_and_load
from act.common.schema import panda_jobs
from act.common.section import Section
from act.common.states import P_ACTIVE, P_REPORT_DUE, Layer, PandaJobState
from act.common.timeutil import utcnow

#: What PanDA is told for each act state it hears about (see the module docstring).
TOLD: dict[PandaJobState, PandaServerStatus] = {
    PandaJobState.RECEIVED: PandaServerStatus.STARTING,
    PandaJobState.QUEUED: PandaServerStatus.STARTING,
    PandaJobState.TORESUBMIT: PandaServerStatus.STARTING,
    PandaJobState.RUNNING: PandaServerStatus.RUNNING,
    PandaJobState.TRANSFERRING: PandaServerStatus.TRANSFERRING,
    PandaJobState.TOVALIDATE: PandaServerStatus.TRANSFERRING,
    PandaJobState.FINISHED: PandaServerStatus.FINISHED,
    PandaJobState.FAILED: PandaServerStatus.FAILED,
    PandaJobState.CANCELLED: PandaServerStatus.FAILED,
}
#: Final act states and where an acknowledged final report moves them.
FINAL = P_REPORT_DUE
#: States a PanDA command can move to tobekilled (the propagator's edges in act.common.states).
ACTIVE = P_ACTIVE
#: States whose jobs the propagator looks at when they are due.
REPORTED = sorted({*TOLD, PandaJobState.TOBEKILLED})
#: Commands meaning "PanDA no longer wants this job (attempt) run or reported".
STOP_COMMANDS = frozenset(
    {PandaCommand.TOBEKILLED, PandaCommand.BADATTEMPTNR, PandaCommand.ALREADYDONE}
)
#: Of those, the ones after which PanDA wants no final report either.
NO_REPORT_COMMANDS = frozenset({PandaCommand.BADATTEMPTNR, PandaCommand.ALREADYDONE})
#: PanDA statuses of a job that has had its final report (or that PanDA ended by itself): a
#: final report whose answer was lost is not sent again when PanDA shows one of these.
_S = PandaServerStatus
PANDA_ENDED = frozenset({_S.HOLDING, _S.MERGING, _S.FINISHED, _S.FAILED, _S.CANCELLED, _S.CLOSED})
CRASH_POINT = "propagator:after-send"  # act.common.faults: between PanDA's answer and its record
REPORT_FILE = "jobReport.json"


class PropagatorOptions(Section):
    """``daemons.propagator.options``."""

    batch_size: int = Field(100, ge=1, le=10_000)
    in_flight: int = Field(4, ge=1, le=64)
    # A bulk call's reports add up to at most this many bytes (JSON); a bigger report goes alone.
    max_request_bytes: int = Field(8 << 20, ge=1 << 16)
    interval: float = Field(1800.0, gt=0)
    jitter: float = Field(0.1, ge=0, le=1)
    retry_backoff: float = Field(60.0, ge=0)
    outage_backoff: float = Field(30.0, ge=0)
    outage_backoff_max: float = Field(600.0, ge=0)
    scheduler_id: str = Field("act", min_length=1, max_length=80)
    cancel_error_code: int = Field(1144, ge=0)
    cancel_error_diag: str = Field("job killed by act", max_length=500)
    kill_error_code: int = Field(1144, ge=0)
    kill_error_diag: str = Field("job killed on PanDA's request (tobekilled)", max_length=500)


#: A job the propagator reports: its typed row, as claimed and loaded (act.atlas.queries).
Job = DueReport


@dataclass
class Send:
    job: Job
    update: JobUpdate


@dataclass
class Outcome:
    """What one cycle did, for its log line and its return value."""

    sent: int = 0
    acknowledged: int = 0
    finals: int = 0
    stopped: int = 0
    errors: int = 0
    unreachable: int = 0
    auth: bool = False  # PanDA refused the credential
    problems: list[str] = field(default_factory=list)


def claim_due(conn: Connection, ctx: Context, limit: int) -> list[Job]:
    t = panda_jobs
    return claim_and_load(
        conn,
        Layer.PANDA,
        REPORTED,
        DueReport,
        owner=ctx.owner,
        lease=ctx.daemon.lease,
        limit=limit,
        shard=ctx.shard,
        where=[t.c.next_report_at <= utcnow()],
        order_by=[t.c.next_report_at, t.c.id],
        labelled={"ce": latest_ce_name()},
    )


def silent(job: Job) -> bool:
    """Whether this job gets no PanDA call (it may still get a file or a final move)."""
    if job.heartbeat_less:
        return True
    # No heartbeats while a job PanDA stopped is killed; no final report after badattemptnr or
    # alreadydone (but one after tobekilled: PanDA expects "failed" from a killed job).
    if job.state == PandaJobState.TOBEKILLED:
        return job.panda_command in STOP_COMMANDS
    return job.state == PandaJobState.CANCELLED and job.panda_command in NO_REPORT_COMMANDS


def told(job: Job) -> str:
    """The state PanDA is told for this job."""
    if job.state == PandaJobState.TOBEKILLED:
        last = job.panda_status
        return last if last is not None and last in TOLD.values() else PandaServerStatus.STARTING
    return TOLD[PandaJobState(job.state)]


def report_of(job: Job, opts: PropagatorOptions) -> dict[str, Any]:
    """The job's extra heartbeat fields (legacy camelCase); ValueError for a bad ``report``."""
    fields: dict[str, Any] = {"siteName": job.queue, "schedulerID": opts.scheduler_id}
    if job.log_url:
        fields["pilotID"] = pilot_id(job.log_url)
    if job.state == PandaJobState.CANCELLED and job.panda_command == PandaCommand.TOBEKILLED:
        fields.update(pilotErrorCode=opts.kill_error_code, pilotErrorDiag=opts.kill_error_diag)
    elif job.state == PandaJobState.CANCELLED:
        fields.update(pilotErrorCode=opts.cancel_error_code, pilotErrorDiag=opts.cancel_error_diag)
    fields.update(report_fields(job.report))
    return fields


def pilot_id(log_url: str) -> str:
    """aCT's ``pilotID``: the monitor links the part before the first ``|`` as "pilot stdout"."""
    return f"{log_url}|Unknown|Unknown|Unknown|Unknown"
