"""The propagator: heartbeats and final reports to PanDA, in bulk.

Each cycle claims the PanDA jobs whose ``next_report_at`` has come, **oldest due first** (so a
backlog after an outage drains in the order it built up), at most ``batch_size * in_flight`` of
them. It sends them with ``update_jobs_bulk`` in batches of ``batch_size`` (and at most
``max_request_bytes`` of report fields: a final report's ``metaData`` can take megabytes, and a
web server refuses a request body above its limit, 10 MiB by default), at most ``in_flight``
calls at once (a bounded thread pool; the database is only written from the daemon's thread), and
writes each job's outcome. Both PanDA wire formats go through :class:`PandaClient`; nothing here
depends on either.

What PanDA is told, per act state (aCT's ``pandastatus``; PanDA's update_job accepts starting,
running, transferring, holding, finished, failed):

==========================================  =================================================
act state                                   PanDA is told
==========================================  =================================================
received, queued, toresubmit                starting (the job is with act, not yet running)
running                                     running
transferring, tovalidate                    transferring (outputs being staged or checked)
tobekilled (operator or policy kill)        what PanDA was last told (still a heartbeat)
tobekilled after a PanDA command            nothing while the CE job is being killed
finished                                    finished + the final report → ``done``
failed                                      failed + the final report → ``donefailed``
cancelled after PanDA's ``tobekilled``      failed, pilotErrorCode ``kill_error_code`` (1144,
                                            the pilot's "killed by PanDA server", which PanDA
                                            expects from a killed job) → ``donecancelled``
cancelled by act (operator, stuck policy)   failed, pilotErrorCode ``cancel_error_code``
                                            (1144 too by default, as aCT) → ``donecancelled``
cancelled after ``badattemptnr`` or         nothing → ``donecancelled`` (PanDA has a newer
``alreadydone``                             attempt, or the job done already)
==========================================  =================================================

The fields of ``panda_jobs.report`` (JSON, legacy camelCase: ``xml``, ``pilotErrorCode``,
``pilotErrorDiag``, ``startTime``, ...; built by other daemons, see :mod:`act.atlas.reporting`)
are merged into every report, over ``siteName``, ``schedulerID`` and, for a job with a
``log_url`` (its pilot log in the web area, :mod:`act.atlas.weblogs`), ``pilotID`` =
``<log_url>|Unknown|Unknown|Unknown|Unknown`` (aCT's format; the PanDA monitor's "pilot stdout"
link is the part before the first ``|``).

PanDA's answer per job:

* ok, no command: ``panda_status``/``panda_reported_at`` recorded, next report in ``interval`` ±
  ``jitter`` (a fraction); a final state moves to ``done``/``donefailed``/``donecancelled``.
* ``tobekilled``: recorded in ``panda_command``; an active job moves to ``tobekilled`` (the app
  layer cancels its CE job) and gets no heartbeat while it is killed; when it ends
  ``cancelled``, PanDA gets the final ``failed`` with ``kill_error_code``, as from a pilot.
* ``badattemptnr``, ``alreadydone``: PanDA no longer wants this attempt: reporting stops and the
  job moves to ``tobekilled`` as well, so nothing keeps running for a job PanDA gave up; when it
  ends ``cancelled`` it goes to ``donecancelled`` without a call.
  Any command in answer to a final report means PanDA is done with the job: it moves to done*.
* no answer to a final report (the reply lost, the process killed or the database gone before
  the answer was recorded): the job stays due, with ``final_sent_at`` (set just before each
  final report goes) telling that PanDA may have it. Before sending it again the propagator
  asks PanDA for the job's status: if PanDA shows it ended (``PANDA_ENDED``), the job moves to
  done* without a second report; otherwise the report goes again.
* a per-job error: logged with the PanDA id, ``report_failures + 1``, retried after
  ``retry_backoff`` doubled per failure, at most ``interval``.
* PanDA unreachable (transport error of a bulk call) or refusing the credential: nothing changes
  for those jobs (they stay due, oldest first, and are released); one log line per cycle, and
  the daemon pauses ``outage_backoff`` seconds, doubled per failed cycle up to
  ``outage_backoff_max``. The client does not retry inside a call (``panda.retries`` is not
  used here): the next cycle is the retry.

Heartbeat-less jobs (``heartbeat_less``: an upstream Harvester talks to PanDA) cause no PanDA call
at all: their final report — the fields the final update would have had — is written as
``jobReport.json`` into the job's ``access_point`` directory (temporary file + rename), and they
move to done*.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Connection

from act.atlas import runtime
from act.atlas.config import Context
from act.atlas.latest_ce import latest_ce_endpoint
from act.atlas.panda_client import (
    JobUpdate,
    PandaAuthError,
    PandaError,
    PandaTransportError,
    UpdateResult,
)
from act.atlas.panda_status import PandaCommand, PandaServerStatus
from act.atlas.reporting import report_fields
from act.common.atomic import atomic_write
from act.common.claims import claim, release
from act.common.daemon import DaemonSpec
from act.common.faults import maybe_crash
from act.common.logs import job_log
from act.common.schema import panda_jobs
from act.common.section import Section
from act.common.states import P_ACTIVE, P_REPORT_DUE, Actor, Layer, PandaJobState
from act.common.timeutil import backoff, seconds, utcnow
from act.common.transitions import transition

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


@dataclass
class _Pause:
    """The daemon's back-off after a cycle that could not reach PanDA (kept in ctx.cache)."""

    failures: int = 0
    until: float = 0.0


