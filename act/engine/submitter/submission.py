"""Step 4 of the submitter, second half: the batches sent to each CE, crash-safely (the intent,
the CE call, the record; see :mod:`act.engine.submitter`)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common import claims
from act.common.faults import maybe_crash
from act.common.logs import job_log
from act.common.schema import ce_jobs, ces
from act.common.states import CEJobState
from act.common.timeutil import seconds, utcnow
from act.common.transitions import transition
from act.engine import breaker
from act.engine.backend import CE, Backend, CEUnavailable, SubmitRequest, Submitted
from act.engine.config import Context
from act.engine.queries import ToSubmit, breaker_state
from act.engine.runtime import EnginePool
from act.engine.submitter.budgets import Budget, assign, budgets, chooser_of
from act.engine.submitter.jobs import (
    CE_LAYER,
    ERROR_LEN,
    ME,
    SPACING_SLACK,
    claim,
    mark_submitted,
    release,
    set_each,
    short_error,
    with_excluded,
)


def submit(ctx: Context, engine: EnginePool) -> bool:
    """Submit ``tosubmit`` jobs; returns whether a full batch was claimed (more may wait)."""
    rows = claim(ctx, CEJobState.TOSUBMIT)
    if not rows:
        return False
    now = utcnow()
    room, closed = budgets(ctx, engine, now)
    waiting = assign(rows, room, closed, chooser_of(ctx), ctx.settings.engine.ces)
    assigned = {row.id for budget in room.values() for row in budget.assigned}
    release(ctx, [row.id for row in rows if row.id not in assigned])
    for reason, number in sorted(waiting.items()):
        ctx.log.info("%d job(s) stay tosubmit: %s", number, reason)
    for _name, budget in ctx.until_stopped(sorted(room.items()), "CE(s) to submit to"):
        if budget.assigned:
            _submit_to(ctx, engine.backend(budget.ce), budget)
    # More may wait, but only worth an immediate cycle if jobs could be placed at all.
    return len(rows) >= ctx.daemon.batch and bool(assigned)


def _submit_to(ctx: Context, backend: Backend, budget: Budget) -> None:
    ce = budget.ce
    limits = backend.limits(ce)
    size = max(1, limits.submit_batch)
    jobs = budget.assigned
    for start in range(0, len(jobs), size):
        batch = jobs[start : start + size]
        if start > 0 and ctx.stop.wait(ce.settings.min_spacing):
            release(ctx, [row.id for row in jobs[start:]])  # stopping: hand the rest back
            return
        if not _submit_batch(ctx, backend, ce, batch, probe=budget.probe):
            release(ctx, [row.id for row in jobs[start + size :]])
            return


def _submit_batch(
    ctx: Context, backend: Backend, ce: CE, batch: list[ToSubmit], *, probe: bool
) -> bool:
    """Steps (1) to (3) for one batch; returns False when the CE should get no more now."""
    name = ce.name
    tokens = {row.id: secrets.token_hex(16) for row in batch}
    now = utcnow()

    def intent(conn: Connection) -> list[int] | None:
        # Take this CE's submission slot: only if no batch (of any submitter process) went to
        # it within min_spacing. The row lock also serialises concurrent submitters here.
        spacing = max(0.0, ce.settings.min_spacing - SPACING_SLACK)
        slot = conn.execute(
            sa.update(ces)
            .where(
                ces.c.name == name,
                sa.or_(
                    ces.c.last_submit_at.is_(None),
                    ces.c.last_submit_at <= now - seconds(spacing),
                ),
            )
            .values(last_submit_at=now)
        )
        if slot.rowcount != 1:
            return None
        moved = transition(
            conn,
            CE_LAYER,
            list(tokens),
            CEJobState.TOSUBMIT,
            CEJobState.SUBMITTING,
            actor=ME,
            reason=f"to {name}",
            owner=ctx.owner,
            release=False,
            values={"ce_name": name, "submissions": ce_jobs.c.submissions + 1},
        )
        set_each(conn, {job_id: {"token": tokens[job_id]} for job_id in moved})
        claims.renew(conn, CE_LAYER, ctx.owner, ctx.daemon.lease, moved)
        if probe and moved:
            breaker.start_probe(conn, name, moved[0], now=now)
        return moved

    taken = ctx.db.run(intent)
    if taken is None:
        ctx.log.info(
            "ce=%s: another batch went to this CE less than %gs ago: %d job(s) wait",
            name,
            ce.settings.min_spacing,
            len(batch),
        )
        release(ctx, [row.id for row in batch])
        return False
    moved = set(taken)
    batch = [row for row in batch if row.id in moved]
    if not batch:
        return True
    maybe_crash("submitter:after-intent")
    requests = [
        SubmitRequest(
            job_id=row.id,
            token=tokens[row.id],
            description=str(row.description or ""),
            input_dir=Path(row.input_dir) if row.input_dir else None,
            panda_id=row.panda_id,
        )
        for row in batch
    ]
    try:
        results = backend.submit(ce, requests)
    except CEUnavailable as error:
        if not error.maybe_sent:
            _unavailable(ctx, ce, batch, error)
            return False
        found = _after_lost_reply(ctx, backend, ce, batch, tokens=tokens, error=error)
        if found is None:
            return False
        batch, results = found
    except Exception:
        # Nothing is known about what the CE did: leave the jobs in submitting and hand back
        # their claims; the next cycle's reconciliation asks the CE for their tokens.
        ctx.log.exception("ce=%s: submission of %d job(s) failed unexpectedly", name, len(batch))
        release(ctx, [row.id for row in batch])
        return False
    maybe_crash("submitter:after-submit")
    return _record(ctx, ce, batch, results)


def _after_lost_reply(
    ctx: Context,
    backend: Backend,
    ce: CE,
    batch: list[ToSubmit],
    *,
    tokens: Mapping[int, str],
    error: CEUnavailable,
) -> tuple[list[ToSubmit], list[Submitted]] | None:
    """The submit call failed in a way that may come after the CE took the jobs (a reply lost):
    ask the CE which tokens it has. Returns the part of the batch whose outcome is known, with
    the outcomes; the rest stays in ``submitting`` (claims handed back) for reconciliation, so
    that no job is sent twice. None when nothing is known."""
    name = ce.name
    lag = backend.limits(ce).find_lag
    try:
        known = backend.find(ce, [tokens[row.id] for row in batch])
    except CEUnavailable as find_error:
        now = utcnow()
        ctx.db.run(
            lambda conn: breaker.record_failure(
                conn, name, error=error.cause, now=now, settings=ctx.settings.engine.breaker
            )
        )
        ctx.log.warning(
            "ce=%s: submission reply lost (%s) and the CE cannot be asked (%s): %d job(s) left "
            "in submitting for reconciliation",
            name,
            error.cause,
            find_error.cause,
            len(batch),
        )
        release(ctx, [row.id for row in batch])
        return None
    waiting = [] if lag <= 0 else [row for row in batch if tokens[row.id] not in known]
    ctx.log.warning(
        "ce=%s: submission reply lost (%s); the CE has %d of %d job(s)%s",
        name,
        error.cause,
        len(known),
        len(batch),
        f", {len(waiting)} left in submitting until the CE lists them or {lag:g}s pass"
        if waiting
        else "",
    )
    for row in waiting:
        job_log(ctx.log, panda_id=row.panda_id, ce=name).info(
            "not yet listed by the CE after a lost submission reply: left in submitting"
        )
    release(ctx, [row.id for row in waiting])
    left = {row.id for row in waiting}
    decided = [row for row in batch if row.id not in left]
    results = [
        Submitted(row.id, known[tokens[row.id]])
        if tokens[row.id] in known
        else Submitted(row.id, None, f"submission reply lost: {error.cause}")
        for row in decided
    ]
    return decided, results


def _unavailable(ctx: Context, ce: CE, batch: list[ToSubmit], error: CEUnavailable) -> None:
    name = ce.name
    now = utcnow()

    def record(conn: Connection) -> tuple[list[int], str]:
        back = transition(
            conn,
            CE_LAYER,
            [row.id for row in batch],
            CEJobState.SUBMITTING,
            CEJobState.TOSUBMIT,
            actor=ME,
            reason=f"CE unavailable: {error.cause}"[:ERROR_LEN],
            owner=ctx.owner,
        )
        excluded = {row.id: with_excluded(row.excluded, name) for row in batch}
        set_each(conn, {job_id: {"excluded": excluded[job_id]} for job_id in back})
        state = breaker.record_failure(
            conn, name, error=error.cause, now=now, settings=ctx.settings.engine.breaker
        )
        return back, state

    back, state = ctx.db.run(record)
    ctx.log.warning(
        "ce=%s: unavailable (%s): %d job(s) back to tosubmit for another CE; breaker %s",
        name,
        error.cause,
        len(back),
        state,
    )


def _record(ctx: Context, ce: CE, batch: list[ToSubmit], results: Sequence[Submitted]) -> bool:
    name = ce.name
    now = utcnow()
    by_id = {row.id: row for row in batch}
    accepted: dict[int, str] = {}
    transient: dict[int, str] = {}
    permanent: dict[int, str] = {}
    answered = {result.job_id: result for result in results if result.job_id in by_id}
    for job_id in by_id:
        result = answered.get(job_id)
        if result is None:
            transient[job_id] = "the back end gave no result for this job"
        elif result.ce_job_id and not result.error:
            accepted[job_id] = result.ce_job_id
        elif result.permanent:
            permanent[job_id] = short_error(result.error)
        else:
            transient[job_id] = short_error(result.error)

    def record(conn: Connection) -> tuple[list[int], list[int], list[int], str]:
        done = mark_submitted(conn, ctx, accepted, now, "CE accepted the job")
        again = transition(
            conn,
            CE_LAYER,
            list(transient),
            CEJobState.SUBMITTING,
            CEJobState.TOSUBMIT,
            actor=ME,
            reason="submission failed at this CE",
            owner=ctx.owner,
        )
        set_each(
            conn,
            {
                job_id: {
                    "excluded": with_excluded(by_id[job_id].excluded, name),
                    "error_text": transient[job_id],
                }
                for job_id in again
            },
        )
        failed = transition(
            conn,
            CE_LAYER,
            list(permanent),
            CEJobState.SUBMITTING,
            CEJobState.FAILED,
            actor=ME,
            reason="CE rejected the job description",
            owner=ctx.owner,
        )
        set_each(conn, {job_id: {"error_text": permanent[job_id]} for job_id in failed})
        if accepted:
            state = breaker.record_success(conn, name, now=now)
        elif transient:
            first = next(iter(transient.values()))
            state = breaker.record_failure(
                conn, name, error=first, now=now, settings=ctx.settings.engine.breaker
            )
        else:
            state = breaker_state(conn, name)
        return done, again, failed, state

    done, again, failed, state = ctx.db.run(record)
    lost = set(by_id) - set(done) - set(again) - set(failed)
    for job_id in done:
        job_log(ctx.log, panda_id=by_id[job_id].panda_id, ce=name).info(
            "submitted as %s", accepted[job_id]
        )
    for job_id in again:
        job_log(ctx.log, panda_id=by_id[job_id].panda_id, ce=name).warning(
            "submission failed, will try another CE: %s", transient[job_id]
        )
    for job_id in failed:
        job_log(ctx.log, panda_id=by_id[job_id].panda_id, ce=name).error(
            "rejected by the CE: %s", permanent[job_id]
        )
    for job_id in sorted(lost):
        job_log(ctx.log, panda_id=by_id[job_id].panda_id, ce=name).error(
            "claim lost while submitting (lease too short?): left to reconciliation"
        )
    return state == breaker.CLOSED or bool(accepted)
