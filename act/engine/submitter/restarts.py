"""Steps 2 and 3 of the submitter: ``toresubmit`` jobs cleaned at their old CE and sent back
to ``tosubmit`` (or failed), ``torerun`` jobs restarted at their CE (see
:mod:`act.engine.submitter`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from act.common.logs import job_log
from act.common.schema import ce_jobs
from act.common.states import CEJobState
from act.common.timeutil import utcnow
from act.common.transitions import transition
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
    next_check,
    release,
    set_each,
    short_error,
    with_excluded,
)


def resubmit(ctx: Context, engine: EnginePool) -> None:
    """Clean the old CE job of ``toresubmit`` jobs, then submit them again (or fail them)."""
    rows = claim(ctx, CEJobState.TORESUBMIT)
    for name, group in ctx.until_stopped(list(by_ce(rows).items()), "CE(s) to resubmit from"):
        cleaned: list[ToSubmit] = []
        with_id = [row for row in group if row.ce_job_id]
        cleaned.extend(row for row in group if not row.ce_job_id)
        found = ce_and_backend(ctx, engine, name) if with_id else None
        if with_id and found is None:
            ctx.log.warning(
                "ce=%s: not configured or no usable back end: %d old CE job(s) cannot be cleaned",
                name,
                len(with_id),
            )
            cleaned.extend(with_id)
        elif with_id and found is not None:
            ce, backend = found
            try:
                outcomes = backend.clean(ce, [str(row.ce_job_id) for row in with_id])
            except CEUnavailable as down:
                ctx.log.warning(
                    "ce=%s: cannot clean %d job(s) to resubmit: %s", name, len(with_id), down.cause
                )
                release(ctx, [row.id for row in with_id])
                with_id = []
                outcomes = {}
            for row in with_id:
                outcome = outcomes.get(str(row.ce_job_id))
                if outcome is not None and (outcome.ok or outcome.gone):
                    cleaned.append(row)
                else:
                    why = outcome.error if outcome is not None else "no answer for this job"
                    job_log(ctx.log, panda_id=row.panda_id, ce=name).warning(
                        "old CE job %s not cleaned (%s): resubmission waits",
                        row.ce_job_id,
                        why,
                    )
                    release(ctx, [row.id])
        _requeue(ctx, name, cleaned)


def _requeue(ctx: Context, name: str, rows: list[ToSubmit]) -> None:
    """``toresubmit -> tosubmit`` with one attempt less, or ``-> failed`` with none left.

    ``attempts_left`` counts the submissions a job may still have, the current one included.
    """
    again = [row for row in rows if int(row.attempts_left) > 1]
    spent = [row for row in rows if int(row.attempts_left) <= 1]

    def record(conn: Connection) -> tuple[list[int], list[int]]:
        moved = transition(
            conn,
            CE_LAYER,
            [row.id for row in again],
            CEJobState.TORESUBMIT,
            CEJobState.TOSUBMIT,
            actor=ME,
            reason="old CE job cleaned",
            owner=ctx.owner,
            values={"attempts_left": ce_jobs.c.attempts_left - 1, "ce_job_id": None},
        )
        excluded = {row.id: with_excluded(row.excluded, name) for row in again}
        set_each(conn, {job_id: {"excluded": excluded[job_id]} for job_id in moved})
        failed = transition(
            conn,
            CE_LAYER,
            [row.id for row in spent],
            CEJobState.TORESUBMIT,
            CEJobState.FAILED,
            actor=ME,
            reason="no attempts left",
            owner=ctx.owner,
            values={"error_text": "no submission attempts left"},
        )
        return moved, failed

    moved, failed = ctx.db.run(record)
    by_id = {row.id: row for row in rows}
    for job_id in moved:
        job_log(ctx.log, panda_id=by_id[job_id].panda_id, ce=name).info(
            "to be submitted again (%d attempt(s) left)", int(by_id[job_id].attempts_left) - 1
        )
    for job_id in failed:
        job_log(ctx.log, panda_id=by_id[job_id].panda_id, ce=name).warning(
            "failed: no submission attempts left"
        )


def rerun(ctx: Context, engine: EnginePool) -> None:
    """Ask the CE to restart ``torerun`` jobs: ``submitted`` if it did, ``failed`` if it refused."""
    rows = claim(ctx, CEJobState.TORERUN)
    for name, group in ctx.until_stopped(list(by_ce(rows).items()), "CE(s) to rerun at"):
        _rerun_ce(ctx, engine, name, group)


def _rerun_ce(ctx: Context, engine: EnginePool, name: str, group: list[ToSubmit]) -> None:
    found = ce_and_backend(ctx, engine, name)
    outcomes: dict[str, Any] = {}
    if found is not None:
        ce, backend = found
        try:
            with_id = [str(row.ce_job_id) for row in group if row.ce_job_id]
            outcomes = backend.restart(ce, with_id) if with_id else {}
        except CEUnavailable as error:
            ctx.log.warning("ce=%s: cannot restart %d job(s): %s", name, len(group), error.cause)
            release(ctx, [row.id for row in group])
            return
    now = utcnow()
    restarted = [row.id for row in group if row.ce_job_id and _ok(outcomes.get(str(row.ce_job_id)))]
    refused: dict[int, str] = {}
    for row in group:
        if row.id in restarted:
            continue
        outcome = outcomes.get(str(row.ce_job_id))
        if not row.ce_job_id:
            refused[row.id] = "no CE job to restart"
        elif found is None:
            refused[row.id] = f"CE {name!r} is not configured or has no usable back end"
        elif outcome is None:
            refused[row.id] = "the CE gave no answer for this job"
        elif outcome.gone:
            refused[row.id] = "the CE no longer knows the job"
        else:
            refused[row.id] = short_error(outcome.error)

    def record(conn: Connection) -> tuple[list[int], list[int]]:
        moved = transition(
            conn,
            CE_LAYER,
            restarted,
            CEJobState.TORERUN,
            CEJobState.SUBMITTED,
            actor=ME,
            reason="CE restarted the job",
            owner=ctx.owner,
            # a restart is a try of the job's one budget (act.engine.resubmit)
            values={
                "next_check_at": next_check(ctx, now),
                "attempts_left": ce_jobs.c.attempts_left - 1,
            },
        )
        failed = transition(
            conn,
            CE_LAYER,
            list(refused),
            CEJobState.TORERUN,
            CEJobState.FAILED,
            actor=ME,
            reason="CE refused the restart",
            owner=ctx.owner,
        )
        set_each(conn, {job_id: {"error_text": refused[job_id]} for job_id in failed})
        return moved, failed

    moved, failed = ctx.db.run(record)
    by_id = {row.id: row for row in group}
    for job_id in moved:
        job_log(ctx.log, panda_id=by_id[job_id].panda_id, ce=name).info("restarted at the CE")
    for job_id in failed:
        job_log(ctx.log, panda_id=by_id[job_id].panda_id, ce=name).warning(
            "restart refused: %s", refused[job_id]
        )


def _ok(outcome: Any) -> bool:
    return outcome is not None and bool(outcome.ok)
