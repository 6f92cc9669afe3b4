"""Reading the files a pilot leaves behind (``heartbeat.json``, ``jobReport.json``,
``output.list``, ``metadata.xml``, logs) from a finished CE job's output directory, none of which
is trusted.

Where pilot3 leaves them, relative to its launch directory (``PILOT_HOME``: the CE job's session
directory, since act starts the pilot wrapper there with ``--piloturl local``):

* ``heartbeat.json`` at the top (``write_heartbeat_to_file``: the final update it would have
  sent; read by :func:`read_heartbeat`);
* ``output.list`` at the top (``pilot/copytool/mv.py``, ``create_output_list``: one line per
  output and log file, ``<lfn> <turl>:checksumtype=adler32:checksumvalue=<hex>``, the files the
  ARC CE uploads; read by :func:`read_output_list`);
* ``jobReport.json`` in the pilot's job directory ``PanDA_Pilot-<PandaID>/`` (the transform
  writes it in its working directory; older pilots left it at the top: both are looked at, the
  job directory first, :func:`find_job_report`);
* the log tarball at the top.

The CE descriptions ask for these by name (:mod:`act.atlas.translate`).

Everything in the directory came from a worker node: any file may be missing, huge, a symbolic link
(``heartbeat.json -> /etc/passwd``), a FIFO, not UTF-8, malformed, or of the wrong shape. The
readers here return ``None`` for an absent file and raise :class:`BadPilotFile` (a ValueError whose
text names the file and the cause on one line) for one that is present but cannot be used, so the
validator can fail the job with a clear reason instead of crashing.

Rules common to all readers:

* files are opened below the directory without following symbolic links at any component
  (:mod:`act.common.safe_paths`), must be regular files and at most ``max_bytes`` long;
* JSON must be UTF-8 (a leading byte-order mark is tolerated), an object at the top, with no
  duplicate keys at any level (the pilot's intent would be ambiguous, and PanDA's parser may pick
  another one than ours) and no ``NaN``/``Infinity`` (not JSON; PanDA would refuse them);
* fields that are not understood are kept as read in :attr:`Heartbeat.fields`, never dropped.

Where the pieces are: opening and decoding under these rules in :mod:`act.atlas.pilot_reading`,
the output report entries (``xml`` of heartbeat.json, ``metadata.xml``) checked field by field in
:mod:`act.atlas.pilot_outputs`, the logs' tails and excerpts in :mod:`act.atlas.pilot_logs`; the
readers of all of them are importable from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from act.atlas.pilot_logs import log_excerpt, read_text_tail
from act.atlas.pilot_outputs import (
    METADATA_XML,
    OutputFile,
    check_lfn,
    check_surl,
    output_report,
    read_metadata_xml,
)
from act.atlas.pilot_reading import (
    BadPilotFile,
    loads_object,
    read_json_object,
    read_text,
    short_repr,
)

__all__ = [
    "HEARTBEAT",
    "JOB_REPORT",
    "METADATA_XML",
    "OUTPUT_LIST",
    "BadPilotFile",
    "Heartbeat",
    "JobReport",
    "ListedOutput",
    "OutputFile",
    "find_job_report",
    "job_dir",
    "job_report_names",
    "log_excerpt",
    "read_heartbeat",
    "read_job_report",
    "read_metadata_xml",
    "read_output_list",
    "read_text_tail",
]

HEARTBEAT = "heartbeat.json"
JOB_REPORT = "jobReport.json"
OUTPUT_LIST = "output.list"

_CHECKSUM_OPTION = re.compile(r":(checksumtype|checksumvalue)=([^:/]*)$")
_HEX = re.compile(r"[0-9A-Fa-f]{1,64}")


@dataclass(frozen=True)
class ListedOutput:
    """One line of ``output.list``: a file the CE is asked to upload, and where."""

    lfn: str
    url: str  # the upload URL without ARC's checksum options
    checksum_type: str | None  # lowercase, e.g. adler32
    checksum: str | None  # lowercase hex; adler32 zero-padded to 8 digits


@dataclass(frozen=True)
class JobReport:
    """A ``jobReport.json``: where it was found (relative to the output directory), its text
    as written (what ``metaData`` carries) and its content."""

    name: str
    text: str
    content: dict[str, Any]


@dataclass(frozen=True)
class Heartbeat:
    """heartbeat.json: the pilot's would-be final updateJob fields (legacy camelCase)."""

    fields: dict[str, Any]
    state: str | None
    outputs: tuple[OutputFile, ...]


