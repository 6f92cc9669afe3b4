"""The files of a local CE job, shared by the back end and the runner (standard library only, so
that the runner starts fast).

A CE's work directory holds ``slots/<n>.lock`` (one ``fcntl`` lock per slot) and one directory per
job, ``jobs/<ce_job_id>/``::

    job.json     what the back end wrote at submission: the description, token, slots, grace
    state.json   the job's state, written atomically by the runner (and by the back end when it
                 records a kill or a runner that died): queued -> running [-> finishing] ->
                 finished | failed | killed, with pids, times, exit code and resource use
                 (``finishing``: the payload has ended, the outputs are being uploaded)
    state.lock   serialises read-modify-write of state.json between runner and back end
    stdout       the payload's standard output
    stderr       the payload's standard error
    runner.log   the runner's own errors
    stageout.json, stageout.log
                 the upload of the files the job's output list names (:mod:`act.local.stageout`):
                 its result per file, and its own output
    work/        the payload's working directory: inputs are copied here, outputs are read here
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO

JOB = "job.json"
STATE = "state.json"
STATE_LOCK = "state.lock"
STDOUT = "stdout"
STDERR = "stderr"
RUNNER_LOG = "runner.log"
STAGEOUT = "stageout.json"
STAGEOUT_LOG = "stageout.log"
WORK = "work"
JOBS = "jobs"
SLOTS = "slots"

QUEUED, RUNNING, FINISHING = "queued", "running", "finishing"
FINISHED, FAILED, KILLED = "finished", "failed", "killed"
ENDED = frozenset({FINISHED, FAILED, KILLED})

#: Set (true) in state.json of a job the site lost: its runner died (or never started) before
#: the payload's exit was recorded. The engine resubmits it (JobStatus.lost).
LOST = "lost"

#: What a ce_job_id looks like (it names a directory: nothing else is accepted).
JOB_ID = re.compile(r"[0-9a-f]{16}-[0-9a-z]{6,32}")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` atomically (readers see the old or the new content, never a part).

    Not fsync'ed: a process killed at any point leaves the old or the new file (the rename is
    atomic and the data is in the page cache); only a machine crash could leave an empty one,
    and such a crash ends every job of this CE anyway (their processes are gone): an unreadable
    job.json or state.json reads as a job that never started or whose runner died, i.e. failed.
    An fsync per write (3-4 per job) cost the submitter most of its time on a busy disk.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # one left by a killed writer of this pid (unlink never follows a link)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def open_append(path: Path) -> BinaryIO:
    """``path`` (a log of the job directory) opened to append, created 0o600 if missing; a
    symbolic link there (the payload can write to the job directory) is refused with OSError
    ELOOP, never followed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    return open(fd, "ab")


def read_json(path: Path, limit: int = 1 << 20) -> dict[str, Any] | None:
    """A JSON object from ``path``; None if missing, too large, a symlink or not an object."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        raw = handle.read(limit + 1)
    if len(raw) > limit:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def ended(state: dict[str, Any], outcome: str, errors: list[str]) -> dict[str, Any]:
    """``state`` marked as ended now with ``outcome`` (finished, failed, killed) and errors."""
    state["state"] = outcome
    state["ended_at"] = now_iso()
    state["errors"] = errors
    return state


@contextmanager
def locked(jobdir: Path) -> Iterator[None]:
    """Hold the job's state lock."""
    fd = os.open(jobdir / STATE_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def update_state(jobdir: Path, **changes: Any) -> dict[str, Any]:
    """Merge ``changes`` into state.json under the lock; returns the new state."""
    with locked(jobdir):
        state = read_json(jobdir / STATE) or {}
        state.update(changes)
        write_json(jobdir / STATE, state)
        return state


def start_time(pid: int) -> int | None:
    """A process's start time (clock ticks since boot), None if it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20 or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def alive(pid: Any, started: Any) -> bool:
    """Whether process ``pid`` that started at ``started`` (ticks) still runs (not reused)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
        return False
    return start_time(pid) == started and started is not None


def group_members(pgid: Any) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``, from /proc."""
    if not isinstance(pgid, int) or isinstance(pgid, bool) or pgid <= 1:
        return []
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as handle:
                text = handle.read()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        if len(fields) > 2 and fields[0] not in ("Z", "X") and fields[2] == str(pgid):
            members.append(int(entry.name))
    return members
