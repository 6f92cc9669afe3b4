"""What a decided job leaves behind (act.atlas.validator): its logs published to the web area
(:mod:`act.atlas.web_area`), and its final report's fields (:mod:`act.atlas.final_report`), a
failed job's with an excerpt of the pilot's log, taken from the log tarball if it came back.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from act.atlas import final_report, pilot_files, web_area
from act.atlas.config import Context
from act.atlas.panda_id import spec_int
from act.atlas.translate.common import stdout_name
from act.atlas.validation import Decision, ValidatorOptions
from act.atlas.validator_outputs import Validation
from act.common import safe_tar
from act.common.safe_tar import BadArchive
from act.common.states import PandaJobState

#: Pilot log names tried for the web area's ``.out`` and the excerpt, after the pilot's stdout.
PILOT_LOGS = ("pilotlog.txt", "stdout")
#: Logs looked for in the log tarball, best first, and where it is extracted.
TARBALL_LOGS = ("pilotlog.txt", "payload.stdout", "payload.stderr")
LOG_TARGET = "log-extracted"
LOG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,254}")


def stdout_names(job: Validation) -> list[str]:
    log_file = job.spec.get("logFile")
    names = []
    if isinstance(log_file, str) and log_file not in ("", "NULL"):
        names.append(stdout_name(log_file))
    return [*names, f"{job.row.panda_id}.out", *PILOT_LOGS]


def tarball_logs(ctx: Context, job: Validation, directory: Path) -> list[str]:
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
        job.log(ctx).warning("log tarball not used: %s", error)
        return []
    found = []
    for here, dirs, files in os.walk(target, followlinks=False):
        dirs.sort()
        for name in sorted(files):
            if name in TARBALL_LOGS:
                found.append(os.path.relpath(os.path.join(here, name), directory))
    return sorted(found, key=lambda name: TARBALL_LOGS.index(os.path.basename(name)))[:3]


def publish_logs(ctx: Context, job: Validation) -> bool:
    """The job's logs to the web area; False (logged) if the web area failed."""
    log = job.log(ctx)
    try:
        web_area.publish(
            ctx.settings,
            panda_id=job.row.panda_id,
            queue=job.row.queue,
            log_url=job.row.log_url,
            created_at=job.row.created_at,
            output_dir=job.output_path if job.output_path and job.output_path.is_dir() else None,
            stdout_names=stdout_names(job),
            # HTCondor writes the job's own .out/.err/.log into the web area at submission
            # (its user log is the .log): nothing of ours may replace it.
            diagnostics=None if job.row.backend == "condor" else job.row.error_text,
        )
    except (OSError, ValueError) as error:
        log.warning("logs not published to the web area: %s", error)
        return False
    return True


def final_report_fields(
    ctx: Context, job: Validation, decision: Decision, opts: ValidatorOptions
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The final report's fields, and what act did not take of the pilot's (logged here)."""
    fixes = final_report.Corrections(
        ce=job.row.ce_name,
        ce_job_id=job.row.ce_job_id,
        worker_node=job.row.worker_node,
        started_at=job.row.started_at,
        ended_at=job.row.ended_at,
        cores=spec_int(job.spec.get("coreCount")),
    )
    excerpt = None
    if (
        decision.action == PandaJobState.FAILED
        and job.output_path is not None
        and job.output_path.is_dir()
    ):
        names = [*tarball_logs(ctx, job, job.output_path), *stdout_names(job)]
        excerpt = pilot_files.log_excerpt(
            job.output_path, names, max_lines=ctx.settings.weblogs.excerpt_lines
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
    log = job.log(ctx)
    if built.dropped:
        log.warning(
            "heartbeat.json fields not forwarded (no PanDA update argument, not scalars or "
            "too large): %s",
            ", ".join(sorted(built.dropped)),
        )
    for note in built.notes:
        log.warning("final report: %s", note)
    return built.fields, built.notes
