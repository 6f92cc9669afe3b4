"""The propagator's jobs that get no PanDA call: heartbeat-less jobs (their final report written
as ``jobReport.json`` into their access point) and those PanDA wants no report of."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy.engine import Connection

from act.atlas.config import Context
from act.atlas.propagator.jobs import (
    FINAL,
    REPORT_FILE,
    Job,
    Outcome,
    PropagatorOptions,
    report_of,
    told,
)
from act.atlas.propagator.record import (
    finish,
    report_failed,
    set_columns,
)
from act.common.atomic import atomic_write
from act.common.logs import job_log

# -- jobs that get no PanDA call -------------------------------------------------------------------


def settle_locally(conn: Connection, ctx: Context, jobs: list[Job], outcome: Outcome) -> None:
    for job in jobs:
        log = job_log(ctx.log, panda_id=job.panda_id, ce=job.ce)
        if job.state not in FINAL:
            # Nothing to say now: a heartbeat-less job, or one PanDA no longer wants to hear of.
            set_columns(conn, ctx, job, next_report_at=None)
            continue
        if job.heartbeat_less:
            try:
                path = write_report_file(job, ctx.options)
            except (OSError, ValueError) as error:
                log.error("cannot write %s: %s", REPORT_FILE, error)
                report_failed(conn, ctx, [job], outcome)
                continue
            log.info("final report (%s) written to %s", told(job), path)
        else:
            log.info("no final report: PanDA answered %s before", job.panda_command)
        finish(conn, ctx, [job], None, outcome)


def write_report_file(job: Job, opts: PropagatorOptions) -> Path:
    """Write the final report as ``<access_point>/jobReport.json``, atomically; its path."""
    if not job.access_point:
        raise ValueError("the job has no access_point")
    directory = Path(job.access_point)
    if not directory.is_absolute():
        raise ValueError(f"access_point {job.access_point!r} is not an absolute path")
    if not directory.is_dir():
        raise ValueError(f"access_point {directory} is not a directory")
    report = {"jobId": job.panda_id, "state": told(job), **report_of(job, opts)}
    if job.attempt > 0:
        report["attemptNr"] = job.attempt
    target = directory / REPORT_FILE
    text = json.dumps(report, sort_keys=True)
    atomic_write(target, text.encode("utf-8"), mode=0o644, durable=True)
    return target
