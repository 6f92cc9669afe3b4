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

Output report entries (``xml`` of heartbeat.json, ``metadata.xml``) are checked field by field:

* ``lfn``: 1-255 characters from ``A-Z a-z 0-9 . _ - +``, not starting with ``.``, ``-`` or
  ``+`` (Rucio's ATLAS name rules; such a name can never be a path or an option);
* ``surl``: a string ``scheme://...`` without whitespace or control characters;
* ``fsize``: a non-negative integer (not a boolean, not a float) or a string of ASCII digits;
  absent or null is ``None``;
* ``adler32``: 1-8 hex digits, optionally prefixed ``ad:`` or ``adler32:`` (any case: both
  spellings are in use in Rucio and the pilot), normalised to 8 lowercase zero-padded digits;
  absent, null or ``""`` is ``None`` (aCT accepted a missing checksum);
* ``guid``: a UUID ``8-4-4-4-12`` hex string kept as written (case included); absent, null or
  ``""`` is ``None``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lxml import etree

from act.common.safe_paths import UnsafePath, open_parent, relative_parts

HEARTBEAT = "heartbeat.json"
JOB_REPORT = "jobReport.json"
METADATA_XML = "metadata.xml"
OUTPUT_LIST = "output.list"

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_LFN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._+-]{0,254}")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\x00-\x1f\x7f]+")
_DIGITS = re.compile(r"[0-9]{1,20}")
_ADLER32 = re.compile(r"(?:ad:|adler32:)?([0-9a-f]{1,8})", re.IGNORECASE)
_CHECKSUM_OPTION = re.compile(r":(checksumtype|checksumvalue)=([^:/]*)$")
_HEX = re.compile(r"[0-9A-Fa-f]{1,64}")
_GUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_ERROR_LINE = re.compile(
    r"ERROR|CRITICAL|FATAL|FAILED|FAILURE|Traceback|Exception|[Ee]rror:|\bfailed\b"
    r"|Segmentation fault|\bKilled\b|\bAborted\b|core dumped"
)
_EXCERPT_LINE_CHARS = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class BadPilotFile(ValueError):
    """A pilot file that cannot be used; str() is '<file name>: <reason>' (one line)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = _one_line(reason)
        super().__init__(f"{_one_line(name, 200)}: {self.reason}")


@dataclass(frozen=True)
class OutputFile:
    """One output file as the pilot reported it (checked; see the module docstring)."""

    lfn: str
    surl: str
    fsize: int | None
    adler32: str | None
    guid: str | None


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


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _open(directory: Path, name: str) -> int | None:
    """A read descriptor of the regular file ``directory/name`` reached without symbolic links
    (``directory`` itself included); None if it or ``directory`` does not exist."""
    try:
        parts = relative_parts(name)
    except UnsafePath as exc:  # names can derive from a job spec (the log file's)
        raise BadPilotFile(name, f"not a plain relative name ({exc.reason})") from None
    try:
        parent = open_parent(directory, parts)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadPilotFile(name, f"its directory is unusable: {_os_reason(exc)}") from None
    try:
        fd = os.open(parts[-1], _READ_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BadPilotFile(name, _os_reason(exc)) from None
    finally:
        os.close(parent)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BadPilotFile(name, "not a regular file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _os_reason(exc: OSError) -> str:
    if exc.errno in (errno.ELOOP, errno.EMLINK):
        return "a symbolic link (refused)"
    if exc.errno == errno.ENOTDIR:
        return "not a directory, or a symbolic link"
    return f"cannot be opened: {exc.strerror or exc}"


def _read_bytes(directory: Path, name: str, max_bytes: int) -> bytes | None:
    fd = _open(directory, name)
    if fd is None:
        return None
    try:
        if os.fstat(fd).st_size > max_bytes:
            raise BadPilotFile(name, f"larger than {max_bytes} bytes")
        chunks: list[bytes] = []
        total = 0
        while True:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:  # grew while being read
                raise BadPilotFile(name, f"larger than {max_bytes} bytes")
    except OSError as exc:
        raise BadPilotFile(name, f"cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _loads_object(text: str, name: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise BadPilotFile(name, f"{what}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN, over-long integers
        raise BadPilotFile(name, f"{what}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadPilotFile(name, f"{what}: a JSON {type(value).__name__}, not an object")
    return value


def _read_json_object(directory: Path, name: str, max_bytes: int) -> dict[str, Any] | None:
    text = _read_text(directory, name, max_bytes)
    if text is None:
        return None
    return _loads_object(text, name, "content")


def _read_text(directory: Path, name: str, max_bytes: int) -> str | None:
    """The file as UTF-8 text (a byte-order mark allowed); None if absent."""
    data = _read_bytes(directory, name, max_bytes)
    if data is None:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadPilotFile(name, f"not UTF-8 (byte {exc.start})") from None


def _fsize(value: Any, name: str, lfn: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise BadPilotFile(name, f"{lfn}: fsize {_short(value)} is not a non-negative integer")


def _adler32(value: Any, name: str, lfn: str) -> str | None:
    if value is None or value == "":
        return None
    match = _ADLER32.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise BadPilotFile(name, f"{lfn}: adler32 {_short(value)} is not 1-8 hex digits")
    return match.group(1).lower().zfill(8)


def _guid(value: Any, name: str, lfn: str) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and _GUID.fullmatch(value):
        return value
    raise BadPilotFile(name, f"{lfn}: guid {_short(value)} is not a UUID")


def _lfn(value: Any, name: str) -> str:
    if isinstance(value, str) and _LFN.fullmatch(value):
        return value
    raise BadPilotFile(name, f"unsafe or empty lfn {_short(value)}")


def _surl(value: Any, name: str, lfn: str) -> str:
    if isinstance(value, str) and _SCHEME.fullmatch(value) and len(value) <= 4096:
        return value
    raise BadPilotFile(name, f"{lfn}: surl {_short(value)} is not a URL with a scheme")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _outputs(report: Any, name: str) -> tuple[OutputFile, ...]:
    """The output report (heartbeat ``xml``): ``{lfn: {surl, fsize, adler32, guid, ...}}`` as a
    JSON string or an object; absent, null, ``""`` or ``{}`` mean no outputs."""
    if report is None or report == "":
        return ()
    if isinstance(report, str):
        report = _loads_object(report, name, "xml")
    if not isinstance(report, dict):
        raise BadPilotFile(name, f"xml: a {type(report).__name__}, not an object or JSON string")
    outputs: list[OutputFile] = []
    for key, entry in report.items():
        lfn = _lfn(key, name)
        if not isinstance(entry, dict):
            raise BadPilotFile(name, f"{lfn}: a {type(entry).__name__}, not an object")
        outputs.append(
            OutputFile(
                lfn=lfn,
                surl=_surl(entry.get("surl"), name, lfn),
                fsize=_fsize(entry.get("fsize"), name, lfn),
                adler32=_adler32(entry.get("adler32"), name, lfn),
                guid=_guid(entry.get("guid"), name, lfn),
            )
        )
    return tuple(outputs)


def read_heartbeat(directory: Path, *, max_bytes: int = 16 << 20) -> Heartbeat | None:
    """``directory/heartbeat.json``; None if absent, BadPilotFile if unusable (including a bad
    ``xml`` output report)."""
    fields = _read_json_object(directory, HEARTBEAT, max_bytes)
    if fields is None:
        return None
    state = fields.get("state")
    return Heartbeat(
        fields=fields,
        state=state if isinstance(state, str) else None,
        outputs=_outputs(fields.get("xml"), HEARTBEAT),
    )


def job_dir(pandaid: int) -> str:
    """pilot3's job directory below its launch directory (``pilot/control/job.py``)."""
    return f"PanDA_Pilot-{pandaid}"


