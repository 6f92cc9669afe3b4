"""Job logs in the web area, for the PanDA monitor's "pilot stdout" links.

Layout (aCT's): ``<web root>/<YYYY-MM-DD>/<queue>/<panda_id>.out`` is the pilot's stdout and
``<panda_id>.log`` the CE's diagnostics (the ARC gmlog ``errors`` file, then act's own diagnosis).
The URL of the ``.out`` file is the queue's ``log_url_prefix`` + the same path: the fetcher stores
it in ``panda_jobs.log_url`` (:func:`act.atlas.fetcher.log_url`), the job gets it as ``GTAG`` and
the propagator sends it as ``pilotID``. The date is the one in that URL, so the file lands where
the URL points even when the job is published days later.

The web area is the one place act makes world-readable: files 0644, directories 0755, whatever
the process umask (act's daemons run with umask 027). What is copied comes from a CE and is not
trusted: a symlink is never followed (``O_NOFOLLOW`` and the file's own ``fstat``), only regular
files are read, and at most :data:`MAX_COPY_BYTES` of each (the tail, where a pilot's errors are).
Old day directories are removed by the ``weblogs`` daemon (:mod:`act.atlas.weblogs`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

from act.atlas.config import AtlasConfig
from act.common.safe_paths import UnsafePath, open_dir, open_file
from act.common.timeutil import as_utc

log = logging.getLogger(__name__)

#: Most bytes copied of one log; a larger one keeps its tail, after a line saying so.
MAX_COPY_BYTES = 16 * 1024 * 1024
FILE_MODE = 0o644
DIR_MODE = 0o755
#: The ARC CE's diagnostics of a job, relative to its output directory.
GMLOG_DIR = "gmlog"
GMLOG_ERRORS = "errors"

_QUEUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CHUNK = 1024 * 1024
_Writer = Callable[[BinaryIO], None]


@dataclass(frozen=True)
class Published:
    """What :func:`publish` wrote."""

    out: Path | None  # the pilot log copy, None if there was none
    log: Path | None  # the CE diagnostics copy, None if there was nothing


def web_root(settings: AtlasConfig) -> Path:
    """The web area: ``weblogs.dir``, or ``<root>/weblogs``."""
    if settings.weblogs.dir:
        return Path(settings.weblogs.dir)
    return Path(settings.root) / "weblogs"


def check_queue_name(queue: str) -> str:
    """``queue`` if it is usable as one directory name; ValueError otherwise."""
    if not _QUEUE.fullmatch(queue):
        raise ValueError(f"queue name {queue!r} is not usable as a directory name")
    return queue


def relative_stem(
    *, log_url: str | None, queue: str, panda_id: int, created_at: datetime
) -> PurePosixPath:
    """'<YYYY-MM-DD>/<queue>/<panda_id>': from log_url's last three path components when they are
    <date>/<queue>/<panda_id>.out for this queue and job (so the file lands where the URL points),
    else from created_at's UTC date. ValueError for a queue name unusable as a directory.

    Also ValueError for a PandaID that is not positive and a naive ``created_at`` (act's times
    are aware UTC). A usable queue name: letters, digits and ``._@+-``, not starting with ``.``,
    at most 200 characters.
    """
    check_queue_name(queue)
    if panda_id <= 0:
        raise ValueError(f"PandaID {panda_id} is not positive")
    date = _date_in_url(log_url, queue, panda_id) if log_url else None
    if date is None:
        date = f"{as_utc(created_at):%Y-%m-%d}"
    return PurePosixPath(date, queue, str(panda_id))


def _date_in_url(log_url: str, queue: str, panda_id: int) -> str | None:
    try:
        path = urlsplit(log_url).path
    except ValueError:
        return None
    parts = [unquote(part) for part in path.split("/")]
    if len(parts) < 3 or parts[-2] != queue or parts[-1] != f"{panda_id}.out":
        return None
    date = parts[-3]
    if not _DATE.fullmatch(date):
        return None
    try:
        datetime.strptime(date, "%Y-%m-%d")
    except ValueError:
        return None
    return date


def make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each new one 0755 whatever the umask.

    Existing directories are left as they are (the operator's own modes on the web root).
    """
    missing: list[Path] = []
    current = path
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # made by another process meanwhile: it chmods it
        os.chmod(directory, DIR_MODE)


def day_path(settings: AtlasConfig, stem: PurePosixPath) -> Path:
    """The directory of a job's web files: ``<web root>/<date>/<queue>``."""
    return web_root(settings) / stem.parent


def day_dir(settings: AtlasConfig, stem: PurePosixPath) -> Path:
    """:func:`day_path`, made if missing."""
    directory = day_path(settings, stem)
    make_dirs(directory)
    return directory


