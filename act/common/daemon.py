"""The one loop every daemon runs on.

A daemon is a :class:`DaemonSpec`: a short ``run_once(ctx)`` function doing one cycle of work, and
the model of its ``options``. :func:`run_daemon` owns everything else:

* a liveness row (:mod:`act.common.liveness`), refreshed every ``liveness.heartbeat_interval``
  seconds even while the daemon sleeps, from which ``ctx.shard`` — this instance's share of the
  work — is recomputed at each heartbeat;
* sleeping ``interval`` seconds (± ``jitter``) on a stop event between cycles, or not at all when
  ``run_once`` returns True ("more work is waiting");
* logging each exception with its traceback and counting it in the liveness row; a database
  outage is logged in one line per attempt and retried with exponential backoff; the claims the
  broken cycle held are handed back once the database answers again (not left to their lease);
* at start, instances of the same daemon on this host whose process has gone (SIGKILLed,
  crashed) are marked stopped and their claims handed back, so their share and their jobs do
  not wait for ``liveness.dead_after`` and the leases;
* graceful stop: SIGTERM (and SIGINT when not supervised) only set the stop event; a daemon
  looks at it between the jobs of a batch (:meth:`Context.stopping`, :meth:`Context.until_stopped`)
  and leaves the rest, the cycle ends, the claims this instance holds (those of the jobs it left
  too) are released and its liveness row is marked stopped, so the other instances take its
  share at once;
* ``--once``: one cycle, then the same clean stop (this is how tests drive daemons); the exit
  code says how the cycle went (:data:`act.common.exitcodes.CYCLE_FAILED` after an exception,
  :data:`~act.common.exitcodes.DATABASE` when the database was unreachable);
* at stop, what the daemon kept in ``ctx.cache`` that has a ``close()`` (a PanDA client, the
  engine's back ends) is closed (:func:`close_cache`).

Supervised by actd, a daemon also stops when its supervisor has gone away, and marks each cycle
in a file actd watches (:class:`act.common.liveness.CycleMark`): a cycle that shows no progress
(its start, a heartbeat, the next job of a batch) for ``supervisor.hung_after`` seconds gets the
daemon killed and restarted.

SIGUSR1 reopens the log file (after logrotate renamed it) and, when they pointed at it, fds 1 and
2 (:mod:`act.common.logs`): the handler only records the request; a small thread does the reopen.
actd forwards its own SIGUSR1 to every daemon, and starts them with SIGUSR1 blocked, so a
signal arriving before the handler is installed waits for it instead of killing the process
(the default action); :func:`main` unblocks it once the handler is in place.

``act-daemon`` (and actd, whose children inherit it) run with umask :data:`PROCESS_UMASK`
(027): what act creates under its root (the database, logs, spool, CE job files) is not
world-readable. The web area (:mod:`act.atlas.web_area`) sets its modes explicitly.

The ``act-daemon`` command itself (:mod:`act.service.daemon`) sits above every package: it reads
the whole configuration and finds the daemon by name; this module knows neither.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from act.common import exitcodes, liveness, logs, metrics, migrate
from act.common.claims import release
from act.common.config import DaemonSettings, S, Section
from act.common.db import Database, DatabaseError, is_unavailable, short_error
from act.common.liveness import CycleMark, Shard
from act.common.states import Layer
from act.common.timeutil import backoff, utcnow

ENV_SUPERVISOR_PID = "ACT_SUPERVISOR_PID"
#: The umask of act's processes: nothing they create is readable by other users unless made so.
PROCESS_UMASK = 0o027
T = TypeVar("T")


class NoOptions(Section):
    """A daemon without options of its own."""


@dataclass(frozen=True)
class DaemonSpec(Generic[S]):
    """What a daemon is: its cycle function and the model of its ``options`` config mapping.

    ``S`` is the configuration model the daemon reads (its package's: e.g.
    :class:`act.engine.config.EngineConfig`); the whole configuration is every package's.
    """

    run_once: Callable[[Context[S]], bool | None]
    options: type[BaseModel] = NoOptions
    doc: str = ""


@dataclass
class Context(Generic[S]):
    """What ``run_once`` gets: settings, database, logger, stop event and its share of the work.

    Each package names its own: ``act.engine.config.Context`` is ``Context[EngineConfig]``.
    """

    name: str
    instance: str
    settings: S
    daemon: DaemonSettings
    options: Any
    db: Database
    log: logging.Logger
    stop: threading.Event
    shard: Shard = field(default_factory=lambda: Shard(0, 1))
    last_beat: float = field(default=0.0)
    #: What a daemon keeps between cycles (clients, back ends); see e.g. act.engine.runtime.
    #: Values with a ``close()`` are closed when the daemon stops (:func:`close_cache`).
    cache: dict[str, Any] = field(default_factory=dict)
    #: The current cycle's mark for actd's watchdog (a no-op outside actd).
    cycle: CycleMark = field(default_factory=lambda: CycleMark(None))

    @property
    def owner(self) -> str:
        """The name this instance claims rows under."""
        return f"{self.name}@{self.instance}"

    def stopping(self) -> bool:
        """Whether this daemon was asked to stop: a cycle looks between its jobs and leaves
        the rest (their claims are handed back when the daemon stops, before it exits).
        Looking counts as progress for actd's watchdog."""
        self.cycle.progress()
        return self.stop.is_set()

    def until_stopped(self, items: Sequence[T], what: str = "job(s)") -> Iterator[T]:
        """``items`` one by one while no stop is asked for; the ones left are logged and not
        processed (the clean stop hands back their claims)."""
        for done, item in enumerate(items):
            self.cycle.progress()  # each job is progress for actd's watchdog
            if self.stop.is_set():
                self.log.info(
                    "stop requested: %d of %d %s left to the next instance",
                    len(items) - done,
                    len(items),
                    what,
                )
                return
            yield item

    def heartbeat(self, *, force: bool = False) -> Shard:
        """Refresh the liveness row if due (long cycles call this too: it is also their
        progress for actd's watchdog); returns the shard."""
        self.cycle.progress()
        now = time.monotonic()
        if force or now - self.last_beat >= self.settings.liveness.heartbeat_interval:
            dead_after = self.settings.liveness.dead_after

            def beat(conn: Any) -> Shard:
                try:
                    return liveness.beat(conn, self.name, self.instance, dead_after=dead_after)
                except LookupError:  # the row was pruned while we were away: come back
                    liveness.register(
                        conn, self.name, self.instance, socket.gethostname(), os.getpid()
                    )
                    return liveness.beat(conn, self.name, self.instance, dead_after=dead_after)

            shard: Shard = self.db.run(beat)
            if shard != self.shard:
                self.log.info("work split: instance %d of %d", shard.index + 1, shard.count)
            self.shard = shard
            self.last_beat = now
        return self.shard


