"""validator (daemon ``validator``): decides how a PanDA job whose CE job ended came out.

app_status moves a PanDA job to ``tovalidate`` when its latest CE job is ``done`` (outputs fetched)
or ``donefailed``. Each cycle the validator claims such jobs (those whose ``validate_after`` has
come), reads what came back in the CE job's ``output_dir`` — all of it untrusted
(:mod:`act.atlas.pilot_files`) — and decides:

================================  ===========================================================
job                               outcome
================================  ===========================================================
truepilot, CE job done            logs published → ``done`` (the pilot reported itself)
CE job failed (donefailed)        → ``failed``: the pilot's error code and diagnosis from its
                                  ``heartbeat.json`` if it left one, else the CE's
native, pilot reports failure     → ``failed`` with the pilot's report
native, no or bad heartbeat.json  → ``failed``, ``no_report_code`` and the file's problem
native, output.list and the        → ``failed``, naming each file
output report disagree            (:func:`act.atlas.validation.cross_check`)
native, pilot reports success     every output file checked on storage (size, adler32), all the
                                  job's files of a cycle in one concurrent round grouped per
                                  endpoint (:class:`~act.atlas.storage.checker.StorageChecker`);
                                  the outcome as :func:`act.atlas.validation.judge` decides:
                                  ``finished``, ``failed``, ``toresubmit``, or put off
================================  ===========================================================

What is read of the CE job's outputs (:mod:`act.atlas.pilot_files`, where pilot3 leaves each):
``heartbeat.json`` (the pilot's final report), ``output.list`` (what the CE uploaded),
``PanDA_Pilot-<PandaID>/jobReport.json`` or, from older pilots, ``jobReport.json`` (the
transform's exit code and message where the heartbeat has none, and ``metaData`` where the
heartbeat has none), ``metadata.xml`` (older pilots' output report), the log tarball and the
pilot's stdout (for the excerpt). What the pilot reported but act did not use (a nonsense time,
a ``metaData`` too large to send) is logged with the PanDA ID and kept in ``validation_note``.

Put off (storage unreachable or switched down by an operator): ``validate_after`` is set
``retry_after`` seconds ahead, doubled per deferral up to ``retry_max``; the reason is kept in
``validation_note`` (``actctl`` shows it). After ``give_up_after`` in ``tovalidate`` the job fails.

For every decided job the pilot's log and the CE's diagnostics are published to the web area
(:mod:`act.atlas.web_area`); a failed job's report carries a short excerpt (``pilotLog``). The
final report (:mod:`act.atlas.final_report`) is stored with the state change
(:func:`~act.atlas.reporting.with_report`); the propagator sends it, or writes it as
``jobReport.json`` for heartbeat-less jobs. A job whose files cannot be read never stops the
cycle: it fails with a diagnosis naming the file and the cause.

A stop asked for mid-cycle is seen between the jobs read (none is judged then: nothing has been
written) and between the jobs settled; the jobs left are handed back for the next cycle.

This module claims, checks the outputs on storage and settles; the files that came back are read
by :mod:`act.atlas.validator_outputs` (a claimed job is its :class:`Validation`: the typed row
and what is worked out of it), the logs published and the final report built by
:mod:`act.atlas.validator_report`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.atlas import storage_endpoints
from act.atlas.config import Context
from act.atlas.queries import ToValidate, to_validate_source
from act.atlas.reporting import with_report
from act.atlas.served import served_queues
from act.atlas.storage.checker import StorageChecker
from act.atlas.storage.model import Verdict
from act.atlas.translator import parse_spec
from act.atlas.validation import ValidatorOptions, judge
from act.atlas.validator_outputs import Validation, read_outputs
from act.atlas.validator_report import final_report_fields, publish_logs
from act.common.claims import claim_and_load, release
from act.common.daemon import DaemonSpec
from act.common.faults import maybe_crash
from act.common.schema import panda_jobs
from act.common.states import Actor, CEJobState, Layer, PandaJobState
from act.common.timeutil import backoff, seconds, utcnow
from act.common.transitions import transition
from act.engine.resubmit import resubmit_invalid_outputs

CHECKER_KEY = "storage_checker"
#: ``ACT_FAULT`` point: the logs are published, the decision not yet committed.
CRASH_POINT = "validator:after-publish"


def run_once(ctx: Context) -> bool:
    opts: ValidatorOptions = ctx.options
    jobs = ctx.db.run(lambda conn: _claim(conn, ctx))
    if not jobs:
        return False
    try:
        queues = served_queues(ctx)
        read: list[Validation] = []
        for job in ctx.until_stopped(jobs):
            queue = queues.get(job.row.queue)
            job.truepilot = bool(queue is not None and queue.truepilot)
            if _guarded(ctx, job, lambda j: setattr(j, "decision", read_outputs(ctx, j, opts))):
                read.append(job)
        if ctx.stopping():  # nothing is written yet: the claims are handed back below
            ctx.log.info(
                "stop requested: %d job(s) read, none judged: all %d left to the next instance",
                len(read),
                len(jobs),
            )
            return False
        _check(ctx, [job for job in read if job.decision is None])
        now = utcnow()
        for job in ctx.until_stopped(read):
            if job.decision is None:
                overdue = now - job.row.state_changed_at > seconds(opts.give_up_after)
                job.decision = judge(
                    job.checks,
                    opts,
                    overdue=overdue,
                    tries_left=resubmit_invalid_outputs(job.row.attempts_left),
                )
            _guarded(ctx, job, lambda j: _settle(ctx, j, opts))
    finally:
        ctx.db.run(lambda conn: release(conn, Layer.PANDA, ctx.owner, [j.row.id for j in jobs]))
    return len(jobs) >= ctx.daemon.batch and not ctx.stopping()


def _guarded(ctx: Context, job: Validation, step: Callable[[Validation], object]) -> bool:
    """Run one job's step; an unexpected error (a bug) is logged with the job and its CE and
    leaves the job for the next cycle, without stopping the other jobs of this one."""
    try:
        step(job)
    except Exception:
        job.log(ctx).exception("validation failed unexpectedly; the job is tried again next cycle")
        return False
    return True


# -- claiming ----------------------------------------------------------------------------------


def _claim(conn: Connection, ctx: Context) -> list[Validation]:
    t = panda_jobs
    now = utcnow()
    joined, labelled = to_validate_source()
    rows = claim_and_load(
        conn,
        Layer.PANDA,
        [PandaJobState.TOVALIDATE],
        ToValidate,
        owner=ctx.owner,
        lease=ctx.daemon.lease,
        limit=ctx.daemon.batch,
        shard=ctx.shard,
        where=[sa.or_(t.c.validate_after.is_(None), t.c.validate_after <= now)],
        select_from=joined,
        labelled=labelled,
    )
    return [Validation(row, _spec(row)) for row in rows]


def _spec(row: ToValidate) -> dict[str, Any]:
    try:
        return parse_spec(row.spec, row.spec_format)
    except ValueError:
        return {}


# -- checking the outputs on storage -----------------------------------------------------------


def checker(ctx: Context) -> StorageChecker:
    """The daemon's storage checker (kept between cycles; closed when the daemon stops)."""
    found = ctx.cache.get(CHECKER_KEY)
    if not isinstance(found, StorageChecker):
        found = StorageChecker(ctx.settings.storage, ctx.log)
        ctx.cache[CHECKER_KEY] = found
    return found


