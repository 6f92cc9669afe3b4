"""``python -m act.local.runner JOBDIR``: runs one local CE job, detached from its submitter.

The first process forks and exits as soon as the runner proper (its child, in a new session) has
recorded itself in ``state.json`` as ``queued`` with its pid and start time; the submitter waits
only for that. The runner then

1. takes ``cores`` slot locks (``fcntl`` on ``slots/<n>.lock``, all or none, retried until
   available: jobs beyond the slots wait QUEUED; locks die with the runner);
2. starts the payload in its own process group (stdout/stderr to files, ``work/`` as its
   directory), records ``running`` with the payload's pid and process group;
3. waits for it with ``os.wait4``, enforcing the walltime (SIGTERM to the payload's group, SIGKILL
   after the grace period), and records ``finished`` (exit 0), ``failed`` (exit code or signal,
   or ``walltime exceeded``) or ``killed`` (SIGTERM to the runner: act's kill), with CPU time and
   max RSS;
4. for a job with an ``output_list`` that was not killed, first records ``finishing`` and
   uploads what the list names (``python -m act.local.stageout``, in a process group of its own,
   as the payload), then records the end: a failed upload fails the job with the file, the URL
   and the cause. A runner killed meanwhile leaves ``finishing`` behind, never ``finished``: the
   back end then ends the job (:func:`act.local.jobstate.current`: a payload failure if its
   recorded exit says so, else a job the site lost, which the engine resubmits). A job that wrote no
   such list has nothing uploaded (noted in ``stageout_note``).

The runner is forked by the CE's spawner (:mod:`act.local.spawner`: :func:`become_runner`), or
started as ``python -m act.local.runner JOBDIR`` (:func:`detach`) when there is no spawner. Only
the standard library is imported, so that either starts fast.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NoReturn, TypeVar

from act.local import jobfiles as jf

POLL = 0.05  # seconds between two checks of the payload or of the slots
#: The lock of the line of queued jobs (in the slots directory): see Runner.take_slots.
LINE = "line.lock"
#: Seconds between two tries of a state write that found the disk full (see :func:`patiently`).
FULL_RETRY = 2.0
#: A full disk, or the job's owner over quota.
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})

T = TypeVar("T")


def patiently(write: Callable[[], T]) -> T:
    """``write()`` (a write of the job's state), tried again every :data:`FULL_RETRY` seconds
    while the disk is full: the job waits, its runner alive and its state as it was, until
    there is room, instead of its runner dying and the job ending. Said once in runner.log (if
    there is room for it); any other error is raised."""
    said = False
    while True:
        try:
            return write()
        except OSError as error:
            if error.errno not in DISK_FULL:
                raise
            if not said:
                said = True
                with contextlib.suppress(OSError):
                    print(
                        f"{jf.now_iso()} cannot record the job's state ({error});"
                        f" tried again every {FULL_RETRY:.0f}s until there is room",
                        file=sys.stderr,
                        flush=True,
                    )
            time.sleep(FULL_RETRY)


class _Killed(Exception):
    """SIGTERM while waiting in line for the slots."""


class Runner:
    def __init__(self, jobdir: Path) -> None:
        self.jobdir = jobdir
        job = jf.read_json(jobdir / jf.JOB)
        if job is None:
            raise RuntimeError(f"{jobdir / jf.JOB}: missing or unreadable")
        self.job: dict[str, Any] = job
        self.description: dict[str, Any] = job["description"]
        self.grace = float(job.get("grace", 5.0))
        self.killed = False
        self.slot_fds: list[int] = []
        self.in_line = False

    def on_term(self, _signum: int, _frame: Any) -> None:
        self.killed = True
        if self.in_line:  # asleep in the kernel on the line's lock: wake up
            raise _Killed

    def take_slots(self) -> bool:
        """Wait until ``cores`` slots are ours; False if killed meanwhile.

        A job that finds no free slots at once waits in line: only the runner holding the
        line's lock (``slots/line.lock``) polls the slots, the others sleep in ``flock`` until it
        has its slots (no CPU spent by hundreds of queued runners polling every slot).
        """
        slots_dir = Path(self.job["slots_dir"])
        slots, cores = int(self.job["slots"]), int(self.description.get("cores", 1))
        flags = os.O_RDWR | os.O_CREAT
        fds = [os.open(slots_dir / f"{n}.lock", flags, 0o600) for n in range(slots)]
        line = -1
        try:
            if self.try_slots(fds, cores):
                return True
            line = os.open(slots_dir / LINE, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                self.in_line = True
                if not self.killed:
                    fcntl.flock(line, fcntl.LOCK_EX)
            except _Killed:
                return False
            finally:
                self.in_line = False
            while not self.killed:
                if self.try_slots(fds, cores):
                    return True
                time.sleep(POLL)
            return False
        finally:
            for fd in fds:
                if fd not in self.slot_fds:
                    os.close(fd)
            if line >= 0:
                os.close(line)  # the next in line takes over

    def try_slots(self, fds: list[int], cores: int) -> bool:
        """Lock ``cores`` of the slot files ``fds``, all or none (two multi-core jobs never
        deadlock); True when they are ours (kept in ``slot_fds``)."""
        taken = []
        for fd in fds:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            taken.append(fd)
            if len(taken) == cores:
                self.slot_fds = taken
                return True
        for fd in taken:
            fcntl.flock(fd, fcntl.LOCK_UN)
        return False

    def payload_env(self) -> dict[str, str]:
        env = dict(self.job.get("base_env", {}))
        env.update(self.description.get("environment", {}))
        return env

    def open_payload_logs(self) -> tuple[BinaryIO, BinaryIO]:
        """The payload's stdout and stderr files, no symbolic link followed."""
        out = jf.open_append(self.jobdir / jf.STDOUT)
        try:
            return out, jf.open_append(self.jobdir / jf.STDERR)
        except BaseException:
            out.close()
            raise

    def end(self, state: str, error: str) -> None:
        """Record the job's end before its payload ran (or could run): ``state`` and why,
        waiting for room on a full disk (:func:`patiently`)."""
        patiently(
            lambda: jf.update_state(self.jobdir, state=state, ended_at=jf.now_iso(), errors=[error])
        )

    def run(self) -> None:
        if not self.take_slots():
            self.end(jf.KILLED, "killed by act (queued)")
            return
        work = self.jobdir / jf.WORK
        try:
            out, err = self.open_payload_logs()
        except OSError as error:  # ELOOP: a symbolic link where the payload's log goes
            self.end(
                jf.FAILED, f"cannot open the payload's logs in the job directory: {error.strerror}"
            )
            return
        with out, err:
            started = time.monotonic()
            try:
                proc = subprocess.Popen(
                    [self.description["executable"], *self.description.get("arguments", [])],
                    cwd=work,
                    env=self.payload_env(),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,  # its own group: kill reaches its whole tree
                    close_fds=True,  # the slot locks stay with the runner
                )
            except OSError as error:
                self.end(
                    jf.FAILED, f"cannot start {self.description['executable']!r}: {error.strerror}"
                )
                return
            patiently(
                lambda: jf.update_state(
                    self.jobdir,
                    state=jf.RUNNING,
                    started_at=jf.now_iso(),
                    pid=proc.pid,
                    pgid=proc.pid,
                    node=os.uname().nodename,
                )
            )
            status, usage, reason = self.wait(proc.pid, started)
        self.finish(status, usage, reason, time.monotonic() - started)

    def wait(self, pid: int, started: float) -> tuple[int, Any, str | None]:
        """Wait for the payload; returns its wait status, rusage and why act stopped it."""
        deadline = started + float(self.description.get("walltime", 86400.0))
        reason: str | None = None
        term_at: float | None = None
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                self.kill_group(pid, signal.SIGKILL)  # leftovers of its tree
                return status, usage, reason
            now = time.monotonic()
            if reason is None and (self.killed or now > deadline):
                reason = "killed" if self.killed else "walltime"
                self.kill_group(pid, signal.SIGTERM)
                term_at = now
            elif term_at is not None and now > term_at + self.grace:
                self.kill_group(pid, signal.SIGKILL)
                term_at = float("inf")
            time.sleep(POLL)

    @staticmethod
    def kill_group(pgid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signum)

    def finish(self, status: int, usage: Any, reason: str | None, wall: float) -> None:
        fields: dict[str, Any] = {
            "wall_seconds": round(wall, 3),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "max_rss_kb": int(usage.ru_maxrss),
        }
        if os.WIFEXITED(status):
            fields["exit_code"] = code = os.WEXITSTATUS(status)
            what = f"exit code {code}"
        else:
            fields["signal"] = signum = os.WTERMSIG(status)
            fields["exit_code"] = 128 + signum
            what = f"killed by signal {signum} ({signal.Signals(signum).name})"
        with jf.locked(self.jobdir):
            current = jf.read_json(self.jobdir / jf.STATE) or {}
            if current.get("state") in jf.ENDED:  # act's kill may have recorded it first
                return
            if reason == "killed" or current.get("kill_requested"):
                outcome, errors = jf.KILLED, [f"killed by act ({what})"]
            elif reason == "walltime":
                limit = self.description.get("walltime")
                outcome, errors = jf.FAILED, [f"walltime exceeded ({limit}s; {what})"]
            elif os.WIFEXITED(status) and fields["exit_code"] == 0:
                outcome, errors = jf.FINISHED, []
            else:
                outcome, errors = jf.FAILED, [f"payload failed: {what}"]
            current.update(fields)
            listed = self.description.get("output_list")
            if listed and not os.path.lexists(self.jobdir / jf.WORK / listed):
                # A-REX fails such a job; act's stand-in and demo pilots write no list, and
                # outputs that are not on storage fail the job in act's validator anyway.
                current["stageout_note"] = f"no {listed}: nothing uploaded"
                listed = None
            if outcome == jf.KILLED or not listed:
                patiently(
                    lambda: jf.write_json(
                        self.jobdir / jf.STATE, jf.ended(current, outcome, errors)
                    )
                )
                return
            current["state"], current["finishing_at"] = jf.FINISHING, jf.now_iso()
            patiently(lambda: jf.write_json(self.jobdir / jf.STATE, current))
        upload_errors = self.stage_out()
        with jf.locked(self.jobdir):
            current = jf.read_json(self.jobdir / jf.STATE) or {}
            if current.get("state") in jf.ENDED:
                return
            if self.killed or current.get("kill_requested"):
                outcome, errors = jf.KILLED, ["killed by act (while uploading the outputs)"]
            elif upload_errors:
                outcome = jf.FAILED
                errors = errors + [f"output upload failed: {e}" for e in upload_errors]
            patiently(
                lambda: jf.write_json(self.jobdir / jf.STATE, jf.ended(current, outcome, errors))
            )

    def stage_out(self) -> list[str]:
        """Upload what the output list names (:mod:`act.local.stageout`, a process of its own:
        it needs the full interpreter); its errors, [] when every file is on storage."""
        result_file = self.jobdir / jf.STAGEOUT
        with contextlib.suppress(FileNotFoundError):
            result_file.unlink()  # a result left by an earlier runner of this job
        try:
            log = jf.open_append(self.jobdir / jf.STAGEOUT_LOG)
        except OSError as error:  # ELOOP: the payload left a symbolic link in its place
            return [f"cannot open {jf.STAGEOUT_LOG} in the job directory: {error.strerror}"]
        with log:
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "act.local.stageout", str(self.jobdir)],
                    cwd=self.jobdir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,  # its own group: a kill reaches its whole tree
                    close_fds=True,
                )
            except OSError as error:
                return [f"cannot start the upload: {error.strerror}"]
        patiently(
            lambda: jf.update_state(self.jobdir, stageout_pid=proc.pid, stageout_pgid=proc.pid)
        )
        term_at: float | None = None
        while True:
            done, status, _ = os.wait4(proc.pid, os.WNOHANG)
            if done:
                self.kill_group(proc.pid, signal.SIGKILL)
                break
            now = time.monotonic()
            if self.killed and term_at is None:
                self.kill_group(proc.pid, signal.SIGTERM)
                term_at = now
            elif term_at is not None and now > term_at + self.grace:
                self.kill_group(proc.pid, signal.SIGKILL)
                term_at = float("inf")
            time.sleep(POLL)
        result = jf.read_json(result_file)
        if result is None or not isinstance(result.get("errors"), list):
            code = os.waitstatus_to_exitcode(status)
            tail = _tail(self.jobdir / jf.STAGEOUT_LOG, 300)
            return [f"the upload did not complete (exit {code}){': ' + tail if tail else ''}"]
        return [str(error)[:1000] for error in result["errors"][:50]]


