"""app_status (daemon ``app_status``): follows CE jobs on behalf of their PanDA job.

Each cycle runs one query joining ``panda_jobs`` and their latest CE job per kind of change, at
most ``batch`` rows each, and moves the matches in bulk:

=================================  ==========================================================
CE job (latest of the PanDA job)   PanDA job
=================================  ==========================================================
running                            queued → running
submitted (requeued at the CE)     running → queued
finishing                          queued, running → transferring
done (outputs fetched)              → tovalidate (the validator reads the pilot's report, checks
                                   outputs, publishes logs; truepilot jobs: logs only)
donefailed (failed for good)       → tovalidate (the validator takes the pilot's or the CE's
                                   error, publishes the logs)
lost / cancelled outside act       → failed ("lost at the CE" / "cancelled at the CE")
any not yet ended                  tobekilled: CE job → tocancel
ended (or none)                    tobekilled → cancelled
=================================  ==========================================================

A CE job goes to ``toclean`` once its PanDA job no longer needs its files: at once for cancelled
and lost jobs, after the validator's decision for the others, and always for a CE job that is no
longer its PanDA job's latest. Event-service jobs report their processed
ranges (:func:`act.atlas.events.report`) before leaving ``queued/running/transferring`` for done.
Every PanDA-layer change sets ``next_report_at = now``. Writes are compare-and-set transitions
that keep other daemons' claims (``release=False``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Connection

from act.atlas import events
from act.atlas.config import Context
from act.atlas.latest_ce import is_latest_ce_job, latest_ce_name
from act.atlas.reporting import due_now, with_report
from act.atlas.runtime import panda_client
from act.common.daemon import DaemonSpec
from act.common.logs import job_log
from act.common.schema import ce_jobs, panda_jobs
from act.common.section import Section
from act.common.states import (
    C_KILLABLE_ALL,
    C_OVER,
    C_UNSETTLED,
    P_LIVE,
    P_NEEDS_CE_FILES,
    Actor,
    CEJobState,
    Layer,
    PandaJobState,
    in_table_order,
)
from act.common.transitions import transition


class AppStatusOptions(Section):
    lost_error_code: int = Field(9002, ge=0)  # ... lost or cancelled at the CE


def run_once(ctx: Context) -> bool:
    limit = ctx.daemon.batch
    full = False
    steps = (_progress, _finished, _failed, _kill, _cancelled, _clean)
    for step in ctx.until_stopped(steps, "step(s)"):
        full = step(ctx, limit) >= limit or full
    return full


# -- the queries ---------------------------------------------------------------------------------


def _pairs(
    ctx: Context,
    panda_states: Collection[str] | None,
    ce_states: Collection[str],
    limit: int,
    *,
    latest: bool = True,
    extra: Sequence[sa.ColumnElement[bool]] = (),
) -> list[Any]:
    """(PanDA job, CE job) pairs in these states; one query."""
    conditions: list[sa.ColumnElement[bool]] = [
        ce_jobs.c.state.in_(in_table_order(Layer.CE, ce_states)),
        *extra,
    ]
    if panda_states is not None:
        conditions.append(panda_jobs.c.state.in_(in_table_order(Layer.PANDA, panda_states)))
    if latest:
        conditions.append(is_latest_ce_job())
    shard = ctx.shard
    if shard.count > 1:
        conditions.append(panda_jobs.c.id % shard.count == shard.index)
    stmt = (
        sa.select(
            panda_jobs.c.id.label("panda_job_id"),
            panda_jobs.c.panda_id,
            panda_jobs.c.state.label("pstate"),
            panda_jobs.c.queue,
            panda_jobs.c.event_ranges,
            ce_jobs.c.id.label("cid"),
            ce_jobs.c.state.label("cstate"),
            ce_jobs.c.exit_code,
            ce_jobs.c.error_text,
            ce_jobs.c.output_dir,
            ce_jobs.c.ce_name,
        )
        .select_from(panda_jobs.join(ce_jobs, ce_jobs.c.panda_job_id == panda_jobs.c.id))
        .where(*conditions)
        .order_by(panda_jobs.c.id)
        .limit(limit)
    )
    with ctx.db.read() as conn:
        return list(conn.execute(stmt).all())


def _move_panda(
    conn: Connection,
    rows: Sequence[Any],
    to_state: str,
    reason: str,
    values: dict[str, Any] | None = None,
) -> list[int]:
    """Move each row's PanDA job to ``to_state``: one transition per source state."""
    by_state: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_state[row.pstate].append(row.panda_job_id)
    moved: list[int] = []
    for from_state, ids in by_state.items():
        moved += transition(
            conn, Layer.PANDA, ids, from_state, to_state, actor=Actor.APP_STATUS,
            reason=reason, values=due_now() if values is None else values, release=False,
        )  # fmt: skip
    return moved