@dataclass
class _Job:
    id: int
    pandaid: int
    state: str
    attempt: int
    queue: str
    panda_status: str | None
    panda_command: str | None
    report: str | None
    report_failures: int
    heartbeat_less: bool
    access_point: str | None
    ce: str | None = None  # the newest CE job's CE, for log lines
    log_url: str | None = None  # GTAG: the pilot log's URL in the web area
    final_sent_at: datetime | None = None  # set: a final report went, its answer not recorded


@dataclass
class _Send:
    job: _Job
    update: JobUpdate


@dataclass
class _Outcome:
    """What one cycle did, for its log line and its return value."""

    sent: int = 0
    acknowledged: int = 0
    finals: int = 0
    stopped: int = 0
    errors: int = 0
    unreachable: int = 0
    auth: bool = False  # PanDA refused the credential
    problems: list[str] = field(default_factory=list)


def run_once(ctx: Context) -> bool:
    opts: PropagatorOptions = ctx.options
    pause = ctx.cache.setdefault("propagator_pause", _Pause())
    if time.monotonic() < pause.until:
        return False
    limit = opts.batch_size * opts.in_flight
    jobs = ctx.db.run(lambda conn: _claim(conn, ctx, limit))
    if not jobs:
        return False
    outcome = _Outcome()
    sends: list[_Send] = []
    local: list[_Job] = []
    unreportable: list[_Job] = []
    for job in jobs:
        if _silent(job):
            local.append(job)
            continue
        try:
            fields = report_of(job, opts)
        except ValueError as error:
            job_log(ctx.log, pandaid=job.pandaid, ce=job.ce).error(
                "cannot build the report: %s", error
            )
            unreportable.append(job)
            continue
        attempt = job.attempt if job.attempt > 0 else None
        sends.append(_Send(job, JobUpdate(job.pandaid, told(job), attempt, fields)))
    if unreportable:
        ctx.db.run(lambda conn: _failed(conn, ctx, unreportable, outcome))
    if local:
        ctx.db.run(lambda conn: _settle_locally(conn, ctx, local, outcome))
    sends = _settle_in_doubt(ctx, sends, outcome)
    if sends:
        _mark_final_sent(ctx, sends)
        _send(ctx, sends, outcome)
    # Jobs not moved or rescheduled (e.g. PanDA unreachable) stay due; give them back.
    ctx.db.run(lambda conn: release(conn, Layer.PANDA, ctx.owner, [job.id for job in jobs]))
    _log_cycle(ctx, outcome, len(jobs))
    if outcome.unreachable:
        pause.failures += 1
        delay = backoff(opts.outage_backoff, opts.outage_backoff_max, pause.failures)
        pause.until = time.monotonic() + delay
        return False
    pause.failures = 0
    return len(jobs) == limit


