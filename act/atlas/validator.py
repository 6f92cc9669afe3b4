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
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.atlas import final_report, pilot_files, storage_endpoints, web_area
from act.atlas.config import Context
from act.atlas.panda_id import spec_int
from act.atlas.panda_status import PandaServerStatus
from act.atlas.pilot_files import BadPilotFile, Heartbeat
from act.atlas.queries import ToValidate, to_validate_source
from act.atlas.reporting import with_report
from act.atlas.served import served_queues
from act.atlas.storage.checker import StorageChecker
from act.atlas.storage.model import Expected, FileCheck, Verdict
from act.atlas.translate.common import stdout_name
from act.atlas.translator import parse_spec
from act.atlas.validation import Decision, ValidatorOptions, cross_check, judge
from act.common import safe_tar
from act.common.claims import claim_and_load, release
from act.common.daemon import DaemonSpec
from act.common.faults import maybe_crash
from act.common.logs import job_log
from act.common.safe_tar import BadArchive
from act.common.schema import panda_jobs
from act.common.states import Actor, CEJobState, Layer, PandaJobState
from act.common.timeutil import backoff, seconds, utcnow
from act.common.transitions import transition
from act.engine.resubmit import resubmit_invalid_outputs

CHECKER_KEY = "storage_checker"
#: ``ACT_FAULT`` point: the logs are published, the decision not yet committed.
CRASH_POINT = "validator:after-publish"
#: Pilot log names tried for the web area's ``.out`` and the excerpt, after the pilot's stdout.
PILOT_LOGS = ("pilotlog.txt", "stdout")
#: Logs looked for in the log tarball, best first, and where it is extracted.
TARBALL_LOGS = ("pilotlog.txt", "payload.stdout", "payload.stderr")
LOG_TARGET = "log-extracted"
LOG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")


@dataclass
class _Job:
    panda_job_id: int  # panda_jobs.id (the row), not the PanDA id
    panda_id: int
    queue: str
    spec: dict[str, Any]
    created_at: datetime
    state_changed_at: datetime
    log_url: str | None
    deferrals: int
    ce: str | None
    backend: str | None
    ce_job_id: str | None
    ce_state: str | None
    output_dir: Path | None
    exit_code: int | None
    error_text: str | None
    worker_node: str | None
    started_at: datetime | None
    ended_at: datetime | None
    attempts_left: int | None = None  # of the CE job: the retry budget (act.engine.resubmit)
    truepilot: bool = False
    heartbeat: Heartbeat | None = None
    payload: dict[str, Any] = field(default_factory=dict)  # from jobReport.json
    job_report: pilot_files.JobReport | None = None
    expected: list[Expected] = field(default_factory=list)
    checks: list[FileCheck] = field(default_factory=list)
    decision: Decision | None = None


def run_once(ctx: Context) -> bool:
    opts: ValidatorOptions = ctx.options
    jobs = ctx.db.run(lambda conn: _claim(conn, ctx))
    if not jobs:
        return False
    try:
        queues = served_queues(ctx)
        read: list[_Job] = []
        for job in ctx.until_stopped(jobs):
            queue = queues.get(job.queue)
            job.truepilot = bool(queue is not None and queue.truepilot)
            if _guarded(ctx, job, lambda j: setattr(j, "decision", _read(ctx, j, opts))):
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
                overdue = now - job.state_changed_at > seconds(opts.give_up_after)
                job.decision = judge(
                    job.checks,
                    opts,
                    overdue=overdue,
                    tries_left=resubmit_invalid_outputs(job.attempts_left),
                )
            _guarded(ctx, job, lambda j: _settle(ctx, j, opts))
    finally:
        ctx.db.run(
            lambda conn: release(conn, Layer.PANDA, ctx.owner, [j.panda_job_id for j in jobs])
        )
    return len(jobs) >= ctx.daemon.batch and not ctx.stopping()


