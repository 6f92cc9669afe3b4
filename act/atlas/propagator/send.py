"""The propagator's PanDA calls: final reports in doubt checked first, then the reports sent in
bulk batches on a bounded thread pool, each batch's answers recorded as they come."""

from __future__ import annotations

import json
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.atlas import runtime
from act.atlas.config import Context
from act.atlas.panda_client import (
    PandaAuthError,
    PandaError,
    PandaTransportError,
    UpdateResult,
)
from act.atlas.propagator.jobs import (
    CRASH_POINT,
    FINAL,
    PANDA_ENDED,
    Outcome,
    PropagatorOptions,
    Send,
)
from act.atlas.propagator.record import (
    finish,
    record_batch,
    report_failed,
)
from act.common.faults import maybe_crash
from act.common.logs import job_log
from act.common.schema import panda_jobs
from act.common.timeutil import utcnow

# -- jobs sent to PanDA ----------------------------------------------------------------------------


def settle_in_doubt(ctx: Context, sends: list[Send], outcome: Outcome) -> list[Send]:
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
            status.update(client.get_job_status([send.job.panda_id for send in chunk]))
    except PandaError as error:
        outcome.unreachable += len(doubtful)
        problem = f"status of final reports in doubt: {error}"
        if problem not in outcome.problems:
            outcome.problems.append(problem)
        asked = {send.job.id for send in doubtful}
        return [send for send in sends if send.job.id not in asked]
    ended = [send for send in doubtful if status.get(send.job.panda_id) in PANDA_ENDED]
    for send in ended:
        job_log(ctx.log, panda_id=send.job.panda_id, ce=send.job.ce).info(
            "final report (%s) sent at %s with its answer lost: PanDA shows %s, not sent again",
            send.update.state,
            send.job.final_sent_at,
            status[send.job.panda_id],
        )

    def record(conn: Connection) -> None:
        for send in ended:
            reason = f"final report ({send.update.state}) in doubt: PanDA shows "
            finish(
                conn,
                ctx,
                [send.job],
                send.update.state,
                outcome,
                reason=reason + status[send.job.panda_id],
            )

    if ended:
        ctx.db.run(record)
    settled = {send.job.id for send in ended}
    return [send for send in sends if send.job.id not in settled]


def mark_final_sent(ctx: Context, sends: list[Send]) -> None:
    """Note, before the call, which final reports are about to go (see settle_in_doubt)."""
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


def send_reports(ctx: Context, sends: list[Send], outcome: Outcome) -> None:
    opts: PropagatorOptions = ctx.options
    # No retries inside a call: a job PanDA did not get stays due and goes in a later cycle,
    # so retrying here would only add log lines and hold the cycle up.
    client = runtime.panda_client(ctx, retries=0)
    batches = in_batches(sends, opts.batch_size, opts.max_request_bytes)
    with ThreadPoolExecutor(
        max_workers=min(opts.in_flight, len(batches)), thread_name_prefix="propagator"
    ) as pool:
        futures: list[Future[list[UpdateResult]]] = [
            pool.submit(client.update_jobs_bulk, [send.update for send in batch])
            for batch in batches
        ]
        left = 0
        for batch, future in zip(batches, futures, strict=True):
            if not left and ctx.stopping():
                # Between batches: the ones not started are left (a final report among them
                # was noted as sent, so the next instance asks PanDA first, as after a crash);
                # the ones under way finish and are recorded.
                left = sum(len(b) for b, f in zip(batches, futures, strict=True) if f.cancel())
                if left:
                    ctx.log.info("stop requested: %d report(s) left to the next instance", left)
            if future.cancelled():
                if not left:
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
                ctx.db.run(partial(report_failed, ctx=ctx, jobs=refused, outcome=outcome))
                continue
            outcome.sent += len(batch)
            maybe_crash(CRASH_POINT)
            ctx.db.run(
                partial(record_batch, ctx=ctx, batch=batch, results=results, outcome=outcome)
            )


def in_batches(sends: Sequence[Send], size: int, max_bytes: int) -> list[list[Send]]:
    """``sends`` in order, in batches of at most ``size`` reports adding up to at most
    ``max_bytes`` (their fields as JSON; a larger report makes a batch of its own): a request
    PanDA's web server refuses as too large (HTTP 413) would fail every job in it, each time."""
    batches: list[list[Send]] = []
    current: list[Send] = []
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