def _claim(conn: Connection, ctx: Context, limit: int) -> list[_Job]:
    t = panda_jobs
    now = utcnow()
    ids = claim(
        conn,
        Layer.PANDA,
        REPORTED,
        owner=ctx.owner,
        lease=ctx.daemon.lease,
        limit=limit,
        shard=ctx.shard,
        where=[t.c.next_report_at <= now],
        order_by=[t.c.next_report_at, t.c.id],
    )
    if not ids:
        return []
    rows = conn.execute(
        sa.select(
            t.c.id,
            t.c.panda_id,
            t.c.state,
            t.c.attempt,
            t.c.queue,
            t.c.panda_status,
            t.c.panda_command,
            t.c.report,
            t.c.report_failures,
            t.c.heartbeat_less,
            t.c.access_point,
            t.c.log_url,
            t.c.final_sent_at,
            latest_ce_endpoint().label("ce"),
        )
        .where(t.c.id.in_(ids))
        .order_by(t.c.next_report_at, t.c.id)
    ).all()
    return [
        _Job(
            id=row.id,
            pandaid=row.panda_id,
            state=row.state,
            attempt=row.attempt,
            queue=row.queue,
            panda_status=row.panda_status,
            panda_command=row.panda_command,
            report=row.report,
            report_failures=row.report_failures,
            heartbeat_less=bool(row.heartbeat_less),
            access_point=row.access_point,
            ce=row.ce,
            log_url=row.log_url,
            final_sent_at=row.final_sent_at,
        )
        for row in rows
    ]


def _silent(job: _Job) -> bool:
    """Whether this job gets no PanDA call (it may still get a file or a final move)."""
    if job.heartbeat_less:
        return True
    # No heartbeats while a job PanDA stopped is killed; no final report after badattemptnr or
    # alreadydone (but one after tobekilled: PanDA expects "failed" from a killed job).
    if job.state == PandaJobState.TOBEKILLED:
        return job.panda_command in STOP_COMMANDS
    return job.state == PandaJobState.CANCELLED and job.panda_command in NO_REPORT_COMMANDS


def told(job: _Job) -> str:
    """The state PanDA is told for this job."""
    if job.state == PandaJobState.TOBEKILLED:
        last = job.panda_status
        return last if last is not None and last in TOLD.values() else PandaServerStatus.STARTING
    return TOLD[PandaJobState(job.state)]


def report_of(job: _Job, opts: PropagatorOptions) -> dict[str, Any]:
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


# -- jobs that get no PanDA call -------------------------------------------------------------------


def _settle_locally(conn: Connection, ctx: Context, jobs: list[_Job], outcome: _Outcome) -> None:
    for job in jobs:
        log = job_log(ctx.log, pandaid=job.pandaid, ce=job.ce)
        if job.state not in FINAL:
            # Nothing to say now: a heartbeat-less job, or one PanDA no longer wants to hear of.
            _set(conn, ctx, job, next_report_at=None)
            continue
        if job.heartbeat_less:
            try:
                path = write_report_file(job, ctx.options)
            except (OSError, ValueError) as error:
                log.error("cannot write %s: %s", REPORT_FILE, error)
                _failed(conn, ctx, [job], outcome)
                continue
            log.info("final report (%s) written to %s", told(job), path)
        else:
            log.info("no final report: PanDA answered %s before", job.panda_command)
        _final(conn, ctx, [job], None, outcome)