def _check(ctx: Context, jobs: Sequence[Validation]) -> None:
    """One round of checks for every file of these jobs; results onto each job."""
    files = [expected for job in jobs for expected in job.expected]
    if not files:
        return
    with ctx.db.read() as conn:
        down = storage_endpoints.down(conn)
    results = checker(ctx).check(files, down=down)
    start = 0
    for job in jobs:
        job.checks = results[start : start + len(job.expected)]
        start += len(job.expected)
    answered: set[str] = set()
    errors: dict[str, str] = {}
    for result in results:
        if result.verdict is Verdict.UNREACHABLE:
            if result.endpoint not in down:
                errors.setdefault(result.endpoint, result.detail)
        elif result.verdict is not Verdict.INVALID:
            answered.add(result.endpoint)
    if answered or errors:
        ctx.db.run(lambda conn: storage_endpoints.record(conn, answered, errors))


# -- settling ----------------------------------------------------------------------------------


def _settle(ctx: Context, job: Validation, opts: ValidatorOptions) -> None:
    decision = job.decision
    assert decision is not None
    log = job.log(ctx)
    if decision.action == "defer":
        delay = backoff(opts.retry_after, opts.retry_max, job.row.validation_deferrals + 1)
        later = {
            "validate_after": utcnow() + seconds(delay),
            "validation_deferrals": job.row.validation_deferrals + 1,
            "validation_note": decision.diag[:2000],
        }
        ctx.db.run(
            lambda conn: conn.execute(
                sa.update(panda_jobs)
                .where(panda_jobs.c.id == job.row.id, panda_jobs.c.lease_owner == ctx.owner)
                .values(**later)
            )
        )
        log.warning("validation put off %.0f s: %s", delay, decision.diag)
        return
    published = publish_logs(ctx, job)
    maybe_crash(CRASH_POINT)
    target: str = decision.action
    if job.truepilot and job.row.ce_state == CEJobState.DONE:
        target = PandaJobState.DONE
    values: dict[str, Any] = {"validation_note": decision.diag[:2000] or None}
    if published:
        values["logs_published_at"] = utcnow()
    if target == PandaJobState.DONE:
        values["next_report_at"] = None
    elif target == PandaJobState.TORESUBMIT:
        values.update(report=None, next_report_at=utcnow(), validate_after=None)
        values["validation_deferrals"] = 0
    else:
        fields, notes = final_report_fields(ctx, job, decision, opts)
        extra: dict[str, Any] = {**values}
        if notes:
            note = "; ".join([decision.diag, *notes] if decision.diag else notes)
            extra["validation_note"] = note[:2000]
        if target == PandaJobState.FAILED:
            code = fields.get("pilotErrorCode")
            extra["error_code"] = code if isinstance(code, int) else decision.code
            extra["error_text"] = str(fields.get("pilotErrorDiag") or decision.diag)[:2000]
        values = with_report(fields, extra)
    reason = (decision.diag or _reasons[target])[:200]
    moved = ctx.db.run(
        lambda conn: transition(
            conn,
            Layer.PANDA,
            [job.row.id],
            PandaJobState.TOVALIDATE,
            target,
            actor=Actor.VALIDATOR,
            reason=reason,
            owner=ctx.owner,
            values=values,
        )
    )
    if moved:
        log.info("validated: %s%s", target, f" ({decision.diag})" if decision.diag else "")


_reasons: dict[str, str] = {
    PandaJobState.DONE: "truepilot: logs published",
    PandaJobState.FINISHED: "all outputs valid",
    PandaJobState.FAILED: PandaJobState.FAILED.value,
    PandaJobState.TORESUBMIT: "outputs invalid: resubmit",
}


DAEMON = DaemonSpec(run_once=run_once, options=ValidatorOptions, doc=__doc__ or "")
