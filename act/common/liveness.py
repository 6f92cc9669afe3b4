"""Liveness rows of daemon processes, and the work split that follows from them.

Every daemon process owns one ``processes`` row, keyed by (role, instance). It refreshes
``heartbeat_at`` regularly; an instance whose heartbeat is older than ``dead_after`` seconds, or
that has stopped, is not live. A daemon starting (after actd restarted it, say) marks the
instances of its role on its host whose process is gone as stopped (:func:`retire_dead`). The
live instances of a role, sorted by instance name, define each
one's :class:`Shard`: instance *i* of *n* takes the rows whose ``id % n == i``. When an instance
dies, the others' next heartbeat gives them a new split that covers its share.

A daemon process run by actd also keeps a :class:`CycleMark`: a file that exists while a cycle
runs and changes as it makes progress, which actd watches to restart a daemon whose cycle has
hung (``supervisor.hung_after``, :mod:`act.common.supervisor`). A file, not the database: actd
reads it every fraction of a second without a connection, and a cycle hung in the database
still shows.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.schema import processes
from act.common.timeutil import seconds, utcnow


@dataclass(frozen=True)
class Shard:
    """This instance's part of the work: rows whose ``id % count == index``."""

    index: int
    count: int

    def owns(self, job_id: int) -> bool:
        return job_id % self.count == self.index


def register(conn: Connection, role: str, instance: str, host: str, pid: int) -> None:
    """Create (or revive) this process's liveness row."""
    now = utcnow()
    values = {
        "host": host,
        "pid": pid,
        "started_at": now,
        "heartbeat_at": now,
        "stopped_at": None,
        "last_error": None,
        "last_error_at": None,
    }
    updated = conn.execute(
        sa.update(processes)
        .where(processes.c.role == role, processes.c.instance == instance)
        .values(values)
    ).rowcount
    if not updated:
        conn.execute(sa.insert(processes).values(role=role, instance=instance, **values))


def beat(conn: Connection, role: str, instance: str, *, dead_after: float) -> Shard:
    """Refresh this instance's heartbeat and return its share of the work."""
    now = utcnow()
    mine = (processes.c.role == role) & (processes.c.instance == instance)
    updated = conn.execute(
        sa.update(processes).where(mine).values(heartbeat_at=now, stopped_at=None)
    ).rowcount
    if not updated:
        raise LookupError(f"no liveness row for {role} instance {instance}")
    live = live_instances(conn, role, now=now, dead_after=dead_after)
    return Shard(live.index(instance), len(live))


def live_instances(conn: Connection, role: str, *, now: datetime, dead_after: float) -> list[str]:
    """The live instances of ``role``, sorted."""
    rows = conn.execute(
        sa.select(processes.c.instance)
        .where(
            processes.c.role == role,
            processes.c.stopped_at.is_(None),
            processes.c.heartbeat_at >= now - seconds(dead_after),
        )
        .order_by(processes.c.instance)
    )
    return list(rows.scalars())


def record_cycle(
    conn: Connection,
    *,
    role: str,
    instance: str,
    started: datetime,
    ended: datetime,
    error: str | None,
) -> None:
    """Record one run_once cycle: its times, and its error if it raised."""
    values: dict[str, Any] = {
        "cycles": processes.c.cycles + 1,
        "last_cycle_started_at": started,
        "last_cycle_ended_at": ended,
        "last_cycle_seconds": (ended - started).total_seconds(),
        "heartbeat_at": ended,
    }
    if error is not None:
        values.update(errors=processes.c.errors + 1, last_error=error[:4000], last_error_at=ended)
    conn.execute(
        sa.update(processes)
        .where(processes.c.role == role, processes.c.instance == instance)
        .values(values)
    )


def unregister(conn: Connection, role: str, instance: str) -> None:
    """Mark this instance stopped, so the others take its share at their next heartbeat."""
    conn.execute(
        sa.update(processes)
        .where(processes.c.role == role, processes.c.instance == instance)
        .values(stopped_at=utcnow())
    )