def _guarded(ctx: Context, job: _Job, step: Callable[[_Job], object]) -> bool:
    """Run one job's step; an unexpected error (a bug) is logged with the job and its CE and
    leaves the job for the next cycle, without stopping the other jobs of this one."""
    try:
        step(job)
    except Exception:
        job_log(ctx.log, panda_id=job.panda_id, ce=job.ce).exception(
            "validation failed unexpectedly; the job is tried again next cycle"
        )
        return False
    return True


# -- claiming ----------------------------------------------------------------------------------


def _claim(conn: Connection, ctx: Context) -> list[_Job]:
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
    jobs = []
    for row in rows:
        try:
            spec = parse_spec(row.spec, row.spec_format)
        except ValueError:
            spec = {}
        jobs.append(
            _Job(
                panda_job_id=row.id,
                panda_id=int(row.panda_id),
                queue=row.queue,
                spec=spec,
                created_at=row.created_at,
                state_changed_at=row.state_changed_at,
                log_url=row.log_url,
                deferrals=row.validation_deferrals,
                ce=row.ce_name,
                backend=row.backend,
                ce_job_id=row.ce_job_id,
                ce_state=row.ce_state,
                output_dir=Path(row.output_dir) if row.output_dir else None,
                exit_code=row.exit_code,
                error_text=row.error_text,
                worker_node=row.worker_node,
                started_at=row.started_at,
                ended_at=row.ended_at,
                attempts_left=row.attempts_left,
            )
        )
    return jobs


# -- reading what came back --------------------------------------------------------------------


def _read(ctx: Context, job: _Job, opts: ValidatorOptions) -> Decision | None:
    """A decision made from the files alone, or None: the outputs are to be checked."""
    if job.ce_state not in (CEJobState.DONE, CEJobState.DONEFAILED):
        why = f"latest CE job is {job.ce_state or 'missing'}, not done"
        return Decision(PandaJobState.FAILED, opts.ce_failed_code, why)
    if job.truepilot and job.ce_state == CEJobState.DONE:
        return Decision(PandaJobState.FINISHED)  # truepilot: done once the logs are published
    directory = job.output_dir
    try:
        job.heartbeat = (
            pilot_files.read_heartbeat(directory, max_bytes=opts.max_file_bytes)
            if directory is not None and directory.is_dir()
            else None
        )
    except BadPilotFile as error:
        return Decision(
            PandaJobState.FAILED, opts.no_report_code, f"unusable pilot report: {error}"
        )
    heartbeat = job.heartbeat
    if directory is not None and directory.is_dir():
        job.payload = _payload_exit(ctx, job, directory, opts)
    if job.ce_state == CEJobState.DONEFAILED:
        if heartbeat is not None and _pilot_failed(heartbeat):
            return Decision(PandaJobState.FAILED)  # the pilot's own codes stand
        diag = f"CE job failed (exit code {job.exit_code}): {job.error_text or 'no error given'}"
        return Decision(PandaJobState.FAILED, opts.ce_failed_code, diag)
    if job.truepilot:
        return Decision(PandaJobState.FINISHED)
    if heartbeat is None:
        return Decision(
            PandaJobState.FAILED, opts.no_report_code, "no heartbeat.json in the job's outputs"
        )
    if _pilot_failed(heartbeat):
        return Decision(PandaJobState.FAILED)
    outputs: tuple[pilot_files.OutputFile, ...] | None = heartbeat.outputs
    if "xml" not in heartbeat.fields and directory is not None:
        try:
            found = pilot_files.read_metadata_xml(directory, max_bytes=opts.max_file_bytes)
        except BadPilotFile as error:
            return Decision(
                PandaJobState.FAILED, opts.no_report_code, f"unusable pilot report: {error}"
            )
        outputs = tuple(found) if found is not None else None
    elif "xml" not in heartbeat.fields:
        outputs = None
    if outputs is None:
        why = "heartbeat.json has no output report (xml) and there is no metadata.xml"
        return Decision(PandaJobState.FAILED, opts.no_report_code, why)
    if directory is not None:
        try:
            listed = pilot_files.read_output_list(directory, max_bytes=opts.max_file_bytes)
        except BadPilotFile as error:
            return Decision(
                PandaJobState.FAILED, opts.no_report_code, f"unusable pilot report: {error}"
            )
        disagreement = cross_check(outputs, listed, opts) if listed is not None else None
        if disagreement is not None:
            return disagreement
    job.expected = [Expected(f.lfn, f.surl, f.fsize, f.adler32) for f in outputs]
    return None


