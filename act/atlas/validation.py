"""What the output checks of one job add up to: finished, failed, resubmitted, or put off.

A pure function of the per-file results (:class:`act.atlas.storage.model.FileCheck`) and the
validator's options, so the policy is tested without storage:

==========================================  ===============================================
per-file results                            the job
==========================================  ===============================================
all ``ok``                                  finished
any ``missing``, ``mismatch``, ``invalid``  ``invalid_outputs``: toresubmit (default; failed
                                            once the job's retry budget is spent, see
                                            :mod:`act.engine.resubmit`) or failed, with the
                                            PanDA error code of the first bad file
                                            (missing 1165, adler32 1172, size 1137)
``no_checksum``                             ok with ``missing_checksum: accept`` (default), else
                                            as a mismatch
``unsupported`` (srm://, gsiftp://, ...)    ok with ``unsupported: accept`` (default), else
                                            as a mismatch
otherwise any ``unreachable``               put off (the storage's fault, not the job's), until
                                            ``give_up_after``: then failed, code 1137
==========================================  ===============================================

A definite bad file decides at once, even if other files' storage did not answer: checking those
later could not make the job valid.

Before any storage check, :func:`cross_check` holds the pilot's two lists of outputs against each
other where both came back: ``output.list`` (what the CE was asked to upload, and where) and the
output report (``xml`` of heartbeat.json, or metadata.xml: what PanDA will register). The job
fails (not resubmitted: the pilot's reports are inconsistent, another attempt of the same pilot
would not mend them), naming each file, when

* a file of output.list is not in the output report (uploaded, but PanDA would never know it):
  ``no_report_code`` (1187);
* a file's checksum differs between the two (the CE checks the upload against output.list's, PanDA
  registers the report's): ``checksum_code`` (1172).

A file in the report but not in output.list is left to the storage check (it may have been
uploaded otherwise; if not, it is missing there). URLs are not compared: the storage check looks
at the report's, which PanDA registers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from act.atlas.final_report import MAX_META_DATA
from act.atlas.pilot_files import ListedOutput, OutputFile
from act.atlas.storage.model import FileCheck, Verdict
from act.common.section import Section
from act.common.states import PandaJobState

DAY = 86400.0
Action = Literal[PandaJobState.FINISHED, PandaJobState.FAILED, PandaJobState.TORESUBMIT, "defer"]


class ValidatorOptions(Section):
    """``daemons.validator.options``."""

    retry_after: float = Field(300.0, gt=0)  # first wait after unreachable storage, doubled
    retry_max: float = Field(3600.0, gt=0)  # ... up to this
    give_up_after: float = Field(2 * DAY, gt=0)  # in tovalidate this long: failed
    missing_checksum: Literal["accept", "fail"] = "accept"
    unsupported: Literal["accept", "fail"] = "accept"
    invalid_outputs: Literal["resubmit", "fail"] = "resubmit"
    # PanDA (pilot) error codes of the failures act decides.
    missing_code: int = Field(1165, ge=0)  # MISSINGOUTPUTFILE
    checksum_code: int = Field(1172, ge=0)  # PUTADMISMATCH
    size_code: int = Field(1137, ge=0)  # STAGEOUTFAILED (no "wrong size" code exists)
    unreachable_code: int = Field(1137, ge=0)  # STAGEOUTFAILED
    no_report_code: int = Field(1187, ge=0)  # NOPAYLOADMETADATA: heartbeat.json missing or bad
    ce_failed_code: int = Field(9000, ge=0)  # the CE job failed and the pilot said nothing
    max_file_bytes: int = Field(16 << 20, gt=0)  # a pilot's JSON/XML file larger than this is bad
    # metaData (the jobReport) larger than this (bytes, JSON-encoded) is not sent: see
    # act.atlas.final_report
    max_meta_data: int = Field(MAX_META_DATA, gt=0)


@dataclass(frozen=True)
class Decision:
    action: Action
    code: int | None = None
    diag: str = ""


def _bad(check: FileCheck, opts: ValidatorOptions) -> int | None:
    """The error code if this file makes the job invalid, else None."""
    expected, verdict = check.expected, check.verdict
    if verdict is Verdict.MISSING:
        return opts.missing_code
    if verdict is Verdict.INVALID:
        return opts.missing_code
    if verdict is Verdict.MISMATCH:
        if expected.size is not None and check.size is not None and check.size != expected.size:
            return opts.size_code
        return opts.checksum_code
    if verdict is Verdict.NO_CHECKSUM and opts.missing_checksum == "fail":
        return opts.checksum_code
    if verdict is Verdict.UNSUPPORTED and opts.unsupported == "fail":
        return opts.size_code
    return None


def judge(
    checks: Sequence[FileCheck],
    opts: ValidatorOptions,
    *,
    overdue: bool,
    tries_left: bool = True,
) -> Decision:
    """The job's outcome from its files' checks; ``overdue``: it waited ``give_up_after``;
    ``tries_left``: its retry budget allows a resubmission."""
    bad = [(check, code) for check in checks if (code := _bad(check, opts)) is not None]
    if bad:
        details = "; ".join(check.detail for check, _ in bad[:3])
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        diag = f"{len(bad)} of {len(checks)} output file(s) invalid: {details}{more}"
        if opts.invalid_outputs == "fail":
            return Decision(PandaJobState.FAILED, bad[0][1], diag)
        if not tries_left:
            return Decision(PandaJobState.FAILED, bad[0][1], f"{diag}; no attempts left")
        return Decision(PandaJobState.TORESUBMIT, bad[0][1], diag)
    unreachable = [check for check in checks if check.verdict is Verdict.UNREACHABLE]
    if unreachable:
        endpoints = sorted({check.endpoint for check in unreachable})
        diag = f"storage unreachable: {', '.join(endpoints)}: {unreachable[0].detail}"
        if overdue:
            return Decision(PandaJobState.FAILED, opts.unreachable_code, f"gave up waiting; {diag}")
        return Decision("defer", None, diag)
    return Decision(PandaJobState.FINISHED)


def cross_check(
    reported: Sequence[OutputFile], listed: Sequence[ListedOutput], opts: ValidatorOptions
) -> Decision | None:
    """A failed decision if output.list and the output report disagree (module docstring)."""
    by_lfn = {entry.lfn: entry for entry in reported}
    problems: list[tuple[int, str]] = []
    for entry in listed:
        found = by_lfn.get(entry.lfn)
        if found is None:
            problems.append(
                (
                    opts.no_report_code,
                    f"{entry.lfn}: in output.list (uploaded to {entry.url}) but not in the "
                    "pilot's output report",
                )
            )
        elif (
            entry.checksum_type == "adler32"
            and found.adler32 is not None
            and entry.checksum != found.adler32
        ):
            problems.append(
                (
                    opts.checksum_code,
                    f"{entry.lfn}: adler32 {entry.checksum} in output.list, {found.adler32} in "
                    "the output report",
                )
            )
    if not problems:
        return None
    details = "; ".join(text for _, text in problems[:3])
    more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
    diag = f"the pilot's output.list and output report disagree: {details}{more}"
    return Decision(PandaJobState.FAILED, problems[0][0], diag)