def write_report_file(job: _Job, opts: PropagatorOptions) -> Path:
    """Write the final report as ``<access_point>/jobReport.json``, atomically; its path."""
    if not job.access_point:
        raise ValueError("the job has no access_point")
    directory = Path(job.access_point)
    if not directory.is_absolute():
        raise ValueError(f"access_point {job.access_point!r} is not an absolute path")
    if not directory.is_dir():
        raise ValueError(f"access_point {directory} is not a directory")
    report = {"jobId": job.pandaid, "state": told(job), **report_of(job, opts)}
    if job.attempt > 0:
        report["attemptNr"] = job.attempt
    target = directory / REPORT_FILE
    text = json.dumps(report, sort_keys=True)
    atomic_write(target, text.encode("utf-8"), mode=0o644, durable=True)
    return target


# -- jobs sent to PanDA ----------------------------------------------------------------------------


def _settle_in_doubt(ctx: Context, sends: list[_Send], outcome: _Outcome) -> list[_Send]:
    """Final reports sent before whose answer was never recorded (the process was killed, the
    database went away, the reply was lost): ask PanDA for those jobs' status. Where PanDA has
    ended the job, record it as reported instead of sending the report again. Returns what is
    still to send; jobs PanDA cannot be asked about now stay due."""
    doubtful = [send for send in sends if send.job.state in FINAL and send.job.final_sent_at]
    if not doubtful:
        return sends
    opts: PropagatorOptions = ctx.options
    client = runtime.panda_client(ctx, retries=0)
    status: dict[int, str] = {}
    try:
        for start in range(0, len(doubtful), opts.batch_size):  # ids travel in the URL
            chunk = doubtful[start : start + opts.batch_size]
            status.update(client.get_job_status([send.job.pandaid for send in chunk]))
    except PandaError as error:
        outcome.unreachable += len(doubtful)
        problem = f"status of final reports in doubt: {error}"
        if problem not in outcome.problems:
            outcome.problems.append(problem)
        asked = {send.job.id for send in doubtful}
        return [send for send in sends if send.job.id not in asked]
    ended = [send for send in doubtful if status.get(send.job.pandaid) in PANDA_ENDED]
    for send in ended:
        job_log(ctx.log, pandaid=send.job.pandaid, ce=send.job.ce).info(
            "final report (%s) sent at %s with its answer lost: PanDA shows %s, not sent again",
            send.update.state,
            send.job.final_sent_at,
            status[send.job.pandaid],
        )

    def record(conn: Connection) -> None:
        for send in ended:
            reason = f"final report ({send.update.state}) in doubt: PanDA shows "
            _final(
                conn,
                ctx,
                [send.job],
                send.update.state,
                outcome,
                reason=reason + status[send.job.pandaid],
            )

    if ended:
        ctx.db.run(record)
    settled = {send.job.id for send in ended}
    return [send for send in sends if send.job.id not in settled]


def _mark_final_sent(ctx: Context, sends: list[_Send]) -> None:
    """Note, before the call, which final reports are about to go (see _settle_in_doubt)."""
    ids = [send.job.id for send in sends if send.job.state in FINAL]
    if not ids:
        return
    t = panda_jobs
    now = utcnow()
    ctx.db.run(
        lambda conn: conn.execute(
            sa.update(t)
            .where(t.c.id.in_(ids), t.c.lease_owner == ctx.owner)
            .values(final_sent_at=now)
        )
    )


def _send(ctx: Context, sends: list[_Send], outcome: _Outcome) -> None:
    opts: PropagatorOptions = ctx.options
    # No retries inside a call: a job PanDA did not get stays due and goes in a later cycle,
    # so retrying here would only add log lines and hold the cycle up.
    client = runtime.panda_client(ctx, retries=0)
    batches = _batches(sends, opts.batch_size, opts.max_request_bytes)
    with ThreadPoolExecutor(
        max_workers=min(opts.in_flight, len(batches)), thread_name_prefix="propagator"
    ) as pool:
        futures: list[Future[list[UpdateResult]]] = [
            pool.submit(client.update_jobs_bulk, [send.update for send in batch])
            for batch in batches
        ]
        for batch, future in zip(batches, futures, strict=True):
            if future.cancelled():
                outcome.unreachable += len(batch)
                continue
            try:
                results = future.result()
            except (PandaTransportError, PandaAuthError) as error:
                # PanDA is not reachable with this credential: leave these jobs due, skip the rest.
                outcome.unreachable += len(batch)
                if str(error) not in outcome.problems:
                    outcome.problems.append(str(error))
                outcome.auth = outcome.auth or isinstance(error, PandaAuthError)
                for pending in futures:
                    pending.cancel()
                continue
            except PandaError as error:
                # PanDA refused or garbled the whole call: a failure of each job in it.
                ctx.log.error("bulk update of %d job(s) failed: %s", len(batch), error)
                refused = [send.job for send in batch]
                ctx.db.run(partial(_failed, ctx=ctx, jobs=refused, outcome=outcome))
                continue
            outcome.sent += len(batch)
            maybe_crash(CRASH_POINT)
            ctx.db.run(partial(_record, ctx=ctx, batch=batch, results=results, outcome=outcome))


