"""Logging for act processes: UTC timestamps, one file per daemon, job and CE on every job line.

Log rotation: the contract is a signal, not a stat per line. ``logrotate`` renames
``<name>.log`` (``etc/logrotate.d/act``), then sends SIGUSR1 to actd, which reopens its own log
and forwards SIGUSR1 to every daemon process (:mod:`act.common.supervisor`); a standalone
``act-daemon`` answers SIGUSR1 the same way (:mod:`act.common.daemon`). A process reopens:

* its log file handler (:class:`ReopeningFileHandler`): the old stream is closed and the path is
  opened again (appending, created if missing);
* its file descriptors 1 and 2 when they pointed at that same log file, as they do for a daemon
  actd started (actd opens ``<name>.log`` as the child's stdout and stderr): the new file is
  opened ``O_APPEND`` and ``os.dup2``-ed over them, so tracebacks and prints of a crashing
  daemon land in the current file, not in a rotated (perhaps already compressed) one.

Nothing of this happens in the signal handler: :func:`request_reopen` only increments a
generation counter and writes one byte to a pipe (both async-signal-safe, no lock taken). The
reopen itself happens at a safe point: in :meth:`ReopeningFileHandler.emit` (which runs under the
handler's lock) when the counter changed, and in :func:`reopen`, called by actd's main loop or by
the reopener thread a daemon starts (:func:`start_reopener`), which takes each handler's lock.
A signal arriving while the main thread holds a logging lock therefore cannot deadlock.

``WatchedFileHandler`` (a ``stat()`` before every line) is not used: the signal is what
logrotate promises, it also covers fds 1 and 2 (which a watched handler never re-points), and
``copytruncate`` (which loses the lines written between copy and truncate) is never needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s[%(process)d]: %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%S"
#: The descriptors re-pointed at a reopened log file when they pointed at the old one.
STDIO_FDS = (1, 2)

log = logging.getLogger("act.logs")


class _Requests:
    """What :func:`request_reopen` changes: a counter, and the reopener thread's pipe."""

    generation = 0  # handlers reopen when theirs differs
    wake_fd: int | None = None  # the write end of the reopener thread's pipe
    lock = threading.Lock()  # start_reopener() only; never taken in a signal handler


_requests = _Requests()


def formatter() -> logging.Formatter:
    fmt = logging.Formatter(FORMAT, DATEFMT)
    fmt.converter = time.gmtime
    return fmt


class ReopeningFileHandler(logging.FileHandler):
    """A file handler that reopens its path when a reopen was requested (log rotation).

    The check costs one integer comparison per line. When the handler's stream was also the
    process's fd 1 or 2, those descriptors follow it to the new file.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, mode="a", encoding="utf-8")
        self.generation = _requests.generation

    def emit(self, record: logging.LogRecord) -> None:
        # Handler.handle() holds self.lock here: the reopen cannot interleave with a write.
        if self.generation != _requests.generation:
            self.reopen_locked()
        super().emit(record)

    def reopen(self) -> bool:
        """Reopen if a reopen was requested since the last one; True if it did."""
        self.acquire()
        try:
            return self.reopen_locked()
        finally:
            self.release()

    def reopen_locked(self) -> bool:
        """:meth:`reopen` for a caller holding the handler's lock."""
        wanted = _requests.generation
        if self.generation == wanted:
            return False
        self.generation = wanted
        old = self.stream
        try:
            new = self._open()
        except OSError as error:
            # Keep writing to the old file rather than losing lines; say so where it can be seen.
            sys.stderr.write(f"act: cannot reopen {self.baseFilename}: {error}\n")
            return False
        following = _descriptors_on(old) if old is not None else []
        if old is not None:
            try:
                old.flush()
            finally:
                old.close()
        self.stream = new
        if following:
            _repoint(following, self.baseFilename)
        return True


def _descriptors_on(stream: Any) -> list[int]:
    """Which of fds 1 and 2 are the same open file as ``stream`` (same device and inode)."""
    try:
        mine = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return []
    found = []
    for fd in STDIO_FDS:
        try:
            other = os.fstat(fd)
        except OSError:
            continue
        if (other.st_dev, other.st_ino) == (mine.st_dev, mine.st_ino):
            found.append(fd)
    return found


def _repoint(fds: list[int], path: str) -> None:
    """Point ``fds`` at ``path`` opened for appending (O_APPEND: writes never overlap)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
    except OSError as error:
        sys.stderr.write(f"act: cannot reopen {path} for stdout/stderr: {error}\n")
        return
    try:
        for target in fds:
            os.dup2(fd, target)  # inheritable, as fds 1 and 2 must be
    finally:
        os.close(fd)


def request_reopen() -> None:
    """Ask for the log files to be reopened. Safe in a signal handler: no lock, no buffered I/O.

    The handlers reopen before their next line; :func:`reopen` (or the reopener thread) does it
    at once.
    """
    _requests.generation += 1
    fd = _requests.wake_fd
    if fd is not None:
        with contextlib.suppress(OSError):  # a full pipe: a wake-up is pending anyway
            os.write(fd, b"\0")


def reopen() -> int:
    """Reopen the ``act`` logger's files if requested; not for signal handlers. Returns how many."""
    done = 0
    for handler in list(logging.getLogger("act").handlers):
        if isinstance(handler, ReopeningFileHandler) and handler.reopen():
            done += 1
    return done


def start_reopener() -> None:
    """Start the thread that reopens the log files soon after :func:`request_reopen`.

    A daemon may sleep for long without writing a line; this thread makes sure its fds 1 and 2
    leave the rotated file at once. Idempotent.
    """
    with _requests.lock:
        if _requests.wake_fd is not None:
            return
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(write_end, False)
        _requests.wake_fd = write_end
    thread = threading.Thread(target=_reopener, args=(read_end,), name="log-reopen", daemon=True)
    thread.start()


def _reopener(read_end: int) -> None:
    while True:
        try:
            if not os.read(read_end, 512):
                return
        except InterruptedError:
            continue
        try:
            reopen()
            # Written after the reopen (by emit() if a line came first): the new file's first line.
            log.info("log files reopened on request")
        except Exception:  # never let the thread die: the next signal must work too
            log.exception("cannot reopen the log files")


def setup(level: str, log_file: Path | None = None, *, stderr: bool = True) -> None:
    """Send the ``act`` logger tree to ``log_file`` (reopened on request) and/or stderr."""
    root = logging.getLogger("act")
    root.setLevel(level)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(ReopeningFileHandler(log_file))
    if stderr or log_file is None:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter())
        root.addHandler(handler)
    logging.captureWarnings(True)


class JobLog(logging.LoggerAdapter[logging.Logger]):
    """A logger whose lines start with the job and CE they concern: ``panda_id=42 ce=host: ...``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        tags = " ".join(
            f"{key}={value}" for key, value in (self.extra or {}).items() if value is not None
        )
        return (f"{tags}: {msg}" if tags else msg), kwargs


def job_log(
    log: logging.Logger, *, panda_id: int | None = None, ce: str | None = None, **more: Any
) -> JobLog:
    return JobLog(log, {"panda_id": panda_id, "ce": ce, **more})