def pid_running(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host (signal 0; another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def retire_dead(
    conn: Connection,
    role: str,
    host: str,
    *,
    keep: str,
    running: Callable[[int], bool] = pid_running,
) -> list[str]:
    """Mark stopped the instances of ``role`` on ``host`` (this host) whose process is gone —
    killed or crashed, so they never unregistered — and return them. Without this their share
    of the work would wait ``dead_after`` seconds. ``keep`` is the caller's own instance. A pid
    reused by another process counts as running: that instance then waits ``dead_after``."""
    rows = conn.execute(
        sa.select(processes.c.instance, processes.c.pid).where(
            processes.c.role == role,
            processes.c.host == host,
            processes.c.stopped_at.is_(None),
            processes.c.instance != keep,
        )
    ).all()
    dead = sorted(row.instance for row in rows if not running(int(row.pid)))
    if dead:
        conn.execute(
            sa.update(processes)
            .where(processes.c.role == role, processes.c.instance.in_(dead))
            .values(stopped_at=utcnow())
        )
    return dead


def prune(conn: Connection, *, older_than: float) -> int:
    """Delete rows of processes that stopped or went silent more than ``older_than`` s ago."""
    cutoff = utcnow() - seconds(older_than)
    result = conn.execute(sa.delete(processes).where(processes.c.heartbeat_at < cutoff))
    return int(result.rowcount)


def process_rows(conn: Connection, *, include_stopped: bool) -> list[dict[str, Any]]:
    """Daemon liveness rows by role and instance; stopped ones only if asked for."""
    stmt = sa.select(processes).order_by(processes.c.role, processes.c.instance)
    if not include_stopped:
        stmt = stmt.where(processes.c.stopped_at.is_(None))
    return [dict(row) for row in conn.execute(stmt).mappings()]


def process_status(
    row: Mapping[str, Any], *, dead_after: float, now: datetime | None = None
) -> str:
    """``live``, ``dead`` (silent for more than ``dead_after`` seconds) or ``stopped``."""
    if row["stopped_at"] is not None:
        return "stopped"
    age = ((now or utcnow()) - row["heartbeat_at"]).total_seconds()
    return "live" if age <= dead_after else "dead"


# -- the current cycle, for actd's watchdog ----------------------------------------------------

#: Set by actd for each daemon process it starts: the path of its :class:`CycleMark`.
ENV_CYCLE_FILE = "ACT_CYCLE_FILE"
#: Seconds between two progress marks of one cycle (each is one ``utime``).
PROGRESS_EVERY = 0.2


class CycleMark:
    """The file telling actd that a cycle runs and still makes progress.

    :meth:`start` writes it at a cycle's start (the start time, seconds since the epoch, a new
    inode); :meth:`progress` touches it (the daemon loop calls it at each heartbeat and each job
    of a batch, :class:`act.common.daemon.Context`); :meth:`end` removes it. actd restarts a
    daemon whose file has not changed for ``supervisor.hung_after`` seconds. Without a path (not
    under actd) it does nothing; a file that cannot be written (a full disk) only leaves the
    watchdog blind to that cycle, it never fails the cycle.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._running = False
        self._marked = 0.0

    @classmethod
    def from_env(cls) -> CycleMark:
        value = os.environ.get(ENV_CYCLE_FILE)
        return cls(Path(value) if value else None)

    def start(self) -> None:
        if self.path is None:
            return
        scratch = self.path.with_name(self.path.name + ".tmp")
        try:
            scratch.write_text(f"{time.time():.3f}\n")
            os.replace(scratch, self.path)
        except OSError:
            return
        self._running, self._marked = True, time.monotonic()

    def progress(self) -> None:
        if self.path is None or not self._running:
            return
        now = time.monotonic()
        if now - self._marked < PROGRESS_EVERY:
            return
        self._marked = now
        with contextlib.suppress(OSError):
            os.utime(self.path)

    def end(self) -> None:
        if self.path is None or not self._running:
            return
        self._running = False
        with contextlib.suppress(OSError):
            self.path.unlink(missing_ok=True)


def cycle_progress(path: Path) -> tuple[int, int] | None:
    """What changes with each start and progress mark of the cycle in ``path`` (its inode and
    modification time), or None when no cycle runs."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns


def cycle_started(path: Path) -> float | None:
    """When the cycle in ``path`` started (seconds since the epoch), or None."""
    try:
        return float(path.read_text())
    except (OSError, ValueError):
        return None
