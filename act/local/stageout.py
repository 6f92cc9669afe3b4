"""``python -m act.local.stageout JOBDIR``: upload what a local CE job's output list names.

A job whose description has an ``output_list`` (:mod:`act.local.description`) gets its outputs
uploaded by the CE once the payload has ended, as an ARC CE's data staging uploads the files a
job's dynamic output list (xRSL ``@output.list``) names. The pilot writes that list in native
mode (pilot3's ``mv`` copytool), one line per file::

    NAME URL[:checksumtype=adler32:checksumvalue=HEX]

``NAME`` is a file of the job's working directory, ``URL`` a ``root://`` (``roots://``,
``xroot://``) or ``file://`` URL; a line with a name and no URL names a file kept for download
(nothing to upload), blank lines are ignored. Each file is copied with the XRootD client's copy
engine (PyPI ``xrootd``, the client act's storage checks use: ``xrdcp`` in a library), which
creates the parent directories, replaces a file already there and compares the checksum the
storage computes with the one the list gives (end to end; the copy is removed when they differ);
the file is then looked up on storage (size and adler32) as the validator will. Only the
standard library and the XRootD client are used (act.local sits below act.atlas, whose storage
checks tune XrdCl the same way).

What A-REX 6.17 does, and this module therefore does too (seen on the test CE): a list that
cannot be read fails the job; a name that is not a file of the job's directory fails it; a file
whose copy fails fails it, naming the file, the URL and the cause; the outputs of a payload that
failed are uploaded too. Where A-REX retries a failed transfer for a long time (a checksum
mismatch included), this module tries ``attempts`` times, and fails at once on a checksum that
does not match the file or a malformed line. One difference: A-REX fails a job that wrote no list
at all; the local CE's runner then uploads nothing and goes on (:mod:`act.local.runner`: act's
stand-in and demo pilots write none, and outputs missing on storage fail a job in the validator).

The result goes to ``stageout.json`` in the job directory (:data:`act.local.jobfiles.STAGEOUT`,
written atomically, at the end), one entry per line of the list; the runner
(:mod:`act.local.runner`) turns it into the job's end. This process imports the XRootD client:
the runner starts it with the full interpreter, not ``-S``.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from act.common.safe_paths import UnsafePath, open_file, safe_relative
from act.local import jobfiles as jf
from act.local.staging import refused

#: Longest output list read (a pilot writes one short line per output file).
MAX_LIST_BYTES = 1 << 20
#: URL schemes uploaded (through the XRootD client), and the ARC URL options understood.
SCHEMES = frozenset({"root", "roots", "xroot", "xroots", "file"})
_OPTION = re.compile(r":([A-Za-z]+)=([^:/]*)$")
CHECKSUM_ERROR = 305  # XrdCl errCheckSumError: the checksums at both ends differ
RETRY_PAUSE = 2.0  # seconds between two attempts at one file
CHUNK = 1 << 20  # bytes read at a time for adler32
_HEX = re.compile(r"[0-9A-Fa-f]{1,8}")


class BadLine(ValueError):
    """A line of the output list that cannot be uploaded as written."""


@dataclass(frozen=True)
class Upload:
    """One line of the output list."""

    line: int
    name: str
    url: str  # without the ARC options
    adler32: str | None  # from :checksumvalue=, normalised


@dataclass
class Outcome:
    """What became of one line."""

    line: int
    name: str
    url: str
    ok: bool = False
    error: str = ""
    size: int | None = None
    adler32: str | None = None
    attempts: int = 0
    seconds: float = 0.0


def parse_line(number: int, text: str) -> Upload | None:
    """One line of the list; None for a blank line or a file kept for download (no URL)."""
    fields = text.split()
    if not fields:
        return None
    if len(fields) > 2:
        raise BadLine(f"line {number}: expected 'NAME URL', got {len(fields)} fields")
    name = fields[0]
    try:
        safe_relative(name)
    except UnsafePath as error:
        raise BadLine(
            f"line {number}: {name!r} is not a relative path inside the job directory"
            f" ({error.reason})"
        ) from None
    if len(fields) == 1:
        return None
    url, options = _split_options(number, fields[1])
    scheme = url.partition("://")[0].lower()
    if scheme not in SCHEMES:
        raise BadLine(f"line {number}: {url!r}: cannot upload to a {scheme or 'scheme-less'} URL")
    problem = _url_problem(scheme, url)
    if problem:
        raise BadLine(f"line {number}: {url!r}: {problem}")
    kind = options.pop("checksumtype", "adler32").lower()
    value = options.pop("checksumvalue", None)
    if options:
        raise BadLine(f"line {number}: unsupported URL option(s) {', '.join(sorted(options))}")
    if kind != "adler32":
        raise BadLine(f"line {number}: checksum type {kind!r}: only adler32 is supported")
    if value is not None and not _HEX.fullmatch(value):
        raise BadLine(f"line {number}: checksum value {value!r} is not an adler32 (1-8 hex digits)")
    return Upload(number, name, url, value.lower().zfill(8) if value is not None else None)


def _url_problem(scheme: str, url: str) -> str:
    """Why ``url`` cannot be uploaded to ("" when it can): root:// needs a host and a path,
    file:// an absolute path on this host."""
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as error:
        return f"bad port: {error}"
    if scheme == "file":
        if parts.hostname not in (None, "", "localhost") or not parts.path.startswith("/"):
            return "a file URL names a host or has no absolute path"
        return ""
    if not parts.hostname:
        return "no host"
    if parts.username is not None or parts.password is not None:
        return "credentials in the URL"
    if parts.path.strip("/") == "":
        return "no path"
    return ""


