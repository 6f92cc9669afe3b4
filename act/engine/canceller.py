"""The canceller: kills the CE jobs someone asked to cancel (``tocancel``).

* A job that never reached a CE (no CE named, or no ``ce_job_id`` and the CE does not know its
  token either) is ``cancelled`` at once. A job with a token but no ``ce_job_id`` may have been
  submitted by a process that died before recording it: the CE is asked (``Backend.find``) first.
* Otherwise its CE is asked to kill it: accepted → ``cancelling`` (the poller moves it to
  ``cancelled`` when the CE reports it KILLED); unknown to the CE → ``cancelled``; an error, or
  a CE that does not answer → it stays and is tried again in a later cycle.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from sqlalchemy.engine import Connection

from act.common.daemon import DaemonSpec
from act.common.logs import job_log
from act.common.states import Actor, CEJobState, Layer
from act.common.timeutil import seconds, utcnow
from act.common.transitions import transition
from act.engine.backend import CE, Backend, CEUnavailable, Outcome
from act.engine.config import Context
from act.engine.queries import ToCancel
from act.engine.runtime import pool
from act.engine.work import (
    batches,
    by_ce,
    claim_jobs,
    give_back,
    jittered,
    keep,
    resolve_ce,
    update_mine,
)


def run_once(ctx: Context) -> bool:
    rows = claim_jobs(ctx, [CEJobState.TOCANCEL], ToCancel)
    engines = pool(ctx)
    for name, jobs in ctx.until_stopped(list(by_ce(rows).items()), "CE(s) of claimed jobs"):
        if name is None:  # never sent anywhere
            _cancelled(ctx, jobs, None, "never reached a CE")
            continue
        found = resolve_ce(ctx, engines, name)
        if found is None:
            give_back(ctx, [job.id for job in jobs])
            continue
        ce, backend = found
        try:
            _cancel_at(ctx, ce, backend, jobs)
        except CEUnavailable as error:
            ctx.log.warning("ce=%s: unavailable (%s); kills retried later", ce.name, error.cause)
            give_back(ctx, [job.id for job in jobs])
    return len(rows) >= ctx.daemon.batch


def _cancel_at(ctx: Context, ce: CE, backend: Backend, jobs: list[ToCancel]) -> None:
    ids = {job.id: job.ce_job_id for job in jobs}
    unsent = [job for job in jobs if job.ce_job_id is None]
    with_token = [job.token for job in unsent if job.token]
    found = backend.find(ce, with_token) if with_token else {}
    for job in unsent:
        ids[job.id] = found.get(job.token) if job.token else None
    never = [job for job in jobs if ids[job.id] is None]
    _cancelled(ctx, never, ce.name, "never reached a CE")
    to_kill = [job for job in jobs if ids[job.id] is not None]
    limits = backend.limits(ce)
    for claimed in ctx.until_stopped(list(batches(to_kill, limits.status_batch)), "batch(es)"):
        batch = keep(ctx, claimed)
        if not batch:
            continue
        outcomes = backend.kill(ce, [str(ids[job.id]) for job in batch])
        ctx.db.run(partial(_apply, ctx=ctx, ce=ce, jobs=batch, ids=ids, outcomes=outcomes))


def _apply(
    conn: Connection,
    *,
    ctx: Context,
    ce: CE,
    jobs: list[ToCancel],
    ids: dict[int, str | None],
    outcomes: dict[str, Outcome],
) -> None:
    poll = ctx.settings.engine.poll
    for job in jobs:
        ce_job_id = str(ids[job.id])
        outcome = outcomes.get(ce_job_id)
        log = job_log(ctx.log, panda_id=job.panda_id, ce=ce.name)
        if outcome is not None and outcome.gone:
            target, reason = CEJobState.CANCELLED, "unknown to the CE: nothing to kill"
            values: dict[str, Any] = {"ce_job_id": ce_job_id}
        elif outcome is not None and outcome.ok:
            target, reason = CEJobState.CANCELLING, "kill sent to the CE"
            values = {
                "ce_job_id": ce_job_id,
                "next_check_at": utcnow() + seconds(jittered(poll.cancelling)),
            }
        else:
            error = outcome.error if outcome is not None else "no answer for this job"
            log.warning("kill failed, retried later: %s", error)
            update_mine(conn, ctx, [job.id], {})
            continue
        moved = transition(
            conn,
            Layer.CE,
            [job.id],
            CEJobState.TOCANCEL,
            target,
            actor=Actor.CANCELLER,
            reason=reason,
            owner=ctx.owner,
            values=values,
        )
        if moved:
            log.info("tocancel -> %s (%s)", target, reason)


def _cancelled(ctx: Context, jobs: list[ToCancel], ce: str | None, reason: str) -> None:
    if not jobs:
        return
    moved = ctx.db.run(
        lambda conn: transition(
            conn,
            Layer.CE,
            [job.id for job in jobs],
            CEJobState.TOCANCEL,
            CEJobState.CANCELLED,
            actor=Actor.CANCELLER,
            reason=reason,
            owner=ctx.owner,
        )
    )
    for job in jobs:
        if job.id in moved:
            job_log(ctx.log, panda_id=job.panda_id, ce=ce).info(
                "tocancel -> cancelled (%s)", reason
            )


DAEMON = DaemonSpec(run_once=run_once, doc=__doc__ or "")