def read_heartbeat(directory: Path, *, max_bytes: int = 16 << 20) -> Heartbeat | None:
    """``directory/heartbeat.json``; None if absent, BadPilotFile if unusable (including a bad
    ``xml`` output report)."""
    fields = read_json_object(directory, HEARTBEAT, max_bytes)
    if fields is None:
        return None
    state = fields.get("state")
    return Heartbeat(
        fields=fields,
        state=state if isinstance(state, str) else None,
        outputs=output_report(fields.get("xml"), HEARTBEAT),
    )


def job_dir(panda_id: int) -> str:
    """pilot3's job directory below its launch directory (``pilot/control/job.py``)."""
    return f"PanDA_Pilot-{panda_id}"


def job_report_names(panda_id: int | None) -> tuple[str, ...]:
    """Where a ``jobReport.json`` is looked for, best first (see the module docstring)."""
    return ((f"{job_dir(panda_id)}/{JOB_REPORT}",) if panda_id is not None else ()) + (JOB_REPORT,)


def find_job_report(
    directory: Path, *, panda_id: int | None, max_bytes: int = 64 << 20
) -> JobReport | None:
    """The first ``jobReport.json`` of :func:`job_report_names` present; None if neither is,
    BadPilotFile (naming the path) if the one found is unusable. Its content must be a JSON
    object and is not interpreted here."""
    for name in job_report_names(panda_id):
        text = read_text(directory, name, max_bytes)
        if text is not None:
            return JobReport(name, text, loads_object(text, name, "content"))
    return None


def read_job_report(
    directory: Path, *, panda_id: int | None = None, max_bytes: int = 64 << 20
) -> dict[str, Any] | None:
    """The content of :func:`find_job_report` (the ATLAS transform's report) as a dict."""
    found = find_job_report(directory, panda_id=panda_id, max_bytes=max_bytes)
    return found.content if found is not None else None


def read_output_list(
    directory: Path, *, max_bytes: int = 16 << 20
) -> tuple[ListedOutput, ...] | None:
    """``directory/output.list`` as pilot3 writes it; None if absent, BadPilotFile (naming the
    line) if a line is not ``<lfn> <url>[:checksumtype=<type>:checksumvalue=<hex>]``, an lfn
    is unsafe or listed twice, a URL has no scheme or a checksum is not hex. Blank lines are
    skipped. ARC options other than the checksum stay part of the URL."""
    text = read_text(directory, OUTPUT_LIST, max_bytes)
    if text is None:
        return None
    listed: list[ListedOutput] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{OUTPUT_LIST} line {number}"
        words = line.split()
        if len(words) != 2:
            raise BadPilotFile(where, f"{short_repr(line)} is not '<lfn> <url>'")
        lfn = check_lfn(words[0], where)
        if lfn in seen:
            raise BadPilotFile(where, f"{lfn} listed twice")
        seen.add(lfn)
        url, options = words[1], dict[str, str]()
        while match := _CHECKSUM_OPTION.search(url):
            options.setdefault(match.group(1), match.group(2))
            url = url[: match.start()]
        kind, value = _listed_checksum(options, where)
        listed.append(ListedOutput(lfn, check_surl(url, where, lfn), kind, value))
    return tuple(listed)


def _listed_checksum(options: dict[str, str], where: str) -> tuple[str | None, str | None]:
    kind, value = options.get("checksumtype"), options.get("checksumvalue")
    if kind is None and value is None:
        return None, None
    if not kind or not value or not _HEX.fullmatch(value):
        raise BadPilotFile(where, f"checksum {kind!r}:{value!r} is not a type and a hex value")
    kind = kind.lower()
    if kind in ("adler32", "ad"):
        if len(value) > 8:
            raise BadPilotFile(where, f"adler32 {value!r} has more than 8 hex digits")
        return "adler32", value.lower().zfill(8)
    return kind, value.lower()