def _split_options(number: int, url: str) -> tuple[str, dict[str, str]]:
    """ARC's metadata options (``:name=value`` after the path) taken off ``url``."""
    options: dict[str, str] = {}
    while match := _OPTION.search(url):
        key = match.group(1).lower()
        if key in options:
            raise BadLine(f"line {number}: option {key} given twice")
        options[key] = match.group(2)
        url = url[: match.start()]
    return url, options


def source_file(work: Path, name: str) -> Path:
    """The regular file ``name`` of the job's working directory, reached without following a
    symbolic link (:mod:`act.common.safe_paths`): a link the payload planted is refused,
    wherever it points, naming the job (its directory) and the link."""
    try:
        fd = open_file(work, name)
    except UnsafePath as error:
        raise BadLine(refused(f"job {work.parent.name}", error)) from None
    except OSError as error:
        raise BadLine(f"{name!r}: {error.strerror or error}") from None
    os.close(fd)
    return work / safe_relative(name)


class Uploader:
    """Copies files with the XRootD client and checks them on storage afterwards."""

    def __init__(
        self,
        *,
        timeout: float,
        attempts: int,
        credential: str | None = None,
        ca: str | None = None,
    ) -> None:
        # XrdCl is tuned process-wide as act's storage checks tune it
        # (act/atlas/storage/xrootd.py): one connection attempt, the timeout for connections and
        # requests, a 1 s timeout tick, no stream error window; a credential and a CA directory
        # through the environment XrdCl reads when it first connects.
        from XRootD import client

        if credential:
            os.environ["X509_USER_PROXY"] = credential
        if ca and os.path.isdir(ca):
            os.environ["X509_CERT_DIR"] = ca
        self.timeout = timeout
        self.seconds = min(65535, max(1, math.ceil(timeout)))
        self.attempts = max(1, attempts)
        for name, value in (
            ("ConnectionRetry", 1),
            ("ConnectionWindow", self.seconds),
            ("RequestTimeout", self.seconds),
            ("TimeoutResolution", 1),
            ("StreamErrorWindow", 0),
        ):
            client.EnvPutInt(name, value)

    def run(self, work: Path, item: Upload) -> Outcome:
        outcome = Outcome(item.line, item.name, item.url)
        started = time.monotonic()
        try:
            source = source_file(work, item.name)
            local = adler32_of_file(source)
            if item.adler32 is not None and local != item.adler32:
                raise BadLine(
                    f"the file's adler32 is {local}, the output list gives {item.adler32}"
                )
            for attempt in range(1, self.attempts + 1):
                outcome.attempts = attempt
                error, permanent = self._copy(source, item.url, local)
                if not error:
                    break
                if permanent or attempt == self.attempts:
                    raise BadLine(error)
                time.sleep(RETRY_PAUSE)
            self._verify(item.url, source.stat().st_size, local, outcome)
        except BadLine as error:
            outcome.error = str(error)
        outcome.ok = not outcome.error
        outcome.seconds = round(time.monotonic() - started, 3)
        return outcome

    def _copy(self, source: Path, url: str, adler32: str) -> tuple[str, bool]:
        """One attempt; the error ("" on success) and whether trying again is pointless."""
        from XRootD import client

        target = _xrootd_target(url)
        process = client.CopyProcess()
        seconds = self.seconds
        process.add_job(
            str(source),
            target,
            force=True,
            mkdir=True,
            checksummode="end2end",
            checksumtype="adler32",
            checksumpreset=adler32,
            rmBadCksum=True,
            inittimeout=seconds,
            cptimeout=seconds,
        )
        status = process.prepare()
        if not status.ok:
            return one_line(f"copy not started: {status.message}"), True
        status, results = process.run()
        job_status = results[0]["status"] if results else status
        if job_status.ok:
            return "", False
        if job_status.code == CHECKSUM_ERROR:
            return f"storage computed another adler32 than {adler32}: copy removed", True
        return one_line(f"copy failed: {job_status.message}"), False

    def _verify(self, url: str, size: int, adler32: str, outcome: Outcome) -> None:
        """The copy as storage sees it: same size and adler32 as the file uploaded."""
        found_sum: str | None
        try:
            if url.lower().startswith("file:"):
                path = unquote(urlsplit(url).path)
                found_size, found_sum = os.stat(path).st_size, adler32_of_file(path)
            else:
                found_size, found_sum = self._stat_root(url)
        except (OSError, BadLine) as error:
            message = one_line(f"uploaded, but cannot be looked up on storage: {error}")
            raise BadLine(message) from None
        outcome.size, outcome.adler32 = found_size, found_sum
        if found_size != size:
            raise BadLine(f"storage has {found_size} bytes, the file has {size}")
        if found_sum is not None and found_sum != adler32:
            raise BadLine(f"storage has adler32 {found_sum}, the file has {adler32}")

    def _stat_root(self, url: str) -> tuple[int, str | None]:
        """Size and adler32 (None if the server gives none) of a root:// file."""
        from XRootD import client
        from XRootD.client.flags import QueryCode

        parts = urlsplit(_xrootd_target(url))
        filesystem = client.FileSystem(f"{parts.scheme}://{parts.netloc}")
        path = "/" + parts.path.lstrip("/")
        status, info = filesystem.stat(path, timeout=self.seconds)
        if not status.ok:
            raise BadLine(f"stat: {status.message}")
        status, raw = filesystem.query(QueryCode.CHECKSUM, path, timeout=self.seconds)
        if not status.ok:
            return int(info.size), None
        algorithm, _, value = (raw or b"").decode("ascii", "replace").rstrip("\x00").partition(" ")
        value = value.strip()
        if algorithm.lower() != "adler32" or not _HEX.fullmatch(value):
            return int(info.size), None
        return int(info.size), value.lower().zfill(8)

    def close(self) -> None:
        pass