def _batches(sends: Sequence[_Send], size: int, max_bytes: int) -> list[list[_Send]]:
    """``sends`` in order, in batches of at most ``size`` reports adding up to at most
    ``max_bytes`` (their fields as JSON; a larger report makes a batch of its own): a request
    PanDA's web server refuses as too large (HTTP 413) would fail every job in it, each time."""
    batches: list[list[_Send]] = []
    current: list[_Send] = []
    used = 0
    for send in sends:
        cost = len(json.dumps(dict(send.update.fields), default=str).encode()) + 100
        if current and (len(current) >= size or used + cost > max_bytes):
            batches.append(current)
            current, used = [], 0
        current.append(send)
        used += cost
    if current:
        batches.append(current)
    return batches


def _record(
    conn: Connection,
    ctx: Context,
    batch: Sequence[_Send],
    results: Sequence[UpdateResult],
    outcome: _Outcome,
) -> None:
    heartbeats: list[tuple[_Job, str]] = []
    failures: list[_Job] = []
    for send, result in zip(batch, results, strict=True):
        job = send.job
        log = job_log(ctx.log, pandaid=job.pandaid, ce=job.ce)
        if not result.ok:
            log.warning("PanDA refused the %s report: %s", send.update.state, result.error)
            failures.append(job)
            continue
        command = result.command
        if job.state in FINAL:
            if command:
                log.info("final report answered with %s: PanDA is done with the job", command)
            _final(conn, ctx, [job], send.update.state, outcome, command=command)
        elif command in STOP_COMMANDS:
            _stop(conn, ctx, job, send.update.state, command=command, outcome=outcome)
        else:
            if command:
                log.info("PanDA answered %s (ignored)", command)
            heartbeats.append((job, send.update.state))
    if heartbeats:
        _heartbeats(conn, ctx, heartbeats)
        outcome.acknowledged += len(heartbeats)
    if failures:
        _failed(conn, ctx, failures, outcome)


def _heartbeats(conn: Connection, ctx: Context, jobs: list[tuple[_Job, str]]) -> None:
    """Record accepted heartbeats, each job with its own next report time (one statement)."""
    opts: PropagatorOptions = ctx.options
    now = utcnow()
    t = panda_jobs
    stmt = (
        sa.update(t)
        .where(
            t.c.id == sa.bindparam("b_id"),
            t.c.state == sa.bindparam("b_state"),
            t.c.lease_owner == ctx.owner,
        )
        .values(
            panda_status=sa.bindparam("b_status"),
            panda_reported_at=now,
            next_report_at=sa.bindparam("b_next"),
            report_failures=0,
            updated_at=now,
            lease_owner=None,
            lease_expires=None,
        )
    )
    params = [
        {"b_id": job.id, "b_state": job.state, "b_status": status, "b_next": _next_time(opts, now)}
        for job, status in jobs
    ]
    conn.execute(stmt, params)


def _next_time(opts: PropagatorOptions, now: datetime) -> datetime:
    spread = random.uniform(1 - opts.jitter, 1 + opts.jitter)
    return now + seconds(opts.interval * spread)


