"""Logs a pilot or a CE left in a CE job's output directory, for PanDA's pilotLog and the
validator's notes: their last lines (:func:`read_text_tail`) and an excerpt that puts the lines
that look like errors first (:func:`log_excerpt`). Read by the rules of
:mod:`act.atlas.pilot_reading` (no symbolic link followed, regular files only); text to show, not
data to refuse: invalid UTF-8 and control characters are replaced."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from act.atlas.pilot_reading import BadPilotFile, open_pilot_file

_ERROR_LINE = re.compile(
    r"ERROR|CRITICAL|FATAL|FAILED|FAILURE|Traceback|Exception|[Ee]rror:|\bfailed\b"
    r"|Segmentation fault|\bKilled\b|\bAborted\b|core dumped"
)
_EXCERPT_LINE_CHARS = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


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
    fd = open_pilot_file(directory, name)
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