def job_report_names(pandaid: int | None) -> tuple[str, ...]:
    """Where a ``jobReport.json`` is looked for, best first (see the module docstring)."""
    return ((f"{job_dir(pandaid)}/{JOB_REPORT}",) if pandaid is not None else ()) + (JOB_REPORT,)


def find_job_report(
    directory: Path, *, pandaid: int | None, max_bytes: int = 64 << 20
) -> JobReport | None:
    """The first ``jobReport.json`` of :func:`job_report_names` present; None if neither is,
    BadPilotFile (naming the path) if the one found is unusable. Its content must be a JSON
    object and is not interpreted here."""
    for name in job_report_names(pandaid):
        text = _read_text(directory, name, max_bytes)
        if text is not None:
            return JobReport(name, text, _loads_object(text, name, "content"))
    return None


def read_job_report(
    directory: Path, *, pandaid: int | None = None, max_bytes: int = 64 << 20
) -> dict[str, Any] | None:
    """The content of :func:`find_job_report` (the ATLAS transform's report) as a dict."""
    found = find_job_report(directory, pandaid=pandaid, max_bytes=max_bytes)
    return found.content if found is not None else None


def read_output_list(
    directory: Path, *, max_bytes: int = 16 << 20
) -> tuple[ListedOutput, ...] | None:
    """``directory/output.list`` as pilot3 writes it; None if absent, BadPilotFile (naming the
    line) if a line is not ``<lfn> <url>[:checksumtype=<type>:checksumvalue=<hex>]``, an lfn
    is unsafe or listed twice, a URL has no scheme or a checksum is not hex. Blank lines are
    skipped. ARC options other than the checksum stay part of the URL."""
    text = _read_text(directory, OUTPUT_LIST, max_bytes)
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
            raise BadPilotFile(where, f"{_short(line)} is not '<lfn> <url>'")
        lfn = _lfn(words[0], where)
        if lfn in seen:
            raise BadPilotFile(where, f"{lfn} listed twice")
        seen.add(lfn)
        url, options = words[1], dict[str, str]()
        while match := _CHECKSUM_OPTION.search(url):
            options.setdefault(match.group(1), match.group(2))
            url = url[: match.start()]
        kind, value = _listed_checksum(options, where)
        listed.append(ListedOutput(lfn, _surl(url, where, lfn), kind, value))
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