def _final(
    conn: Connection,
    ctx: Context,
    jobs: list[_Job],
    status: str | None,
    outcome: _Outcome,
    *,
    command: str | None = None,
    reason: str | None = None,
) -> None:
    """Move final jobs to done*: PanDA has the final report (``status``), or wants none."""
    now = utcnow()
    values: dict[str, Any] = {"next_report_at": None, "report_failures": 0}
    if status is not None:
        values.update(panda_status=status, panda_reported_at=now)
    if command is not None:
        values.update(panda_command=command, panda_command_at=now)
    for job in jobs:
        moved = transition(
            conn,
            Layer.PANDA,
            [job.id],
            job.state,
            FINAL[PandaJobState(job.state)],
            actor=Actor.PROPAGATOR,
            reason=reason or _final_reason(status, command),
            owner=ctx.owner,
            values=values,
        )
        outcome.finals += len(moved)


def _final_reason(status: str | None, command: str | None) -> str:
    if status is None:
        return "no report wanted"
    return f"final report ({status}) accepted" + (f", PanDA answered {command}" if command else "")


def _stop(
    conn: Connection, ctx: Context, job: _Job, status: str, *, command: str, outcome: _Outcome
) -> None:
    """PanDA answered tobekilled, badattemptnr or alreadydone: stop reporting, kill the CE job."""
    log = job_log(ctx.log, pandaid=job.pandaid, ce=job.ce)
    now = utcnow()
    values = {
        "panda_status": status,
        "panda_reported_at": now,
        "panda_command": command,
        "panda_command_at": now,
        "next_report_at": None,
        "report_failures": 0,
    }
    if job.state in ACTIVE:
        moved = transition(
            conn,
            Layer.PANDA,
            [job.id],
            job.state,
            PandaJobState.TOBEKILLED,
            actor=Actor.PROPAGATOR,
            reason=f"PanDA command {command}",
            owner=ctx.owner,
            values=values,
        )
        if moved:
            log.warning("PanDA answered %s: job to be killed, no more reports", command)
    elif _set(conn, ctx, job, **values):  # already tobekilled (an operator's kill)
        log.warning("PanDA answered %s: no more reports", command)
    outcome.stopped += 1


def _failed(conn: Connection, ctx: Context, jobs: list[_Job], outcome: _Outcome) -> None:
    """A report that did not go through: count it, retry with back-off (at most ``interval``)."""
    opts: PropagatorOptions = ctx.options
    now = utcnow()
    for job in jobs:
        failures = job.report_failures + 1
        delay = min(backoff(opts.retry_backoff, opts.interval, failures), opts.interval)
        _set(conn, ctx, job, report_failures=failures, next_report_at=now + seconds(delay))
        outcome.errors += 1


def _set(conn: Connection, ctx: Context, job: _Job, **values: Any) -> bool:
    """Write columns of a claimed job still in the state it was claimed in; release it."""
    t = panda_jobs
    result = conn.execute(
        sa.update(t)
        .where(t.c.id == job.id, t.c.state == job.state, t.c.lease_owner == ctx.owner)
        .values(**values, updated_at=utcnow(), lease_owner=None, lease_expires=None)
    )
    return bool(result.rowcount)


def _log_cycle(ctx: Context, outcome: _Outcome, claimed: int) -> None:
    if outcome.unreachable:
        what = "refused act's credential" if outcome.auth else "is unreachable"
        ctx.log.error(
            "PanDA %s: %d job(s) stay due (%s)",
            what,
            outcome.unreachable,
            "; ".join(outcome.problems),
        )
    if outcome.sent or outcome.finals or outcome.errors:
        ctx.log.info(
            "reported %d of %d due job(s): %d heartbeat(s), %d final, %d stopped by PanDA, "
            "%d error(s)",
            outcome.sent,
            claimed,
            outcome.acknowledged,
            outcome.finals,
            outcome.stopped,
            outcome.errors,
        )


DAEMON = DaemonSpec(run_once=run_once, options=PropagatorOptions, doc=__doc__ or "")
