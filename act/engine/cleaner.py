"""The cleaner: removes ended jobs and their files from the CE (``toclean`` → ``cleaned``).

A job is ``cleaned`` only once its CE confirms the clean (or no longer knows the job, or the job
never reached a CE). An error, or a CE that does not answer, leaves the job to be tried again in a
later cycle, until it has waited ``engine.clean.give_up_after`` seconds since it entered
``toclean``: then it is ``cleaned`` with the reason "gave up: <last error>" and a WARNING naming
the job and its CE (the CE may still hold its files). Once a job is ``cleaned``, its local copy
of the outputs (``output_dir``, made by the CE fetcher under ``engine.fetch.dir``) is removed too:
the application layer only moves a CE job to ``toclean`` when it no longer needs those files (the
validator has decided, and published the logs). A directory outside ``engine.fetch.dir`` is never
touched.
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from functools import partial

from sqlalchemy.engine import Connection

from act.common.daemon import DaemonSpec
from act.common.logs import job_log
from act.common.states import Actor, CEJobState, Layer
from act.common.timeutil import seconds, utcnow
from act.common.transitions import transition
from act.engine.backend import CE, Backend, CEUnavailable
from act.engine.config import Context
from act.engine.fetcher import base_dir
from act.engine.queries import ToClean
from act.engine.runtime import pool
from act.engine.work import batches, by_ce, claim_jobs, keep, resolve_ce, update_mine


def run_once(ctx: Context) -> bool:
    rows = claim_jobs(ctx, [CEJobState.TOCLEAN], ToClean)
    engines = pool(ctx)
    for name, jobs in ctx.until_stopped(list(by_ce(rows).items()), "CE(s) of claimed jobs"):
        nothing = [job for job in jobs if job.ce_job_id is None]
        if nothing:
            _record(ctx, name, nothing, {job.id: None for job in nothing}, "nothing at a CE")
        at_ce = [job for job in jobs if job.ce_job_id is not None]
        if not at_ce:
            continue
        found = resolve_ce(ctx, engines, name)
        if found is None:
            why = f"CE {name!r} is not configured or its back end cannot be made"
            _record(ctx, name, at_ce, {job.id: why for job in at_ce}, "")
            continue
        _clean_at(ctx, *found, at_ce)
    return len(rows) >= ctx.daemon.batch


def _clean_at(ctx: Context, ce: CE, backend: Backend, jobs: list[ToClean]) -> None:
    limits = backend.limits(ce)
    batched = list(batches(jobs, limits.status_batch))
    for done, claimed in enumerate(ctx.until_stopped(batched, "batch(es)")):
        batch = keep(ctx, claimed)
        if not batch:
            continue
        try:
            outcomes = backend.clean(ce, [str(job.ce_job_id) for job in batch])
        except CEUnavailable as error:
            ctx.log.warning("ce=%s: unavailable (%s); cleans retried later", ce.name, error.cause)
            rest = jobs[done * max(1, limits.status_batch) :]
            _record(
                ctx,
                ce.name,
                rest,
                dict.fromkeys((j.id for j in rest), f"CE unavailable: {error.cause}"),
                "",
            )
            return
        errors: dict[int, str | None] = {}
        for job in batch:
            outcome = outcomes.get(str(job.ce_job_id))
            if outcome is None:
                errors[job.id] = "no answer for this job"
            elif outcome.ok or outcome.gone:
                errors[job.id] = None
            else:
                errors[job.id] = outcome.error or "clean refused"
        _record(ctx, ce.name, batch, errors, "CE confirmed the clean")


def _record(
    ctx: Context,
    ce: str | None,
    jobs: list[ToClean],
    errors: dict[int, str | None],
    reason: str,
) -> None:
    """``cleaned`` for jobs without an error; the others stay unless waited for too long."""
    cleaned = ctx.db.run(
        partial(_apply, ctx=ctx, ce=ce, jobs=jobs, errors=errors, reason=reason, now=utcnow())
    )
    _remove_local(ctx, [job for job in jobs if job.id in set(cleaned)])


def _remove_local(ctx: Context, jobs: list[ToClean]) -> None:
    """Remove the local output copies of cleaned jobs (only below the fetch directory)."""
    base = os.path.realpath(base_dir(ctx))
    for job in jobs:
        if not job.output_dir:
            continue
        path = os.path.realpath(job.output_dir)
        if os.path.commonpath([base, path]) != base or path == base:
            job_log(ctx.log, panda_id=job.panda_id, ce=job.ce_name).warning(
                "output_dir %s is outside %s: left alone", job.output_dir, base
            )
            continue
        shutil.rmtree(path, ignore_errors=True)


def _apply(
    conn: Connection,
    *,
    ctx: Context,
    ce: str | None,
    jobs: list[ToClean],
    errors: dict[int, str | None],
    reason: str,
    now: datetime,
) -> list[int]:
    """Record the outcomes; the ids moved to ``cleaned``."""
    give_up = seconds(ctx.settings.engine.clean.give_up_after)
    done = [job.id for job in jobs if errors.get(job.id) is None]
    cleaned = _cleaned(conn, ctx, done, reason) if done else []
    for job in jobs:
        error = errors.get(job.id)
        if error is None:
            continue
        log = job_log(ctx.log, panda_id=job.panda_id, ce=ce)
        entered: datetime = job.state_changed_at
        if now - entered < give_up:
            log.warning("clean failed, retried later: %s", error)
            update_mine(conn, ctx, [job.id], {})
            continue
        if moved := _cleaned(conn, ctx, [job.id], f"gave up: {error}"):
            cleaned += moved
            log.warning(
                "job %d (ce_job_id %s) marked cleaned without the CE's confirmation after %.0fs "
                "in toclean: gave up: %s",
                job.id,
                job.ce_job_id,
                (now - entered).total_seconds(),
                error,
            )
    return cleaned


def _cleaned(conn: Connection, ctx: Context, ids: list[int], reason: str) -> list[int]:
    return transition(
        conn,
        Layer.CE,
        ids,
        CEJobState.TOCLEAN,
        CEJobState.CLEANED,
        actor=Actor.CLEANER,
        reason=reason,
        owner=ctx.owner,
    )


DAEMON = DaemonSpec(run_once=run_once, doc=__doc__ or "")
