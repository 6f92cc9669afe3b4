"""What came back in a CE job's ``output_dir``, as the validator reads it (act.atlas.validator).

All of it is untrusted (:mod:`act.atlas.pilot_files`). :func:`read_outputs` decides a job from
its files alone where they suffice (the CE job failed, truepilot, the pilot reports a failure,
a report is missing, unusable or disagrees with ``output.list``), and otherwise lists the output
files to check on storage (:attr:`Validation.expected`). :class:`Validation` is a claimed job
(its typed row) with what the validator works out of it on the way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from act.atlas import pilot_files
from act.atlas.config import Context
from act.atlas.panda_status import PandaServerStatus
from act.atlas.pilot_files import BadPilotFile, Heartbeat
from act.atlas.queries import ToValidate
from act.atlas.storage.model import Expected, FileCheck
from act.atlas.validation import Decision, ValidatorOptions, cross_check
from act.common.logs import JobLog, job_log
from act.common.states import CEJobState, PandaJobState


@dataclass
class Validation:
    """A job being validated: its claimed row, and what the validator works out of it."""

    row: ToValidate
    spec: dict[str, Any]  # the job's spec, parsed ({} if it cannot be)
    truepilot: bool = False
    heartbeat: Heartbeat | None = None
    payload: dict[str, Any] = field(default_factory=dict)  # from jobReport.json
    job_report: pilot_files.JobReport | None = None
    expected: list[Expected] = field(default_factory=list)
    checks: list[FileCheck] = field(default_factory=list)
    decision: Decision | None = None

    @property
    def output_path(self) -> Path | None:
        """The CE job's ``output_dir`` (None if it has none)."""
        return Path(self.row.output_dir) if self.row.output_dir else None

    def log(self, ctx: Context) -> JobLog:
        """The daemon's logger, naming this job and its CE."""
        return job_log(ctx.log, panda_id=self.row.panda_id, ce=self.row.ce_name)


def read_outputs(ctx: Context, job: Validation, opts: ValidatorOptions) -> Decision | None:
    """A decision made from the files alone, or None: the outputs are to be checked."""
    if job.row.ce_state not in (CEJobState.DONE, CEJobState.DONEFAILED):
        why = f"latest CE job is {job.row.ce_state or 'missing'}, not done"
        return Decision(PandaJobState.FAILED, opts.ce_failed_code, why)
    if job.truepilot and job.row.ce_state == CEJobState.DONE:
        return Decision(PandaJobState.FINISHED)  # truepilot: done once the logs are published
    directory = job.output_path
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
    if job.row.ce_state == CEJobState.DONEFAILED:
        if heartbeat is not None and _pilot_failed(heartbeat):
            return Decision(PandaJobState.FAILED)  # the pilot's own codes stand
        row = job.row
        diag = f"CE job failed (exit code {row.exit_code}): {row.error_text or 'no error given'}"
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
    ctx: Context, job: Validation, directory: Path, opts: ValidatorOptions
) -> dict[str, Any]:
    """``exeErrorCode``/``exeErrorDiag`` from the transform's ``jobReport.json`` (its
    ``exitCode``/``exitMsg``), used where the pilot's heartbeat does not give them; the report
    is kept for ``metaData``. A missing file gives nothing; an unusable one is logged (naming
    the job and the cause) and ignored: the pilot's heartbeat, not the transform's report,
    decides the job."""
    try:
        job.job_report = pilot_files.find_job_report(
            directory, panda_id=job.row.panda_id, max_bytes=opts.max_file_bytes
        )
    except BadPilotFile as error:
        job.log(ctx).warning("jobReport.json ignored: %s", error)
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