class _Backoff:
    """Exponential delay for repeated failures, reset by a success."""

    def __init__(self, first: float, maximum: float) -> None:
        self.first, self.maximum, self.failures = first, maximum, 0

    def next(self) -> float:
        self.failures += 1
        return backoff(self.first, self.maximum, self.failures)

    def reset(self) -> None:
        self.failures = 0


def run_daemon(
    spec: DaemonSpec[S],
    settings: S,
    name: str,
    *,
    once: bool = False,
    stop: threading.Event | None = None,
    db: Database | None = None,
) -> int:
    """Run ``spec`` until stopped (or for one cycle); returns an exit code.

    Stopped: :data:`~act.common.exitcodes.OK`. With ``once``, the outcome of the cycle: OK, or
    :data:`~act.common.exitcodes.CYCLE_FAILED` (it raised) or
    :data:`~act.common.exitcodes.DATABASE` (the database was unreachable).
    """
    stop = stop or threading.Event()
    log = logging.getLogger(f"act.{name}")
    daemon = settings.daemons.get(name, DaemonSettings())
    own_db = db is None
    try:
        database = db or Database(
            settings.db_url(),
            pool_size=2,
            connect_timeout=settings.db.connect_timeout,
            busy_timeout=settings.db.busy_timeout,
            echo=settings.db.echo,
        )
    except DatabaseError as error:
        log.error("%s", error)
        return exitcodes.DATABASE
    problem = migrate.readiness_problem(database)
    if problem:
        log.error("%s", problem)
        if own_db:
            database.dispose()
        return exitcodes.DATABASE
    # host:pid:random, short enough for the 128-character owner columns with any host name.
    instance = f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(3)}"
    ctx = Context(
        name=name,
        instance=instance,
        settings=settings,
        daemon=daemon,
        options=spec.options.model_validate(daemon.options),
        db=database,
        log=log,
        stop=stop,
        cycle=CycleMark.from_env(),
    )
    database.run(
        lambda conn: liveness.register(conn, name, instance, socket.gethostname(), os.getpid())
    )
    log.info(
        "started (instance %s, config %s, database %s)",
        instance,
        settings.source,
        database.safe_url,
    )
    _retire_dead_instances(ctx)
    try:
        outcome = _loop(spec, ctx, once)
    finally:
        close_cache(ctx)
        _clean_stop(ctx)
        if own_db:
            database.dispose()
    return ONCE_EXIT_CODES[outcome] if once else exitcodes.OK


#: ``--once``: the exit code of each outcome of the cycle.
ONCE_EXIT_CODES = {
    "ok": exitcodes.OK,
    "error": exitcodes.CYCLE_FAILED,
    "db_unavailable": exitcodes.DATABASE,
}


