"""PanDA job -> ARC xRSL.

Every value is a quoted xRSL string (a ``"`` inside is doubled), so quotes, parentheses and any
script in a value are literal text; control characters are refused before they get here.
Locally shipped files are ``inputfiles`` entries whose source is their absolute path under
``input_dir``: ARC clients upload such files into the job's session directory.

The size comes from :mod:`act.atlas.translate.sizing`: ``memory`` is per slot (core), and the
times carry their unit (``"1440 minutes"``): A-REX parses the xRSL posted to its REST interface
in its server-side ("GRIDMANAGER") dialect, where a bare ``walltime``/``cputime`` number is
seconds, while ARC's client library reads the same number as minutes (seen on the test A-REX
6.17: ``(walltime = "1440")`` became a 1440-second limit; tests/test_condor_classad.py reads what
the real A-REX hands its batch system).

``outputfiles`` keep for act (empty destination: left in the session directory, which act
downloads) the pilot's stdout, which A-REX otherwise discards although ``stdout`` names it (seen
on the test A-REX 6.17; the web area's pilot log comes from it), and for a native job the pilot's
``heartbeat.json``, its log tarball, ``event_status.dump.json``
for event service, ``output.list`` and ``jobReport.json`` (in pilot3's job directory
``PanDA_Pilot-<PandaID>/`` and at the top, :func:`~act.atlas.translate.common.pilot_reports`),
and ask the CE to upload what ``output.list`` names (``@output.list``). A listed file the pilot
did not write is no error for A-REX.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from act.atlas.queues import QueueCE
from act.atlas.translate.common import (
    EVENT_STATUS_FILE,
    HEARTBEAT_FILE,
    OUTPUT_LIST,
    TARBALL_NAME,
    WRAPPER_NAME,
    JobInput,
    Translation,
    check_value,
    pilot_reports,
    plan,
)
from act.atlas.translate.errors import TranslationError


def quote(value: str) -> str:
    """An xRSL string literal."""
    return '"' + value.replace('"', '""') + '"'


def _relation(name: str, *values: str) -> str:
    return f"({name} = {' '.join(quote(v) for v in values)})"


def _lists(name: str, rows: Iterable[tuple[str, ...]]) -> str:
    inner = " ".join("(" + " ".join(quote(v) for v in row) + ")" for row in rows)
    return f"({name} = {inner})"


def kept_outputs(
    panda_id: int, log_file: str, stdout: str, *, native: bool, event_service: bool
) -> list[tuple[str, str]]:
    """The job's ``outputfiles`` (see the module docstring): the pilot's stdout always (A-REX
    keeps only what ``outputfiles`` names, ``stdout`` included), a native job's reports too."""
    outputs = [(stdout, "")]
    if native:
        outputs += [(HEARTBEAT_FILE, ""), (log_file, "")]
        if event_service:
            outputs.append((EVENT_STATUS_FILE, ""))
        outputs += [(name, "") for name in pilot_reports(panda_id)]
        outputs.append((OUTPUT_LIST, ""))
    return outputs


def to_xrsl(job: JobInput, ce: QueueCE, *, input_dir: Path) -> Translation:
    """The xRSL for one job on one ARC CE; raises TranslationError."""
    if ce.flavour != "arc":
        raise TranslationError(job.panda_id, "ce.flavour", f"{ce.flavour} CE: xRSL is for ARC")
    if not input_dir.is_absolute():
        raise TranslationError(job.panda_id, "input_dir", f"{input_dir} must be absolute")
    check_value(job.panda_id, "input_dir", str(input_dir))
    p = plan(job)
    queue = p.queue
    lines = [
        _relation("executable", WRAPPER_NAME),
        _relation("arguments", *p.arguments),
        _relation("jobname", p.job_name),
        _relation("count", str(p.cores)),
    ]
    if p.cores > 1:
        lines.append(_relation("countpernode", str(p.cores)))
    lines += [
        _relation("memory", str(p.memory_per_core_mb)),
        _relation("walltime", f"{p.walltime_minutes} minutes"),
        _relation("cputime", f"{p.walltime_minutes * p.cores} minutes"),
        _relation("priority", str(p.priority)),
    ]
    if ce.ce_queue:
        lines.append(_relation("queue", check_value(job.panda_id, "ce.ce_queue", ce.ce_queue)))
    if p.native:
        rtes = ["APPS/HEP/ATLAS-SITE"] + (["ENV/PROXY"] if p.job_type == "user" else [])
    else:
        rtes = ["ENV/PROXY"]
    lines += [_relation("runtimeenvironment", rte) for rte in rtes]
    lines.append(_lists("environment", p.environment))

    inputs = [(name, str(input_dir / name)) for name in p.files]
    inputs.append((WRAPPER_NAME, check_value(job.panda_id, "pilot_wrapper", queue.pilot_wrapper)))
    if p.native:
        if not queue.pilot_tarball:
            raise TranslationError(job.panda_id, "queue.pilot_tarball", "native jobs need one")
        inputs.append(
            (TARBALL_NAME, check_value(job.panda_id, "pilot_tarball", queue.pilot_tarball))
        )
        inputs += [(f.lfn, f.url) for f in p.inputs]
    lines.append(_lists("inputfiles", inputs))
    outputs = kept_outputs(
        job.panda_id,
        p.log_file,
        p.stdout_name,
        native=p.native,
        event_service=job.event_ranges is not None,
    )
    lines.append(_lists("outputfiles", outputs))
    lines += [
        _relation("stdout", p.stdout_name),
        _relation("join", "yes"),
        _relation("gmlog", "gmlog"),
        _relation("rerun", "2"),
    ]
    return Translation(
        description="&" + "\n".join(lines) + "\n",
        files=p.files,
        cores=p.cores,
        walltime_minutes=p.walltime_minutes,
        memory_mb=p.memory_mb,
        priority=p.priority,
    )
