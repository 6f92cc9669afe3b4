"""actd: the supervisor. Runs in the foreground (systemd runs it) and keeps the daemons running.

(The ``actd`` command is :mod:`act.service.actd`: it hands this supervisor the whole
configuration, how to read it again and how to start a daemon process.)

* Each configured daemon runs as ``instances`` processes of its own (``act-daemon NAME``), fed
  the validated settings through a 0600 snapshot file under ``<root>/run``, its output and log
  in ``<log dir>/<name>.log``; actd's own log is ``actd.log`` and stderr.
* A daemon that exits is restarted after ``supervisor.restart_delay`` seconds, doubled after
  each exit that follows a run shorter than ``stable_after`` seconds, up to
  ``restart_delay_max``.
* A daemon whose cycle has made no progress for ``supervisor.hung_after`` seconds is killed
  and restarted as if it had crashed (:mod:`act.common.hung_cycles`).
* SIGTERM or SIGINT: every daemon gets SIGTERM and ``stop_timeout`` seconds to finish the job
  at hand and release its claims, then SIGKILL; actd exits 0. A ``stop_timeout`` not longer than
  the longest call a daemon may wait for (a CE, PanDA, storage: ``call_timeouts``) is logged as a
  warning at start and reload.
* SIGHUP: the config is read and validated again. An invalid file is refused with the reason in
  the log and everything keeps running on the old settings. A valid one is applied: daemons
  added or removed, instance counts changed, and the processes of a daemon whose settings (or
  the shared db/logging/liveness settings) changed are restarted one by one as they stop.
* SIGUSR1 (sent by logrotate's postrotate, ``etc/logrotate.d/act``): actd reopens ``actd.log``
  and forwards SIGUSR1 to every daemon process, which reopens its log file and points its
  stdout/stderr at the new file (:mod:`act.common.logs`). Daemons are started with SIGUSR1
  blocked until they have installed their handler, so an early signal is never fatal to them.
* actd and its daemons run with umask 027 (:data:`act.common.daemon.PROCESS_UMASK`).
* Its daemons keep their metrics in ``<root>/run/metrics`` (``PROMETHEUS_MULTIPROC_DIR``, emptied
  when actd starts), where the ``metrics`` daemon adds them up (:mod:`act.common.metrics`).
* With ``NOTIFY_SOCKET`` set it speaks the systemd notify protocol: READY once the daemons are
  started, RELOADING/READY around a reload, STOPPING, STATUS lines, and WATCHDOG pings from the
  main loop at half of ``WATCHDOG_USEC``.

Exit codes (:mod:`act.common.exitcodes`): 0 stopped on request; 1 unexpected error; 2 usage;
3 invalid configuration; 4 database unreachable or schema not current (run ``actctl db
upgrade``); 5 another actd already runs on this state root.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from act import __version__
from act.common import exitcodes, liveness, logs, metrics, migrate
from act.common.config import (
    CommonSettings,
    ConfigError,
    DaemonSettings,
    stop_timeout_warning,
)
from act.common.daemon import ENV_SUPERVISOR_PID
from act.common.db import Database, DatabaseError
from act.common.hung_cycles import CycleWatch, hung_line
from act.common.logs import setup as setup_logging
from act.common.sdnotify import Notifier
from act.common.timeutil import backoff

log = logging.getLogger("act.actd")

TICK = 0.2  # seconds between looks at the children when nothing wakes the loop


@dataclass
class Child:
    """One daemon process slot: daemon ``name``, instance ``slot``."""

    name: str
    slot: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0  # exits in a row after short runs
    start_at: float = 0.0  # when it may be started (again)
    term_sent: float | None = None  # when it was asked to stop
    restart: bool = False  # start again as soon as it has stopped (reload)
    retire: bool = False  # do not start again (removed by reload)
    cycle: CycleWatch = field(default_factory=CycleWatch)  # for the hung-cycle watchdog

    @property
    def label(self) -> str:
        return f"{self.name}[{self.slot}]"


class Supervisor:
    """actd's work: ``load`` reads the configuration again on SIGHUP (raising ConfigError);
    ``daemon_command`` starts one daemon process (``NAME --snapshot FILE --log-file FILE``
    follow)."""

    def __init__(
        self,
        settings: CommonSettings,
        config_arg: str | None,
        notifier: Notifier,
        *,
        load: Callable[[str | None], CommonSettings],
        daemon_command: Sequence[str],
    ) -> None:
        self.settings = settings
        self.config_arg = config_arg
        self.notifier = notifier
        self.load = load
        self.daemon_command = list(daemon_command)
        self.children: list[Child] = []
        self.wake = threading.Event()
        self.term_requested = False
        self.reload_requested = False
        self.reopen_requested = False
        self.last_watchdog = 0.0
        self.last_status = ""
        self.lock_file: IO[str] | None = None

    # -- start-up ------------------------------------------------------------------------------

    def run(self) -> int:
        code = self._preflight()
        if code != exitcodes.OK:
            return code
        self._install_signals()
        _warn_stop_timeout(self.settings)
        self._write_snapshot(self.settings)
        metrics.reset_multiproc_dir(self._metrics_dir())
        shutil.rmtree(self._cycles_dir(), ignore_errors=True)  # an earlier actd's marks
        self._cycles_dir().mkdir(mode=0o750, parents=True, exist_ok=True)
        for name, daemon in self._enabled(self.settings).items():
            self._add(name, range(daemon.instances))
        log.info(
            "actd %s started (config %s, %d daemon process(es))",
            __version__,
            self.settings.source,
            len(self.children),
        )
        try:
            self._start_due()
            self.notifier.ready(self._status())
            self._main_loop()
        except Exception:
            log.exception("supervisor failed; stopping all daemons")
            self._shutdown()
            return exitcodes.FAILURE
        self._shutdown()
        return exitcodes.OK

    def _preflight(self) -> int:
        """Lock the state root and check the database before starting anything."""
        run_dir = self.settings.run_dir
        run_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
        lock_path = run_dir / "actd.lock"
        self.lock_file = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for life
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.lock_file.seek(0)
            holder = self.lock_file.read().strip() or "?"
            log.error("another actd (pid %s) already runs on %s", holder, self.settings.root)
            return exitcodes.LOCKED
        self.lock_file.seek(0)
        self.lock_file.truncate()
        self.lock_file.write(f"{os.getpid()}\n")
        self.lock_file.flush()
        problem = check_database(self.settings)
        if problem:
            log.error("%s", problem)
            return exitcodes.DATABASE
        return exitcodes.OK

    def _install_signals(self) -> None:
        def on_term(signum: int, _frame: FrameType | None) -> None:
            self.term_requested = True
            self.wake.set()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            self.reload_requested = True
            self.wake.set()

        def on_usr1(_signum: int, _frame: FrameType | None) -> None:
            logs.request_reopen()  # a counter and a flag: the reopen happens in the main loop
            self.reopen_requested = True
            self.wake.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGUSR1, on_usr1)

    # -- the loop ------------------------------------------------------------------------------

    def _main_loop(self) -> None:
        while not self.term_requested:
            if self.reload_requested:
                self.reload_requested = False
                self.reload()
            if self.reopen_requested:
                self.reopen_requested = False
                self._reopen_logs()
            self._reap()
            self._start_due()
            self._escalate()
            self._kill_hung()
            self._ping_watchdog()
            self.wake.wait(TICK)
            self.wake.clear()

    def _reopen_logs(self) -> None:
        """Reopen actd.log, then ask every running daemon process to reopen its own log."""
        logs.reopen()
        told = 0
        for child in self.children:
            if child.proc is not None and child.proc.poll() is None:
                child.proc.send_signal(signal.SIGUSR1)
                told += 1
        log.info("log files reopened; SIGUSR1 forwarded to %d daemon process(es)", told)

    def _reap(self) -> None:
        now = time.monotonic()
        for child in list(self.children):
            if child.proc is None or child.proc.poll() is None:
                continue
            code, ran = child.proc.returncode, now - child.started
            metrics.process_gone(child.proc.pid, self._metrics_dir())
            self._cycle_path(child).unlink(missing_ok=True)  # left by a killed or crashed one
            child.proc, child.term_sent = None, None
            child.cycle.forget()
            if child.retire:
                log.info("%s stopped (exit code %s)", child.label, code)
                self.children.remove(child)
            elif child.restart:
                log.info("%s stopped (exit code %s) for its new settings", child.label, code)
                child.restart, child.failures, child.start_at = False, 0, now
            else:
                self._schedule_restart(child, code, ran, now)
        self._report_status()

    def _schedule_restart(self, child: Child, code: int, ran: float, now: float) -> None:
        policy = self.settings.supervisor
        if ran >= policy.stable_after:
            child.failures = 0
        child.failures += 1
        delay = backoff(policy.restart_delay, policy.restart_delay_max, child.failures)
        child.start_at = now + delay
        log.warning(
            "%s exited with code %s after %.1fs; restart %d in %.1fs (see %s)",
            child.label,
            code,
            ran,
            child.failures,
            delay,
            self._log_path(child.name),
        )

    def _start_due(self) -> None:
        now = time.monotonic()
        for child in self.children:
            if child.proc is None and not child.retire and child.start_at <= now:
                self._spawn(child)

    def _spawn(self, child: Child) -> None:
        path = self._log_path(child.name)
        path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            *self.daemon_command,
            child.name,
            "--snapshot",
            str(self._snapshot_path()),
            "--log-file",
            str(path),
        ]
        cycle = self._cycle_path(child)
        cycle.unlink(missing_ok=True)
        child.cycle.forget()
        env = {
            **os.environ,
            ENV_SUPERVISOR_PID: str(os.getpid()),
            metrics.ENV_MULTIPROC_DIR: str(self._metrics_dir()),
            liveness.ENV_CYCLE_FILE: str(cycle),
        }
        # The child inherits the blocked SIGUSR1 and unblocks it once its handler is installed
        # (act.service.daemon.main): a log reopen forwarded during its start-up waits for it.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        try:
            with open(path, "ab") as output:
                child.proc = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    close_fds=True,
                )
        except OSError as error:
            log.error("cannot start %s: %s", child.label, error)
            self._schedule_restart(child, -1, 0.0, time.monotonic())
            return
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        child.started = time.monotonic()
        log.info("started %s (pid %d)", child.label, child.proc.pid)

    def _escalate(self) -> None:
        """SIGKILL children that did not stop within stop_timeout of being asked to."""
        timeout = self.settings.supervisor.stop_timeout
        now = time.monotonic()
        for child in self.children:
            if child.proc and child.term_sent is not None and now - child.term_sent > timeout:
                log.warning(
                    "%s (pid %d) did not stop within %.0fs: killing it",
                    child.label,
                    child.proc.pid,
                    timeout,
                )
                child.proc.kill()
                child.term_sent = now  # wait for the reap; never kill twice in one tick

    def _kill_hung(self) -> None:
        """SIGKILL children whose cycle has shown no progress for supervisor.hung_after; the
        reap restarts them as it does a crashed daemon (back-off included)."""
        limit = self.settings.supervisor.hung_after
        if not limit:
            return
        now = time.monotonic()
        for child in self.children:
            if child.proc is None or child.term_sent is not None:
                continue  # not running, or already being stopped
            path = self._cycle_path(child)
            stalled = child.cycle.stalled(path, now, limit)
            if stalled is not None:
                line = hung_line(
                    child.label,
                    child.proc.pid,
                    path=path,
                    stalled=stalled,
                    limit=limit,
                    log=self._log_path(child.name),
                )
                log.error("%s", line)
                child.proc.kill()
                child.term_sent = now  # the reap follows; nothing else is sent meanwhile

    def _ping_watchdog(self) -> None:
        interval = self.notifier.watchdog_interval
        now = time.monotonic()
        if interval is not None and now - self.last_watchdog >= interval:
            self.notifier.watchdog()
            self.last_watchdog = now

    # -- reload --------------------------------------------------------------------------------

    def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = self.load(self.config_arg)
            problem = self._reload_problem(new)
        except ConfigError as error:
            problem = str(error)
        if problem:
            log.error("reload refused, still running on the previous configuration: %s", problem)
            self.notifier.ready("reload refused: " + problem.splitlines()[0])
            return
        old, self.settings = self.settings, new
        self._write_snapshot(new)
        setup_logging(new.logging.level, new.log_dir / "actd.log")
        _warn_stop_timeout(new)
        summary = self._apply(old, new)
        log.info("configuration reloaded from %s: %s", new.source, summary)
        self.notifier.ready(self._status())

    def _reload_problem(self, new: CommonSettings) -> str | None:
        if new.root != self.settings.root:
            return f"root cannot change on reload ({self.settings.root} -> {new.root}): restart"
        if new.db != self.settings.db:
            return check_database(new)
        return None

    def _apply(self, old: CommonSettings, new: CommonSettings) -> str:
        shared_changed = (old.db, old.logging, old.liveness) != (new.db, new.logging, new.liveness)
        before, after = self._enabled(old), self._enabled(new)
        started = restarted = stopped = 0
        for name in sorted(set(before) | set(after)):
            mine = [c for c in self.children if c.name == name and not c.retire]
            if name not in after:
                stopped += self._retire(mine)
                continue
            wanted = after[name].instances
            stopped += self._retire([c for c in mine if c.slot >= wanted])
            if name in before and (shared_changed or _differs(before[name], after[name])):
                restarted += self._restart([c for c in mine if c.slot < wanted])
            have = {c.slot for c in mine}
            new_slots = [slot for slot in range(wanted) if slot not in have]
            self._add(name, new_slots)
            started += len(new_slots)
        return f"{started} started, {restarted} restarted, {stopped} stopped"

    def _add(self, name: str, slots: range | list[int]) -> None:
        self.children.extend(Child(name, slot) for slot in slots)

    def _retire(self, children: list[Child]) -> int:
        for child in children:
            child.retire = True
            if child.proc is None:
                self.children.remove(child)
            else:
                self._terminate(child)
        return len(children)

    def _restart(self, children: list[Child]) -> int:
        for child in children:
            if child.proc is not None:
                child.restart = True
                self._terminate(child)
            else:
                child.failures, child.start_at = 0, 0.0
        return len(children)

    def _terminate(self, child: Child) -> None:
        if child.proc is not None and child.term_sent is None:
            child.proc.terminate()
            child.term_sent = time.monotonic()

    # -- stop ----------------------------------------------------------------------------------

    def _shutdown(self) -> None:
        self.notifier.stopping()
        running = [c for c in self.children if c.proc is not None]
        log.info("stopping %d daemon process(es)", len(running))
        for child in running:
            self._terminate(child)
        while any(c.proc is not None and c.proc.poll() is None for c in running):
            self._escalate()  # SIGKILL what has not stopped within stop_timeout
            time.sleep(0.05)
        for child in running:
            assert child.proc is not None
            log.info("%s stopped (exit code %s)", child.label, child.proc.returncode)
        log.info("actd stopped")

    # -- helpers -------------------------------------------------------------------------------

    def _snapshot_path(self) -> Path:
        return self.settings.run_dir / "settings.json"

    def _write_snapshot(self, settings: CommonSettings) -> None:
        """Write the settings children start with, atomically and readable by us alone."""
        path = self._snapshot_path()
        scratch = path.with_suffix(".tmp")
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(settings.snapshot())
        os.replace(scratch, path)

    def _metrics_dir(self) -> Path:
        return metrics.multiproc_dir(self.settings.run_dir)

    def _cycles_dir(self) -> Path:
        return self.settings.run_dir / "cycles"

    def _cycle_path(self, child: Child) -> Path:
        return self._cycles_dir() / f"{child.name}.{child.slot}"

    def _log_path(self, name: str) -> Path:
        return self.settings.log_dir / f"{name}.log"

    def _report_status(self) -> None:
        """Tell systemd the status line when it changed."""
        status = self._status()
        if status != self.last_status:
            self.notifier.status(status)
            self.last_status = status

    def _status(self) -> str:
        running = sum(1 for c in self.children if c.proc is not None)
        return f"{running} of {len(self.children)} daemon processes running"

    @staticmethod
    def _enabled(settings: CommonSettings) -> dict[str, DaemonSettings]:
        return {name: d for name, d in settings.daemons.items() if d.enabled}


def _warn_stop_timeout(settings: CommonSettings) -> None:
    warning = stop_timeout_warning(settings)
    if warning:
        log.warning("%s", warning)


def _differs(old: DaemonSettings, new: DaemonSettings) -> bool:
    """Whether running processes must restart: anything but the instance count changed."""
    return old.model_copy(update={"instances": 1}) != new.model_copy(update={"instances": 1})


def check_database(settings: CommonSettings) -> str | None:
    """None if the database is reachable, its schema current and the integrity probe finds
    nothing (:func:`act.common.integrity.probe`), else what is wrong, in one line."""
    try:
        database = Database(
            settings.db_url(), pool_size=1, connect_timeout=settings.db.connect_timeout
        )
    except DatabaseError as error:
        return str(error)
    try:
        return migrate.readiness_problem(database)
    finally:
        database.dispose()
