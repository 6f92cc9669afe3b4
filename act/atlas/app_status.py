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
from collections.abc import Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Connection

from act.atlas import events, job_pairs
from act.atlas.config import Context
from act.atlas.job_pairs import JobPair
from act.atlas.reporting import due_now, with_report
from act.atlas.runtime import panda_client
from act.common.daemon import DaemonSpec
from act.common.logs import job_log
from act.common.schema import panda_jobs
from act.common.section import Section
from act.common.states import P_LIVE, Actor, CEJobState, Layer, PandaJobState
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


# -- the moves -----------------------------------------------------------------------------------


def _move_panda(
    conn: Connection,
    rows: Sequence[JobPair],
    to_state: str,
    reason: str,
    values: dict[str, Any] | None = None,
) -> list[int]:
    """Move each row's PanDA job to ``to_state``: one transition per source state."""
    by_state: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_state[row.panda_state].append(row.panda_job_id)
    moved: list[int] = []
    for from_state, ids in by_state.items():
        moved += transition(
            conn, Layer.PANDA, ids, from_state, to_state, actor=Actor.APP_STATUS,
            reason=reason, values=due_now() if values is None else values, release=False,
        )  # fmt: skip
    return moved


def _move_ce(conn: Connection, rows: Sequence[JobPair], to_state: str, reason: str) -> list[int]:
    by_state: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_state[row.ce_state].append(row.id)
    moved: list[int] = []
    for from_state, ids in by_state.items():
        moved += transition(
            conn, Layer.CE, ids, from_state, to_state, actor=Actor.APP_STATUS, reason=reason,
            release=False,
        )  # fmt: skip
    return moved


def _log(ctx: Context, rows: Sequence[JobPair], moved: Sequence[int], what: str) -> None:
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
        with ctx.db.read() as conn:
            rows = job_pairs.latest_pairs(
                conn, panda_states, ce_states, shard=ctx.shard, limit=limit
            )
        if rows:
            moved = ctx.db.run(partial(_move_panda, rows=rows, to_state=to_state, reason=reason))
            _log(ctx, rows, moved, f"PanDA job {to_state}")
            total += len(rows)
    return total


def _finished(ctx: Context, limit: int) -> int:
    """CE job done or failed for good, outputs fetched: → tovalidate (the validator decides)."""
    with ctx.db.read() as conn:
        rows = job_pairs.latest_pairs(
            conn, P_LIVE, {CEJobState.DONE, CEJobState.DONEFAILED}, shard=ctx.shard, limit=limit
        )
    if not rows:
        return 0
    ready, updates = [], []
    for row in rows:
        state = events.load(row.event_ranges) if row.event_ranges else None
        if row.ce_state == CEJobState.DONE and state is not None and not state.settled:
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
    with ctx.db.read() as conn:
        rows = job_pairs.latest_pairs(
            conn, P_LIVE, {CEJobState.LOST, CEJobState.CANCELLED}, shard=ctx.shard, limit=limit
        )
    if not rows:
        return 0

    def write(conn: Connection) -> list[int]:
        moved = []
        for row in rows:
            code = opts.lost_error_code
            diag = "lost at the CE" if row.ce_state == CEJobState.LOST else "cancelled at the CE"
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
    with ctx.db.read() as conn:
        rows = job_pairs.killable_pairs(conn, shard=ctx.shard, limit=limit)
    if not rows:
        return 0
    moved = ctx.db.run(
        lambda conn: _move_ce(conn, rows, CEJobState.TOCANCEL, "PanDA job to be killed")
    )
    for row in rows:
        if row.id in set(moved):
            job_log(ctx.log, panda_id=row.panda_id, ce=row.ce_name).info("CE job to cancel")
    return len(rows)


def _cancelled(ctx: Context, limit: int) -> int:
    """PanDA tobekilled with no CE job left that may still change → cancelled."""
    with ctx.db.read() as conn:
        rows = job_pairs.killed_and_settled(conn, shard=ctx.shard, limit=limit)
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
    with ctx.db.read() as conn:
        rows = job_pairs.ended_pairs_not_needed(conn, shard=ctx.shard, limit=limit)
    if not rows:
        return 0
    moved = set(ctx.db.run(lambda conn: _move_ce(conn, rows, CEJobState.TOCLEAN, "job over")))
    for row in rows:
        if row.id in moved:
            job_log(ctx.log, panda_id=row.panda_id, ce=row.ce_name).info("CE job to clean")
    return len(rows)


DAEMON = DaemonSpec(run_once=run_once, options=AppStatusOptions, doc=__doc__ or "")
