"""actd's watchdog over its daemons' cycles.

Each daemon process marks its current cycle in ``<root>/run/cycles/<name>.<slot>`` and every
progress of it (a heartbeat, the next job of a batch; :class:`act.common.liveness.CycleMark`).
actd keeps one :class:`CycleWatch` per process: when the mark has not changed for
``supervisor.hung_after`` seconds (0: never), actd logs :func:`hung_line` and SIGKILLs the
process, which is then restarted as if it had crashed (the same back-off). Progress is timed on
actd's own monotonic clock, so a jump of the wall clock restarts nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from act.common import liveness


@dataclass
class CycleWatch:
    """What actd last saw of one daemon process's cycle mark, and when it changed."""

    mark: tuple[int, int] | None = None  # None: no cycle seen (or between cycles)
    seen: float = 0.0  # time.monotonic() when the mark last changed

    def forget(self) -> None:
        """The process is gone or new: nothing seen of it yet."""
        self.mark = None

    def stalled(self, path: Path, now: float, limit: float) -> float | None:
        """Seconds the cycle marked at ``path`` has gone without progress, if more than
        ``limit``; None while it progresses, between cycles, or before the limit."""
        mark = liveness.cycle_progress(path)
        if mark != self.mark:  # a new cycle, progress, or between cycles
            self.mark, self.seen = mark, now
            return None
        if mark is None or now - self.seen <= limit:
            return None
        return now - self.seen


def hung_line(label: str, pid: int, *, path: Path, stalled: float, limit: float, log: Path) -> str:
    """The one line actd logs before it kills a hung daemon process."""
    started = liveness.cycle_started(path)
    ran = f"{time.time() - started:.0f}s" if started is not None else "?"
    return (
        f"{label} (pid {pid}) hung: its cycle has run {ran}, {stalled:.0f}s without progress "
        f"(supervisor.hung_after {limit:g}s); killing it to restart it (see {log})"
    )
