"""The poller: asks the CEs about the jobs they hold and moves each job's engine state along.

Each cycle it claims CE jobs in ``submitted``, ``running``, ``finishing`` and ``cancelling`` whose
``next_check_at`` is due (NULL is due), asks their CE in batches of the back end's
``Limits.status_batch``, and maps the answer (a :class:`~act.engine.backend.CEReportedState`):

* SUBMITTED/RUNNING/FINISHING/FINISHED: ``submitted``/``running``/``finishing``/``finished`` (a
  state the table does not allow from the current one, e.g. back from ``finishing`` to
  ``running``, is not followed: the CE's states lag behind, see research/arc-ce.md);
* FAILED: ``failed``, ``toresubmit`` or ``torerun``, as :mod:`act.engine.resubmit` decides;
* CANCELLED: ``cancelled`` ("killed outside act" unless the job was being cancelled);
* a job in ``cancelling`` that ended otherwise is ``cancelled`` too: the kill is what was wanted;
* unknown to the CE: nothing, until the CE last knew it (or it was submitted) longer than
  ``engine.poll.lost_after`` ago: then ``lost`` (``cancelled`` when it was being cancelled).

What the CE says about the job (exit code, errors, node, resources, times) is stored with it,
``last_seen_at`` is set, and ``next_check_at`` is set to ``engine.poll.<state>`` seconds ±10%
ahead. A CE that does not answer (:class:`~act.engine.backend.CEUnavailable`) changes nothing but
``next_check_at`` (:data:`UNAVAILABLE_RETRY`), with one log line per CE. A job that FAILED within
``engine.breaker.fast_fail`` seconds of its start counts as a failure of its CE's circuit
breaker; a FINISHED job as a success.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy.engine import Connection

from act.common.claims import release
from act.common.daemon import DaemonSpec
from act.common.logs import job_log
from act.common.states import C_POLLED, EDGES, Actor, CEJobState, Layer
from act.common.timeutil import iso, seconds, utcnow
from act.common.transitions import transition
from act.engine import breaker
from act.engine.backend import CE, Backend, CEReportedState, CEUnavailable, JobStatus, Limits
from act.engine.config import Context
from act.engine.queries import ToPoll, due_for_check
from act.engine.resubmit import classify
from act.engine.runtime import pool
from act.engine.settings import EngineSettings
from act.engine.work import (
    batches,
    by_ce,
    claim_jobs,
    jittered,
    keep,
    resolve_ce,
    set_each,
    update_mine,
)

#: The engine states the poller follows.
POLLED = C_POLLED
#: Seconds until a job of a CE that did not answer is asked about again (±10%).
UNAVAILABLE_RETRY = 60.0
#: ``error_text`` is cut to this many characters.
ERROR_LEN = 16000
_NAMED = {
    CEReportedState.SUBMITTED: CEJobState.SUBMITTED,
    CEReportedState.RUNNING: CEJobState.RUNNING,
    CEReportedState.FINISHING: CEJobState.FINISHING,
    CEReportedState.FINISHED: CEJobState.FINISHED,
}


def run_once(ctx: Context) -> bool:
    rows = claim_jobs(ctx, POLLED, ToPoll, where=[due_for_check(utcnow())])
    engines = pool(ctx)
    for name, jobs in ctx.until_stopped(list(by_ce(rows).items()), "CE(s) of claimed jobs"):
        found = resolve_ce(ctx, engines, name)
        if found is None:
            _later(ctx, jobs, ctx.settings.engine.poll.lost_after)
            continue
        _poll_ce(ctx, *found, jobs)
    return len(rows) >= ctx.daemon.batch


def _poll_ce(ctx: Context, ce: CE, backend: Backend, jobs: list[ToPoll]) -> None:
    limits = backend.limits(ce)
    pending = list(jobs)
    for claimed in ctx.until_stopped(list(batches(jobs, limits.status_batch)), "batch(es)"):
        batch = keep(ctx, claimed)
        asked = [job.ce_job_id for job in batch if job.ce_job_id]
        try:
            statuses = backend.status(ce, asked) if asked else {}
        except CEUnavailable as error:
            ctx.log.warning(
                "ce=%s: unavailable (%s); %d job(s) checked again in about %.0fs",
                ce.name,
                error.cause,
                len(pending),
                UNAVAILABLE_RETRY,
            )
            _later(ctx, pending, UNAVAILABLE_RETRY)
            return
        except Exception:
            ctx.log.exception("ce=%s: status of %d job(s) failed", ce.name, len(asked))
            _later(ctx, pending, UNAVAILABLE_RETRY)
            return
        ctx.db.run(partial(_apply, ctx=ctx, ce=ce, limits=limits, jobs=batch, statuses=statuses))
        pending = pending[len(claimed) :]


def _later(ctx: Context, jobs: list[ToPoll], delay: float) -> None:
    """Only push the next check of ``jobs`` back (and release them)."""
    if jobs:
        at = utcnow() + seconds(jittered(delay))
        ctx.db.run(
            lambda conn: update_mine(conn, ctx, [job.id for job in jobs], {"next_check_at": at})
        )


@dataclass(frozen=True)
class _Plan:
    """What the CE's answer means for one job: its columns, and its move (target == state: none)."""

    job: ToPoll
    status: JobStatus | None
    target: str
    reason: str
    values: dict[str, Any]


