"""Opening and decoding a file a pilot left in a CE job's output directory, none of it trusted
(the rules of :mod:`act.atlas.pilot_files`): reached without following a symbolic link at any
component (:mod:`act.common.safe_paths`), a regular file, at most ``max_bytes`` long, UTF-8 (a
byte-order mark tolerated), JSON an object with no duplicate keys and no ``NaN``; a file that
breaks a rule raises :class:`BadPilotFile` naming it and the cause on one line."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from act.common.safe_paths import UnsafePath, open_parent, relative_parts

_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


class BadPilotFile(ValueError):
    """A pilot file that cannot be used; str() is '<file name>: <reason>' (one line)."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = _one_line(reason)
        super().__init__(f"{_one_line(name, 200)}: {self.reason}")


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short_repr(value: Any) -> str:
    """``value`` as repr() at most 80 characters long, for an error message."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def open_pilot_file(directory: Path, name: str) -> int | None:
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
    fd = open_pilot_file(directory, name)
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


def loads_object(text: str, name: str, what: str) -> dict[str, Any]:
    """``text`` as a JSON object by the rules (no duplicate keys, no NaN); otherwise
    BadPilotFile naming ``name`` and the part read (``what``)."""
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant)
    except RecursionError:
        raise BadPilotFile(name, f"{what}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN, over-long integers
        raise BadPilotFile(name, f"{what}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadPilotFile(name, f"{what}: a JSON {type(value).__name__}, not an object")
    return value


def read_json_object(directory: Path, name: str, max_bytes: int) -> dict[str, Any] | None:
    """The file as a JSON object (:func:`loads_object`); None if absent."""
    text = read_text(directory, name, max_bytes)
    if text is None:
        return None
    return loads_object(text, name, "content")


def read_text(directory: Path, name: str, max_bytes: int) -> str | None:
    """The file as UTF-8 text (a byte-order mark allowed); None if absent."""
    data = _read_bytes(directory, name, max_bytes)
    if data is None:
        return None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadPilotFile(name, f"not UTF-8 (byte {exc.start})") from None
