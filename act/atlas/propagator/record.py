"""The propagator's records of PanDA's answers: heartbeats accepted (next report scheduled),
final reports accepted (to done*), PanDA's stop commands, and failures retried with back-off."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.atlas.config import Context
from act.atlas.panda_client import (
    UpdateResult,
)
from act.atlas.propagator.jobs import (
    ACTIVE,
    FINAL,
    STOP_COMMANDS,
    Job,
    Outcome,
    PropagatorOptions,
    Send,
)
from act.common.logs import job_log
from act.common.schema import panda_jobs
from act.common.states import Actor, Layer, PandaJobState
from act.common.timeutil import backoff, seconds, utcnow
from act.common.transitions import transition


def record_batch(
    conn: Connection,
    ctx: Context,
    batch: Sequence[Send],
    results: Sequence[UpdateResult],
    outcome: Outcome,
) -> None:
    heartbeats: list[tuple[Job, str]] = []
    failures: list[Job] = []
    for send, result in zip(batch, results, strict=True):
        job = send.job
        log = job_log(ctx.log, panda_id=job.panda_id, ce=job.ce)
        if not result.ok:
            log.warning("PanDA refused the %s report: %s", send.update.state, result.error)
            failures.append(job)
            continue
        command = result.command
        if job.state in FINAL:
            if command:
                log.info("final report answered with %s: PanDA is done with the job", command)
            finish(conn, ctx, [job], send.update.state, outcome, command=command)
        elif command in STOP_COMMANDS:
            stop_reporting(conn, ctx, job, send.update.state, command=command, outcome=outcome)
        else:
            if command:
                log.info("PanDA answered %s (ignored)", command)
            heartbeats.append((job, send.update.state))
    if heartbeats:
        record_heartbeats(conn, ctx, heartbeats)
        outcome.acknowledged += len(heartbeats)
    if failures:
        report_failed(conn, ctx, failures, outcome)


def record_heartbeats(conn: Connection, ctx: Context, jobs: list[tuple[Job, str]]) -> None:
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
        {"b_id": job.id, "b_state": job.state, "b_status": status, "b_next": next_time(opts, now)}
        for job, status in jobs
    ]
    conn.execute(stmt, params)


def next_time(opts: PropagatorOptions, now: datetime) -> datetime:
    spread = random.uniform(1 - opts.jitter, 1 + opts.jitter)
    return now + seconds(opts.interval * spread)


def finish(
    conn: Connection,
    ctx: Context,
    jobs: list[Job],
    status: str | None,
    outcome: Outcome,
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
            reason=reason or final_reason(status, command),
            owner=ctx.owner,
            values=values,
        )
        outcome.finals += len(moved)


def final_reason(status: str | None, command: str | None) -> str:
    if status is None:
        return "no report wanted"
    return f"final report ({status}) accepted" + (f", PanDA answered {command}" if command else "")


def stop_reporting(
    conn: Connection, ctx: Context, job: Job, status: str, *, command: str, outcome: Outcome
) -> None:
    """PanDA answered tobekilled, badattemptnr or alreadydone: stop reporting, kill the CE job."""
    log = job_log(ctx.log, panda_id=job.panda_id, ce=job.ce)
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
    elif set_columns(conn, ctx, job, **values):  # already tobekilled (an operator's kill)
        log.warning("PanDA answered %s: no more reports", command)
    outcome.stopped += 1


def report_failed(conn: Connection, ctx: Context, jobs: list[Job], outcome: Outcome) -> None:
    """A report that did not go through: count it, retry with back-off (at most ``interval``)."""
    opts: PropagatorOptions = ctx.options
    now = utcnow()
    for job in jobs:
        failures = job.report_failures + 1
        delay = min(backoff(opts.retry_backoff, opts.interval, failures), opts.interval)
        set_columns(conn, ctx, job, report_failures=failures, next_report_at=now + seconds(delay))
        outcome.errors += 1


def set_columns(conn: Connection, ctx: Context, job: Job, **values: Any) -> bool:
    """Write columns of a claimed job still in the state it was claimed in; release it."""
    t = panda_jobs
    result = conn.execute(
        sa.update(t)
        .where(t.c.id == job.id, t.c.state == job.state, t.c.lease_owner == ctx.owner)
        .values(**values, updated_at=utcnow(), lease_owner=None, lease_expires=None)
    )
    return bool(result.rowcount)