def publish(
    settings: AtlasConfig,
    *,
    panda_id: int,
    queue: str,
    log_url: str | None,
    created_at: datetime,
    output_dir: Path | None,
    stdout_names: Sequence[str],
    diagnostics: str | None,
) -> Published:
    """Copy the pilot's stdout (the first of stdout_names that is a regular file directly in
    output_dir — never through a symlink: O_NOFOLLOW + fstat; at most MAX_COPY_BYTES, the tail
    kept if larger) to <web_root>/<stem>.out, and the CE's diagnostics (output_dir/gmlog/errors
    when it is a regular file, then the `diagnostics` text) to <stem>.log. Each written
    atomically (temporary file in the same directory + rename), files 0o644, directories 0o755
    (made as needed, independent of umask). Idempotent: publishing again replaces. OSError only
    for the web area's own failures (caller logs and retries).

    A file with nothing to copy is not written (an earlier copy stays). A problem reading the
    CE's output (unreadable, a symlink, not a regular file) counts as "nothing to copy".
    ValueError (from :func:`relative_stem`) for an unusable queue name or a naive created_at.
    """
    stem = relative_stem(log_url=log_url, queue=queue, panda_id=panda_id, created_at=created_at)
    sources: list[int] = []
    try:
        stdout_fd = _open_stdout(output_dir, stdout_names, panda_id) if output_dir else None
        if stdout_fd is not None:
            sources.append(stdout_fd)
        errors_fd = _open_gmlog_errors(output_dir) if output_dir else None
        if errors_fd is not None:
            sources.append(errors_fd)
        if stdout_fd is None and errors_fd is None and not diagnostics:
            return Published(out=None, log=None)
        directory = day_dir(settings, stem)
        name = stem.name
        out = None
        if stdout_fd is not None:
            out = directory / f"{name}.out"
            _write_atomically(out, lambda handle: _copy_tail(stdout_fd, handle))
        diag = None
        if errors_fd is not None or diagnostics:

            def write_log(handle: BinaryIO) -> None:
                if errors_fd is not None:
                    _copy_tail(errors_fd, handle)
                if diagnostics:
                    handle.write(_bounded(diagnostics.encode("utf-8", "replace")))
                    if not diagnostics.endswith("\n"):
                        handle.write(b"\n")

            diag = directory / f"{name}.log"
            _write_atomically(diag, write_log)
        return Published(out=out, log=diag)
    finally:
        for fd in sources:
            os.close(fd)


# -- reading the CE's output (untrusted) ----------------------------------------------------------


def _open_regular(name: str, dir_fd: int) -> int | None:
    """A read descriptor of regular file ``name`` in ``dir_fd`` (never a symlink), else None."""
    if "/" in name:
        return None  # directly in the directory only
    try:
        return open_file(dir_fd, name)
    except (UnsafePath, OSError):
        return None  # a bad name, missing, a symlink, not a regular file, unreadable


def _open_dir(path: Path) -> int | None:
    """The job's output directory (act's own: its path may hold a symlink), else None."""
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None


def _open_stdout(output_dir: Path, names: Sequence[str], panda_id: int) -> int | None:
    dir_fd = _open_dir(output_dir)
    if dir_fd is None:
        log.debug("job %d: output directory %s cannot be opened", panda_id, output_dir)
        return None
    try:
        for name in names:
            fd = _open_regular(name, dir_fd)
            if fd is not None:
                return fd
        return None
    finally:
        os.close(dir_fd)


def _open_gmlog_errors(output_dir: Path) -> int | None:
    top = _open_dir(output_dir)
    if top is None:
        return None
    try:
        gmlog = open_dir(top, GMLOG_DIR)  # a symlinked gmlog is not followed
    except (UnsafePath, OSError):
        return None
    finally:
        os.close(top)
    try:
        return _open_regular(GMLOG_ERRORS, gmlog)
    finally:
        os.close(gmlog)


def _copy_tail(fd: int, handle: BinaryIO) -> None:
    """Copy the file at ``fd`` (its last MAX_COPY_BYTES if larger, after a line saying so).

    A read error is the CE file's problem, not the web area's: it is noted in the copy. A write
    error (the web area full, ...) is raised.
    """
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - MAX_COPY_BYTES)
        os.lseek(fd, start, os.SEEK_SET)
    except OSError as error:
        handle.write(f"[act: reading the CE's file failed: {error.strerror}]\n".encode())
        return
    if start:
        handle.write(f"[act: the first {start} of {size} bytes are left out]\n".encode())
    left = MAX_COPY_BYTES
    while left > 0:
        try:
            chunk = os.read(fd, min(_CHUNK, left))
        except OSError as error:
            handle.write(f"\n[act: reading the CE's file failed: {error.strerror}]\n".encode())
            return
        if not chunk:
            break
        handle.write(chunk)
        left -= len(chunk)


def _bounded(data: bytes) -> bytes:
    return data if len(data) <= MAX_COPY_BYTES else data[-MAX_COPY_BYTES:]


# -- writing the web area --------------------------------------------------------------------------


def _write_atomically(target: Path, write: _Writer) -> None:
    """Write ``target`` through a temporary file in its directory renamed over it, 0644."""
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            os.fchmod(handle.fileno(), FILE_MODE)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