def adler32_of_file(path: str | os.PathLike[str]) -> str:
    """adler32 of a file, 8 lowercase hex digits (as act's storage checks spell it)."""
    value = 1
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            value = zlib.adler32(chunk, value)
    return f"{value & 0xFFFFFFFF:08x}"


def one_line(text: object) -> str:
    """``text`` on one line, at most 300 characters (XrdCl messages may span several)."""
    line = " ".join(str(text).split())
    return line if len(line) <= 300 else line[:297] + "..."


def _xrootd_target(url: str) -> str:
    """The XRootD client's spelling of ``url`` (it knows root:// and file:// only)."""
    scheme, _, rest = url.partition("://")
    return {"xroot": "root", "xroots": "roots"}.get(scheme.lower(), scheme.lower()) + "://" + rest


def stage_out(work: Path, list_name: str, uploader: Uploader) -> dict[str, Any]:
    """Upload every file the list names; the result as written to ``stageout.json``."""
    errors: list[str] = []
    outcomes: list[Outcome] = []
    try:
        text = _read_list(work, list_name)
    except BadLine as error:
        return {"ok": False, "errors": [str(error)], "files": []}
    for number, line in enumerate(text.splitlines(), 1):
        try:
            item = parse_line(number, line)
        except BadLine as error:
            errors.append(f"{list_name}: {error}")
            continue
        if item is not None:
            outcomes.append(uploader.run(work, item))
    for outcome in outcomes:
        if not outcome.ok:
            errors.append(f"{outcome.name} -> {outcome.url}: {outcome.error}")
    return {"ok": not errors, "errors": errors, "files": [asdict(o) for o in outcomes]}


def _read_list(work: Path, name: str) -> str:
    try:
        path = source_file(work, name)
        if path.stat().st_size > MAX_LIST_BYTES:
            raise BadLine(f"larger than {MAX_LIST_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except (BadLine, UnicodeDecodeError) as error:
        raise BadLine(f"cannot read the output list {name}: {error}") from None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m act.local.stageout JOBDIR", file=sys.stderr)
        return 2
    jobdir = Path(args[0])
    job = jf.read_json(jobdir / jf.JOB)
    if job is None:
        print(f"{jobdir / jf.JOB}: missing or unreadable", file=sys.stderr)
        return 1
    name = job.get("description", {}).get("output_list")
    settings = job.get("upload") or {}
    if not isinstance(name, str):
        print("the job has no output_list", file=sys.stderr)
        return 1
    uploader = Uploader(
        timeout=float(settings.get("timeout", 120.0)),
        attempts=int(settings.get("attempts", 3)),
        credential=settings.get("credential"),
        ca=settings.get("ca"),
    )
    try:
        result = stage_out(jobdir / jf.WORK, name, uploader)
    finally:
        uploader.close()
    for line in result["errors"]:
        print(f"upload failed: {line}", file=sys.stderr)
    jf.write_json(jobdir / jf.STAGEOUT, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