def _move_ce(conn: Connection, rows: Sequence[Any], to_state: str, reason: str) -> list[int]:
    by_state: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_state[row.cstate].append(row.cid)
    moved: list[int] = []
    for from_state, ids in by_state.items():
        moved += transition(
            conn, Layer.CE, ids, from_state, to_state, actor=Actor.APP_STATUS, reason=reason,
            release=False,
        )  # fmt: skip
    return moved


def _log(ctx: Context, rows: Sequence[Any], moved: Sequence[int], what: str) -> None:
    done = set(moved)
    for row in rows:
        if row.panda_job_id in done:
            job_log(ctx.log, panda_id=row.panda_id, ce=row.ce_name).info("%s", what)


# -- the steps -----------------------------------------------------------------------------------


def _progress(ctx: Context, limit: int) -> int:
    """CE running/requeued/finishing onto the PanDA job."""
    total = 0
    for panda_states, ce_states, to_state, reason in (
        ({PandaJobState.QUEUED}, {CEJobState.RUNNING}, PandaJobState.RUNNING, "CE job running"),
        ({PandaJobState.RUNNING}, {CEJobState.SUBMITTED}, PandaJobState.QUEUED, "CE job requeued"),
        (
            {PandaJobState.QUEUED, PandaJobState.RUNNING},
            {CEJobState.FINISHING},
            PandaJobState.TRANSFERRING,
            "CE job finishing",
        ),
    ):
        rows = _pairs(ctx, panda_states, ce_states, limit)
        if rows:
            moved = ctx.db.run(partial(_move_panda, rows=rows, to_state=to_state, reason=reason))
            _log(ctx, rows, moved, f"PanDA job {to_state}")
            total += len(rows)
    return total


def _finished(ctx: Context, limit: int) -> int:
    """CE job done or failed for good, outputs fetched: → tovalidate (the validator decides)."""
    rows = _pairs(ctx, P_LIVE, {CEJobState.DONE, CEJobState.DONEFAILED}, limit)
    if not rows:
        return 0
    ready, updates = [], []
    for row in rows:
        state = events.load(row.event_ranges) if row.event_ranges else None
        if row.cstate == CEJobState.DONE and state is not None and not state.settled:
            client, panda_id, ce = panda_client(ctx), int(row.panda_id), row.ce_name
            state = events.report(client, state, panda_id, row.output_dir, log=ctx.log, ce=ce)
            updates.append((row.panda_job_id, state.dump()))
            log = job_log(ctx.log, panda_id=row.panda_id, ce=row.ce_name)
            if state.reported_at is not None:
                log.info("event ranges reported")
            elif state.settled:
                log.error("event ranges not reported, given up: %s", state.error)
            else:
                log.warning("event ranges not reported, will retry: %s", state.error)
                continue
        ready.append(row)

    def write(conn: Connection) -> list[int]:
        for panda_job_id, text in updates:
            conn.execute(
                sa.update(panda_jobs)
                .where(panda_jobs.c.id == panda_job_id)
                .values(event_ranges=text)
            )
        values = due_now({"validate_after": None, "validation_deferrals": 0})
        return _move_panda(
            conn, ready, PandaJobState.TOVALIDATE, "CE job ended, outputs fetched", values
        )

    moved = ctx.db.run(write)
    _log(ctx, ready, moved, "CE job ended: to validate")
    return len(rows)