def _xml_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
    )


def read_metadata_xml(directory: Path, *, max_bytes: int = 16 << 20) -> list[OutputFile] | None:
    """``directory/metadata.xml``, a POOL file catalog, as output files; None if absent.

    ``<POOLFILECATALOG><File ID="guid"><physical><pfn name="..."/></physical><logical><lfn
    name="..."/></logical><metadata att_name="fsize" att_value="..."/>...</File>``. ``surl`` is the
    ``pfn`` name when it is a URL, else ``''`` (older transforms write a local file name there).

    Refused: anything not UTF-8 (so no UTF-16 trick hides a declaration), any entity declaration
    (``<!ENTITY``: billion laughs, external entities), malformed XML, a root other than
    POOLFILECATALOG, a File without one valid lfn, the same lfn twice. The parser never reads a DTD
    or the network and never expands entities, as a second line of defence.
    """
    name = METADATA_XML
    text = _read_text(directory, name, max_bytes)
    if text is None:
        return None
    if "\x00" in text:
        raise BadPilotFile(name, "contains NUL characters")
    if "<!ENTITY" in text:
        raise BadPilotFile(name, "entity declarations are refused")
    try:
        root = etree.fromstring(text.encode("utf-8"), _xml_parser())
    except etree.XMLSyntaxError as exc:
        raise BadPilotFile(name, f"malformed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    dtd = docinfo.internalDTD
    if dtd is not None and any(True for _ in dtd.iterentities()):  # type: ignore[union-attr]
        raise BadPilotFile(name, "entity declarations are refused")
    if root.tag != "POOLFILECATALOG":
        raise BadPilotFile(name, f"root element {_short(root.tag)} is not POOLFILECATALOG")
    files: list[OutputFile] = []
    seen: set[str] = set()
    for element in root.iterchildren("File"):
        files.append(_catalog_file(element, name))
        if files[-1].lfn in seen:
            raise BadPilotFile(name, f"lfn {files[-1].lfn} listed twice")
        seen.add(files[-1].lfn)
    return files


def _catalog_file(element: Any, name: str) -> OutputFile:
    lfns = element.findall("logical/lfn")
    if len(lfns) != 1:
        raise BadPilotFile(name, f"a File with {len(lfns)} logical names instead of 1")
    lfn = _lfn(lfns[0].get("name"), name)
    meta: dict[str, str | None] = {}
    for item in element.iterchildren("metadata"):
        key = item.get("att_name")
        if key in meta:
            raise BadPilotFile(name, f"{lfn}: metadata {_short(key)} twice")
        meta[key] = item.get("att_value")
    pfns = element.findall("physical/pfn")
    pfn = pfns[0].get("name") if len(pfns) == 1 else None
    surl = pfn if isinstance(pfn, str) and _SCHEME.fullmatch(pfn) else ""
    return OutputFile(
        lfn=lfn,
        surl=surl,
        fsize=_fsize(meta.get("fsize"), name, lfn),
        adler32=_adler32(meta.get("adler32"), name, lfn),
        guid=_guid(element.get("ID"), name, lfn),
    )


def _tail_bytes(fd: int, max_bytes: int) -> tuple[bytes, bool]:
    """The last ``max_bytes`` of the file and whether that is all of it."""
    size = os.fstat(fd).st_size
    start = max(0, size - max_bytes)
    os.lseek(fd, start, os.SEEK_SET)
    chunks: list[bytes] = []
    total = 0
    while total < max_bytes:
        chunk = os.read(fd, min(1 << 20, max_bytes - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks), start == 0


def _text_lines(data: bytes, whole: bool) -> list[str]:
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if not whole and len(lines) > 1:
        lines = lines[1:]  # the first line was cut by the start of the window
    if lines and lines[-1] == "":
        lines.pop()
    return [_CONTROL.sub("\ufffd", line) for line in lines]


def _read_lines(directory: Path, name: str, max_bytes: int) -> list[str] | None:
    fd = _open(directory, name)
    if fd is None:
        return None
    try:
        data, whole = _tail_bytes(fd, max_bytes)
    except OSError as exc:
        raise BadPilotFile(name, f"cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return _text_lines(data, whole)


def read_text_tail(path: Path, *, max_lines: int, max_bytes: int = 1 << 20) -> str | None:
    """The last ``max_lines`` lines of a text file, read from at most its last ``max_bytes``;
    None if absent, BadPilotFile if not a regular file (a symbolic link included).

    Only ``path`` and its own directory are guarded against symbolic links: for a path below an
    untrusted tree (``gmlog/errors``) use :func:`log_excerpt`, which guards every component.
    Invalid UTF-8 becomes U+FFFD and control characters other than tab too (a log is text to show,
    not data to refuse); a line cut by the start of the window is dropped; lines are joined with
    ``\\n``, without a final one.
    """
    lines = _read_lines(path.parent, path.name, max_bytes)
    if lines is None:
        return None
    return "\n".join(lines[-max_lines:] if max_lines > 0 else [])


def log_excerpt(directory: Path, names: Sequence[str], *, max_lines: int) -> str:
    """A short excerpt for PanDA's pilotLog: error-looking lines (ERROR, FAILED, Traceback, ...)
    first, then the last lines, from the first of `names` that is a regular file; '' if none.

    ``names`` are relative to ``directory`` (``gmlog/errors`` included) and are reached without
    following symbolic links; unusable ones are skipped. Of ``max_lines``, up to half go to error
    lines found before the final lines (the first ones, in order), the rest to the final lines;
    each line is cut to 500 characters; a heading line names each part. Reads at most the last
    MiB of the file.
    """
    for name in names:
        try:
            lines = _read_lines(directory, name, 1 << 20)
        except BadPilotFile:
            continue
        if lines is None:
            continue
        if max_lines <= 0 or not lines:
            return ""
        lines = [
            line if len(line) <= _EXCERPT_LINE_CHARS else line[: _EXCERPT_LINE_CHARS - 3] + "..."
            for line in lines
        ]
        first_tail = max(len(lines) - (max_lines - max_lines // 2), 0)
        found = [i for i in range(first_tail) if _ERROR_LINE.search(lines[i])]
        found = found[: max_lines // 2]
        tail_start = max(len(lines) - (max_lines - len(found)), 0)
        errors = [lines[i] for i in found if i < tail_start]
        tail = lines[tail_start:]
        out: list[str] = []
        if errors:
            out.append(f"== {name}: lines that look like errors ==")
            out.extend(errors)
        out.append(f"== {name}: last {len(tail)} lines ==")
        out.extend(tail)
        return "\n".join(out)
    return ""