def _loop(spec: DaemonSpec[S], ctx: Context[S], once: bool) -> str:
    """Cycles until stopped; the outcome of the last one (``ok``, ``error``, ``db_unavailable``)."""
    daemon, log, stop = ctx.daemon, ctx.log, ctx.stop
    outage = _Backoff(1.0, max(daemon.interval, 60.0))
    supervisor = os.environ.get(ENV_SUPERVISOR_PID)
    # Claims a cycle took before the database went away outlive it (the cycle failed): handed
    # back once the database answers again, as a stop would, instead of waiting out their lease.
    stale_claims = False
    outcome = "ok"
    while not stop.is_set() and not _orphaned(ctx, supervisor):
        started, error, more = utcnow(), None, False
        clock, outcome = time.perf_counter(), "ok"
        ctx.cycle.start()
        try:
            ctx.heartbeat()  # rate-limited: back-to-back cycles do not write it every time
            if stale_claims:
                released = ctx.db.run(partial(_release_claims, owner=ctx.owner))
                stale_claims = False
                log.info("database back; released %d job(s) claimed before it went", released)
            more = bool(spec.run_once(ctx))
            outage.reset()
            delay = (
                0.0
                if more
                else daemon.interval * random.uniform(1 - daemon.jitter, 1 + daemon.jitter)
            )
        except Exception as exc:
            if is_unavailable(exc):
                outcome, stale_claims = "db_unavailable", True
                delay = outage.next()
                log.error("database unavailable (%s); retrying in %.0fs", short_error(exc), delay)
            else:
                outcome = "error"
                delay = daemon.interval
                error = traceback.format_exc()
                log.exception("cycle failed")
        metrics.DAEMON_CYCLE_SECONDS.labels(ctx.name).observe(time.perf_counter() - clock)
        metrics.DAEMON_CYCLES.labels(ctx.name, outcome).inc()
        try:
            ctx.db.run(
                partial(
                    liveness.record_cycle,
                    role=ctx.name,
                    instance=ctx.instance,
                    started=started,
                    ended=utcnow(),
                    error=error,
                )
            )
        except Exception as exc:
            if not is_unavailable(exc):
                log.exception("cannot record the cycle")
        ctx.cycle.end()
        if once:
            return outcome
        _sleep(ctx, delay, supervisor)
    return outcome


def _sleep(ctx: Context[Any], delay: float, supervisor: str | None) -> None:
    """Wait ``delay`` seconds or until stopped, heartbeating meanwhile."""
    deadline = time.monotonic() + delay
    step = ctx.settings.liveness.heartbeat_interval
    while not ctx.stop.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        if ctx.stop.wait(min(remaining, step)) or _orphaned(ctx, supervisor):
            return
        try:
            ctx.heartbeat()
        except Exception as exc:
            ctx.log.error("heartbeat failed: %s", short_error(exc))


def _orphaned(ctx: Context[Any], supervisor: str | None) -> bool:
    """Whether this daemon was started by an actd that has gone away (then it stops)."""
    if supervisor and str(os.getppid()) != supervisor:
        ctx.log.error("supervisor (pid %s) has gone away: stopping", supervisor)
        ctx.stop.set()
        return True
    return False


def close_cache(ctx: Context[Any]) -> None:
    """Close what the daemon kept in ``ctx.cache`` (objects with a ``close()``) and empty it.

    Called at every stop, clean or after a failed cycle: clients and back ends release their
    connections and files here. One failing ``close()`` is logged and does not keep the others
    from being closed.
    """
    kept = list(ctx.cache.items())
    ctx.cache.clear()
    for key, value in kept:
        close = getattr(value, "close", None)
        if not callable(close):
            continue
        try:
            close()
        except Exception as exc:
            ctx.log.error("cannot close %s at stop: %s", key, short_error(exc))


def _retire_dead_instances(ctx: Context[Any]) -> None:
    """Instances of this daemon on this host that died without stopping (SIGKILL, a crash):
    mark them stopped and hand back their claims now, instead of after ``dead_after`` and
    their leases. Their processes are gone, so nothing of theirs still works on those jobs."""

    def retire(conn: Any) -> dict[str, int]:
        dead = liveness.retire_dead(conn, ctx.name, socket.gethostname(), keep=ctx.instance)
        return {i: _release_claims(conn, owner=f"{ctx.name}@{i}") for i in dead}

    try:
        retired = ctx.db.run(retire)
    except Exception as exc:  # their leases and dead_after still free the work
        ctx.log.warning("cannot retire dead instances: %s", short_error(exc))
        return
    for instance, released in retired.items():
        ctx.log.info(
            "instance %s is no longer running: marked stopped, %d claimed job(s) handed back",
            instance,
            released,
        )


def _release_claims(conn: Any, *, owner: str) -> int:
    """Hand back every claim of ``owner`` (both layers); how many."""
    return sum(release(conn, layer, owner) for layer in Layer)


def _clean_stop(ctx: Context[Any]) -> None:
    """Hand back this instance's claims and mark it stopped (best effort: leases expire anyway)."""

    def stop_rows(conn: Any) -> int:
        released = _release_claims(conn, owner=ctx.owner)
        liveness.unregister(conn, ctx.name, ctx.instance)
        return released

    try:
        released = ctx.db.run(stop_rows)
        ctx.log.info("stopped; released %d claimed job(s)", released)
    except Exception as exc:
        ctx.log.error(
            "stopped without releasing claims (they expire with their lease): %s", short_error(exc)
        )


def install_reopen_signal() -> None:
    """SIGUSR1 reopens the log files; a SIGUSR1 that arrived while blocked (actd starts its
    daemons so) is delivered now, to this handler."""
    signal.signal(signal.SIGUSR1, lambda *_: logs.request_reopen())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