def _payload_exit(
    ctx: Context, job: _Job, directory: Path, opts: ValidatorOptions
) -> dict[str, Any]:
    """``exeErrorCode``/``exeErrorDiag`` from the transform's ``jobReport.json`` (its
    ``exitCode``/``exitMsg``), used where the pilot's heartbeat does not give them; the report
    is kept for ``metaData``. A missing file gives nothing; an unusable one is logged (naming
    the job and the cause) and ignored: the pilot's heartbeat, not the transform's report,
    decides the job."""
    try:
        job.job_report = pilot_files.find_job_report(
            directory, panda_id=job.panda_id, max_bytes=opts.max_file_bytes
        )
    except BadPilotFile as error:
        job_log(ctx.log, panda_id=job.panda_id, ce=job.ce).warning(
            "jobReport.json ignored: %s", error
        )
        return {}
    if job.job_report is None:
        return {}
    found = job.job_report.content
    code, message = found.get("exitCode"), found.get("exitMsg")
    fields: dict[str, Any] = {}
    if isinstance(code, int) and not isinstance(code, bool):
        fields["exeErrorCode"] = code
    if isinstance(message, str):
        fields["exeErrorDiag"] = message[:500]
    return fields


def _pilot_failed(heartbeat: Heartbeat) -> bool:
    code = heartbeat.fields.get("pilotErrorCode")
    failed_code = isinstance(code, int) and not isinstance(code, bool) and code != 0
    return heartbeat.state == PandaServerStatus.FAILED or failed_code


# -- storage -----------------------------------------------------------------------------------


def checker(ctx: Context) -> StorageChecker:
    """The daemon's storage checker (kept between cycles; closed when the daemon stops)."""
    found = ctx.cache.get(CHECKER_KEY)
    if not isinstance(found, StorageChecker):
        found = StorageChecker(ctx.settings.storage, ctx.log)
        ctx.cache[CHECKER_KEY] = found
    return found


def _check(ctx: Context, jobs: Sequence[_Job]) -> None:
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


def _stdout_names(job: _Job) -> list[str]:
    log_file = job.spec.get("logFile")
    names = []
    if isinstance(log_file, str) and log_file not in ("", "NULL"):
        names.append(stdout_name(log_file))
    return [*names, f"{job.panda_id}.out", *PILOT_LOGS]


