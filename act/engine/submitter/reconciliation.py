"""Step 1 of the submitter: reconcile ``submitting`` jobs whose submitter died between stating
its intent and recording the CE's answer (see :mod:`act.engine.submitter`)."""

from __future__ import annotations

from sqlalchemy.engine import Connection

from act.common.logs import job_log
from act.common.states import CEJobState
from act.common.timeutil import seconds, utcnow
from act.common.transitions import transition
from act.engine import breaker
from act.engine.backend import CEUnavailable
from act.engine.config import Context
from act.engine.queries import ToSubmit
from act.engine.runtime import EnginePool
from act.engine.submitter.jobs import (
    CE_LAYER,
    ME,
    by_ce,
    ce_and_backend,
    claim,
    mark_submitted,
    release,
)


def reconcile(ctx: Context, engine: EnginePool) -> None:
    """Resolve ``submitting`` jobs whose submitter died before recording the CE's answer."""
    rows = claim(ctx, CEJobState.SUBMITTING)
    for name, group in ctx.until_stopped(list(by_ce(rows).items()), "CE(s) to reconcile"):
        _reconcile_ce(ctx, engine, name, group)


def _reconcile_ce(ctx: Context, engine: EnginePool, name: str, group: list[ToSubmit]) -> None:
    ids = [row.id for row in group]
    found = ce_and_backend(ctx, engine, name)
    if found is None:
        ctx.log.error(
            "ce=%s: %d job(s) in submitting at a CE not configured or without a usable back end: "
            "left as they are",
            name or "(none)",
            len(ids),
        )
        release(ctx, ids)
        return
    ce, backend = found
    tokens = [str(row.token) for row in group if row.token]
    try:
        known = backend.find(ce, tokens) if tokens else {}
    except CEUnavailable as error:
        ctx.log.warning(
            "ce=%s: cannot reconcile %d job(s) in submitting: %s", name, len(ids), error.cause
        )
        release(ctx, ids)
        return
    now = utcnow()
    accepted = {row.id: known[row.token] for row in group if row.token in known}
    # A job the CE does not list may still be on its way into the CE's listing (find_lag):
    # it waits until it shows or the lag has passed since the intent was recorded.
    settled = now - seconds(backend.limits(ce).find_lag)
    missing: list[int] = []
    waiting: list[int] = []
    for row in group:
        if row.id not in accepted:
            (missing if row.state_changed_at <= settled else waiting).append(row.id)

    def record(conn: Connection) -> tuple[list[int], list[int]]:
        moved = mark_submitted(conn, ctx, accepted, now, "reconciled: the CE has the job")
        back = transition(
            conn,
            CE_LAYER,
            missing,
            CEJobState.SUBMITTING,
            CEJobState.TOSUBMIT,
            actor=ME,
            reason="reconciled: the CE does not have the job",
            owner=ctx.owner,
        )
        if moved:
            breaker.record_success(conn, name, now=now)
        return moved, back

    moved, back = ctx.db.run(record)
    by_id = {row.id: row for row in group}
    for job_id in moved:
        job_log(ctx.log, panda_id=by_id[job_id].panda_id, ce=name).info(
            "reconciled: submitted as %s", accepted[job_id]
        )
    for job_id in back:
        job_log(ctx.log, panda_id=by_id[job_id].panda_id, ce=name).info(
            "reconciled: not at the CE, back to tosubmit"
        )
    if waiting:
        ctx.log.info(
            "ce=%s: %d job(s) in submitting not listed by the CE yet: asked again next cycle",
            name,
            len(waiting),
        )
        release(ctx, waiting)
