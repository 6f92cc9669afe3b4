"""PanDA job -> the local back end's JSON description (:mod:`act.local.description`).

A queue whose CE is a ``local`` engine CE runs the queue's pilot wrapper (``pilot_wrapper``: a
command on this machine, not a URL) with the same arguments and environment as on a grid CE, in
a job directory holding the shipped files (the job spec, queuedata, event ranges). It returns
the pilot's heartbeat, its log file, ``output.list`` and ``jobReport.json`` where the pilot
leaves them (:func:`~act.atlas.translate.common.pilot_reports`) and, for event-service jobs,
``event_status.dump.json``; one the pilot did not write is named as missing in the CE's
diagnostics (shown for a failed job only). A native job's outputs are uploaded by the CE, as an
ARC CE's data staging does: the pilot names them in ``output.list`` (its ``mv`` copytool), the
description's ``output_list`` (:mod:`act.local.stageout`).
"""

from __future__ import annotations

from pathlib import Path

from act.atlas.translate.common import (
    EVENT_STATUS_FILE,
    HEARTBEAT_FILE,
    OUTPUT_LIST,
    JobInput,
    Translation,
    check_value,
    pilot_reports,
    plan,
)
from act.atlas.translate.errors import TranslationError
from act.local.description import LocalJob


def to_local(job: JobInput, *, input_dir: Path) -> Translation:
    """The local description for one job; raises TranslationError."""
    if not input_dir.is_absolute():
        raise TranslationError(job.panda_id, "input_dir", f"{input_dir} must be absolute")
    p = plan(job)
    command = check_value(job.panda_id, "pilot_wrapper", p.queue.pilot_wrapper)
    if "://" in command:
        raise TranslationError(
            job.panda_id,
            "queue.pilot_wrapper",
            f"{command!r}: a local CE runs a command on this machine, not a URL",
        )
    outputs = [HEARTBEAT_FILE, p.log_file]
    if job.event_ranges is not None:
        outputs.append(EVENT_STATUS_FILE)
    outputs += pilot_reports(job.panda_id)
    description = LocalJob(
        executable=command,
        arguments=list(p.arguments),
        environment=dict(p.environment),
        inputs=sorted(p.files),
        outputs=outputs,
        output_list=OUTPUT_LIST.removeprefix("@") if p.native else None,
        walltime=float(p.walltime_minutes * 60),
        cores=p.cores,
    )
    return Translation(
        description=description.to_description(),
        files=p.files,
        cores=p.cores,
        walltime_minutes=p.walltime_minutes,
        memory_mb=p.memory_mb,
        priority=p.priority,
    )