def _tarball_logs(ctx: Context, job: _Job, directory: Path) -> list[str]:
    """The pilot's logs inside the job's log tarball (``logFile``), extracted for the excerpt of
    a failed job into ``<output_dir>/log-extracted`` (within engine.fetch's caps, never outside
    that directory); [] when there is no tarball or it is refused (logged, naming the cause)."""
    log_file = job.spec.get("logFile")
    if not isinstance(log_file, str) or not LOG_NAME.fullmatch(log_file):
        return []
    archive = directory / log_file
    if archive.is_symlink() or not archive.is_file():
        return []
    target = directory / LOG_TARGET
    caps = ctx.settings.engine.fetch
    try:
        if not target.exists():
            safe_tar.extract(archive, target, max_bytes=caps.max_bytes, max_files=caps.max_files)
    except (BadArchive, OSError) as error:
        job_log(ctx.log, panda_id=job.panda_id, ce=job.ce).warning(
            "log tarball not used: %s", error
        )
        return []
    found = []
    for here, dirs, files in os.walk(target, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if name in TARBALL_LOGS:
                found.append(os.path.relpath(os.path.join(here, name), directory))
    return sorted(found, key=lambda name: TARBALL_LOGS.index(os.path.basename(name)))[:3]


def _publish(ctx: Context, job: _Job) -> bool:
    """The job's logs to the web area; False (logged) if the web area failed."""
    log = job_log(ctx.log, panda_id=job.panda_id, ce=job.ce)
    try:
        web_area.publish(
            ctx.settings,
            panda_id=job.panda_id,
            queue=job.queue,
            log_url=job.log_url,
            created_at=job.created_at,
            output_dir=job.output_dir if job.output_dir and job.output_dir.is_dir() else None,
            stdout_names=_stdout_names(job),
            # HTCondor writes the job's own .out/.err/.log into the web area at submission
            # (its user log is the .log): nothing of ours may replace it.
            diagnostics=None if job.backend == "condor" else job.error_text,
        )
    except (OSError, ValueError) as error:
        log.warning("logs not published to the web area: %s", error)
        return False
    return True


def _report(
    ctx: Context, job: _Job, decision: Decision, opts: ValidatorOptions
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The final report's fields, and what act did not take of the pilot's (logged here)."""
    fixes = final_report.Corrections(
        ce=job.ce,
        ce_job_id=job.ce_job_id,
        worker_node=job.worker_node,
        started_at=job.started_at,
        ended_at=job.ended_at,
        cores=spec_int(job.spec.get("coreCount")),
    )
    excerpt = None
    if (
        decision.action == PandaJobState.FAILED
        and job.output_dir is not None
        and job.output_dir.is_dir()
    ):
        names = [*_tarball_logs(ctx, job, job.output_dir), *_stdout_names(job)]
        excerpt = pilot_files.log_excerpt(
            job.output_dir, names, max_lines=ctx.settings.weblogs.excerpt_lines
        )
    pilot = job.heartbeat.fields if job.heartbeat is not None else {}
    built = final_report.build(
        {**job.payload, **pilot},
        fixes,
        error_code=decision.code,
        error_diag=decision.diag or None,
        pilot_log=excerpt or None,
        job_report=job.job_report.text if job.job_report is not None else None,
        max_meta_data=opts.max_meta_data,
    )
    log = job_log(ctx.log, panda_id=job.panda_id, ce=job.ce)
    if built.dropped:
        log.warning(
            "heartbeat.json fields not forwarded (no PanDA update argument, not scalars or "
            "too large): %s",
            ", ".join(sorted(built.dropped)),
        )
    for note in built.notes:
        log.warning("final report: %s", note)
    return built.fields, built.notes


def _settle(ctx: Context, job: _Job, opts: ValidatorOptions) -> None:
    decision = job.decision
    assert decision is not None
    log = job_log(ctx.log, panda_id=job.panda_id, ce=job.ce)
    if decision.action == "defer":
        delay = backoff(opts.retry_after, opts.retry_max, job.deferrals + 1)
        later = {
            "validate_after": utcnow() + seconds(delay),
            "validation_deferrals": job.deferrals + 1,
            "validation_note": decision.diag[:2000],
        }
        ctx.db.run(
            lambda conn: conn.execute(
                sa.update(panda_jobs)
                .where(panda_jobs.c.id == job.panda_job_id, panda_jobs.c.lease_owner == ctx.owner)
                .values(**later)
            )
        )
        log.warning("validation put off %.0f s: %s", delay, decision.diag)
        return
    published = _publish(ctx, job)
    maybe_crash(CRASH_POINT)
    target: str = decision.action
    if job.truepilot and job.ce_state == CEJobState.DONE:
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
        fields, notes = _report(ctx, job, decision, opts)
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
            [job.panda_job_id],
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