def _tail(path: Path, limit: int) -> str:
    """The end of a log file, on one line."""
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - limit))
            return " ".join(handle.read(limit).decode("utf-8", "replace").split())
    except OSError:
        return ""


def detach(jobdir: Path) -> int:
    """Fork the runner into a new session; return once it has recorded itself (0) or failed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            return 0 if pipe.read(1) == b"1" else 1
    os.close(read_end)
    become_runner(jobdir, lambda: _say_ready(write_end))


def _say_ready(fd: int) -> None:
    with contextlib.suppress(OSError):  # the submitter died: the job runs all the same
        os.write(fd, b"1")
    os.close(fd)


def become_runner(jobdir: Path, ready: Callable[[], None]) -> NoReturn:
    """In a freshly forked process: leave the parent's session, record the job as queued with
    this process as its runner, call ``ready`` (tells the submitter), run the job, exit.

    A job has one runner: one that finds ``state.json`` already written (another runner took
    the job, e.g. the one :meth:`LocalBackend.find` started for a job whose submitter died
    while its first runner was already being forked) only says ready and exits.

    Used by :func:`detach` (one ``python -m act.local.runner`` per job) and by the spawner
    (:mod:`act.local.spawner`, a long-lived process forking one runner per job).
    """
    try:
        os.setsid()
        log = os.open(
            jobdir / jf.RUNNER_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600
        )
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.chdir(jobdir)
        runner = Runner(jobdir)
        signal.signal(signal.SIGTERM, runner.on_term)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        me = os.getpid()
        with jf.locked(jobdir):
            mine = jf.read_json(jobdir / jf.STATE) is None
            if mine:
                state = {
                    "state": jf.QUEUED,
                    "queued_at": jf.now_iso(),
                    "runner_pid": me,
                    "runner_start": jf.start_time(me),
                }
                jf.write_json(jobdir / jf.STATE, state)
        ready()
        if mine:
            runner.run()
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m act.local.runner JOBDIR", file=sys.stderr)
        return 2
    return detach(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