def _apply(
    conn: Connection,
    *,
    ctx: Context,
    ce: CE,
    limits: Limits,
    jobs: list[ToPoll],
    statuses: Mapping[str, JobStatus | None],
) -> None:
    """Write one status batch: per-row columns, then one transition per (from, to, reason)."""
    now = utcnow()
    plans = [
        _plan(ctx, limits, job, statuses.get(job.ce_job_id) if job.ce_job_id else None, now)
        for job in jobs
    ]
    set_each(conn, ctx, {plan.job.id: plan.values for plan in plans})
    groups: dict[tuple[str, str, str], list[_Plan]] = defaultdict(list)
    for plan in plans:
        if plan.target != plan.job.state:
            groups[(plan.job.state, plan.target, plan.reason)].append(plan)
    moved: set[int] = set()
    for (source, target, reason), group in groups.items():
        moved.update(
            transition(
                conn,
                Layer.CE,
                [plan.job.id for plan in group],
                source,
                target,
                actor=Actor.POLLER,
                reason=reason,
                owner=ctx.owner,
            )
        )
    release(conn, Layer.CE, ctx.owner, [plan.job.id for plan in plans if plan.job.id not in moved])
    for plan in plans:
        if plan.job.id in moved:
            _moved(conn, ctx, ce, plan, now)


def _moved(conn: Connection, ctx: Context, ce: CE, plan: _Plan, now: datetime) -> None:
    """Log a move, and count a finished or fast-failed job for its CE's circuit breaker."""
    job, status, engine = plan.job, plan.status, ctx.settings.engine
    log = job_log(ctx.log, panda_id=job.panda_id, ce=ce.name)
    if status is None:
        log.warning("%s -> %s: %s", job.state, plan.target, plan.reason)
        return
    log.info("%s -> %s (%s)", job.state, plan.target, plan.reason)
    if job.state == CEJobState.CANCELLING:
        return
    if status.state is CEReportedState.FINISHED:
        breaker.record_success(conn, ce.name, now=now)
    elif status.state is CEReportedState.FAILED and _fast(
        job, status, now, engine.breaker.fast_fail
    ):
        error = plan.values.get("error_text", job.error_text) or status.raw_state
        breaker.record_failure(
            conn,
            ce.name,
            error=f"job {job.id} failed fast: {error}",
            now=now,
            settings=engine.breaker,
        )


def _next_check(engine: EngineSettings, state: str, now: datetime) -> datetime | None:
    delay = getattr(engine.poll, state, None) if state in POLLED else None
    return None if delay is None else now + seconds(jittered(float(delay)))


def _plan(
    ctx: Context, limits: Limits, job: ToPoll, status: JobStatus | None, now: datetime
) -> _Plan:
    engine = ctx.settings.engine
    if status is None:
        seen: datetime = job.last_seen_at or job.submitted_at or job.state_changed_at
        if now - seen <= seconds(engine.poll.lost_after):
            values: dict[str, Any] = {"next_check_at": _next_check(engine, job.state, now)}
            return _Plan(job, None, job.state, "", values)
        target: str = (
            CEJobState.CANCELLED if job.state == CEJobState.CANCELLING else CEJobState.LOST
        )
        reason = f"unknown to the CE since {iso(seen)}"
        return _Plan(job, None, target, reason, {"next_check_at": None})
    values = _status_values(status, now)
    target, reason = _target(ctx, limits, job, status, values.get("error_text", job.error_text))
    allowed = EDGES.get((Layer.CE, job.state, target))
    if target != job.state and (allowed is None or Actor.POLLER not in allowed.actors):
        ctx.log.debug(
            "ce=%s: CE state %s, %s kept (the CE lags behind)",
            job.ce_name,
            status.raw_state,
            job.state,
        )
        target, reason = job.state, ""
    values["next_check_at"] = _next_check(engine, target, now)
    return _Plan(job, status, target, reason, values)


def _status_values(status: JobStatus, now: datetime) -> dict[str, Any]:
    values: dict[str, Any] = {"ce_state": status.raw_state[:128], "last_seen_at": now}
    known = {
        "exit_code": status.exit_code,
        "worker_node": status.worker_node[:255] if status.worker_node else None,
        "cpu_seconds": status.cpu_seconds,
        "wall_seconds": status.wall_seconds,
        "max_rss_kb": status.max_rss_kb,
        "started_at": status.started_at,
        "ended_at": status.ended_at,
    }
    values.update({key: value for key, value in known.items() if value is not None})
    if status.errors:
        values["error_text"] = "; ".join(status.errors)[:ERROR_LEN]
    return values


def _target(
    ctx: Context, limits: Limits, job: ToPoll, status: JobStatus, error_text: str | None
) -> tuple[str, str]:
    """The engine state the CE's answer leads to, and the reason recorded with the move."""
    if job.state == CEJobState.CANCELLING:
        if status.state is CEReportedState.CANCELLED:
            return CEJobState.CANCELLED, "CE confirmed the kill"
        if status.state in (CEReportedState.FINISHED, CEReportedState.FAILED):
            return CEJobState.CANCELLED, f"ended at the CE ({status.raw_state}) before the kill"
        return job.state, ""
    if status.state is CEReportedState.CANCELLED:
        return CEJobState.CANCELLED, f"killed outside act ({status.raw_state})"
    if status.state is CEReportedState.FAILED:
        decision = classify(
            error_text,
            ctx.settings.engine.resubmit,
            attempts_left=job.attempts_left,
            can_restart=limits.can_restart,
            restartable=status.restartable,
            lost=status.lost,
        )
        return decision.state, f"CE state {status.raw_state}: {decision.reason}"
    return _NAMED[status.state], f"CE state {status.raw_state}"


def _fast(job: ToPoll, status: JobStatus, now: datetime, fast_fail: float) -> bool:
    """Whether the job failed within ``fast_fail`` seconds of its start (or submission)."""
    start = status.started_at or job.started_at or job.submitted_at
    if start is None:
        return True  # it never started
    end = status.ended_at or now
    return (end - start).total_seconds() <= fast_fail


DAEMON = DaemonSpec(run_once=run_once, doc=__doc__ or "")