def _failed(ctx: Context, limit: int) -> int:
    """CE job lost or cancelled outside act → PanDA failed; the CE job cleaned."""
    opts: AppStatusOptions = ctx.options
    rows = _pairs(ctx, P_LIVE, {CEJobState.LOST, CEJobState.CANCELLED}, limit)
    if not rows:
        return 0

    def write(conn: Connection) -> list[int]:
        moved = []
        for row in rows:
            code = opts.lost_error_code
            diag = "lost at the CE" if row.cstate == CEJobState.LOST else "cancelled at the CE"
            values = with_report(
                {"pilotErrorCode": code, "pilotErrorDiag": diag},
                {"error_code": code, "error_text": diag},
            )
            if _move_panda(conn, [row], PandaJobState.FAILED, diag[:200], values):
                moved.append(row.panda_job_id)
        _move_ce(
            conn,
            [r for r in rows if r.panda_job_id in set(moved)],
            CEJobState.TOCLEAN,
            "job over",
        )
        return moved

    moved = ctx.db.run(write)
    _log(ctx, rows, moved, "PanDA job failed at the CE")
    return len(rows)


def _kill(ctx: Context, limit: int) -> int:
    """PanDA tobekilled: its CE jobs that still run are asked to stop."""
    rows = _pairs(ctx, {PandaJobState.TOBEKILLED}, C_KILLABLE_ALL, limit, latest=False)
    if not rows:
        return 0
    moved = ctx.db.run(
        lambda conn: _move_ce(conn, rows, CEJobState.TOCANCEL, "PanDA job to be killed")
    )
    for row in rows:
        if row.cid in set(moved):
            job_log(ctx.log, panda_id=row.panda_id, ce=row.ce_name).info("CE job to cancel")
    return len(rows)


def _cancelled(ctx: Context, limit: int) -> int:
    """PanDA tobekilled with no CE job left that may still change → cancelled."""
    unsettled = sa.exists().where(
        ce_jobs.c.panda_job_id == panda_jobs.c.id,
        ce_jobs.c.state.in_(in_table_order(Layer.CE, C_UNSETTLED)),
    )
    conditions: list[sa.ColumnElement[bool]] = [
        panda_jobs.c.state == PandaJobState.TOBEKILLED,
        ~unsettled,
    ]
    if ctx.shard.count > 1:
        conditions.append(panda_jobs.c.id % ctx.shard.count == ctx.shard.index)
    with ctx.db.read() as conn:
        rows = conn.execute(
            sa.select(panda_jobs.c.id, panda_jobs.c.panda_id, latest_ce_name().label("ce"))
            .where(*conditions)
            .order_by(panda_jobs.c.id)
            .limit(limit)
        ).all()
    if not rows:
        return 0
    ids = [row.id for row in rows]
    moved = set(
        ctx.db.run(
            lambda conn: transition(
                conn,
                Layer.PANDA,
                ids,
                PandaJobState.TOBEKILLED,
                PandaJobState.CANCELLED,
                actor=Actor.APP_STATUS,
                reason="CE job cancelled or never submitted",
                values=due_now(),
                release=False,
            )
        )
    )
    for row in rows:
        if row.id in moved:
            job_log(ctx.log, panda_id=row.panda_id, ce=row.ce).info("PanDA job cancelled")
    return len(rows)


def _clean(ctx: Context, limit: int) -> int:
    """Ended CE jobs whose files the PanDA side no longer needs → toclean."""
    no_longer_needed = sa.or_(
        ~is_latest_ce_job(),
        panda_jobs.c.state.not_in(in_table_order(Layer.PANDA, P_NEEDS_CE_FILES)),
    )
    rows = _pairs(ctx, None, C_OVER, limit, latest=False, extra=[no_longer_needed])
    if not rows:
        return 0
    moved = set(ctx.db.run(lambda conn: _move_ce(conn, rows, CEJobState.TOCLEAN, "job over")))
    for row in rows:
        if row.cid in moved:
            job_log(ctx.log, panda_id=row.panda_id, ce=row.ce_name).info("CE job to clean")
    return len(rows)


DAEMON = DaemonSpec(run_once=run_once, options=AppStatusOptions, doc=__doc__ or "")
