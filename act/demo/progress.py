"""The demo's progress: jobs per state in the job store and final reports at the PanDA test
server (:class:`Snapshot`), shown as one line (:class:`Display`) while :mod:`act.demo.run` waits."""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

import sqlalchemy as sa

from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs, processes
from act.common.states import P_FINAL, STATES, Layer, in_table_order
from act.testing.panda import PandaTestServer

#: act's final PanDA-layer states: a job in one is done (as far as act is concerned).
FINAL_STATES = tuple(str(state) for state in in_table_order(Layer.PANDA, P_FINAL))
#: act's PanDA-layer states in pipeline order (for the progress line).
PANDA_ORDER = tuple(str(state) for state in STATES[Layer.PANDA])
#: Seconds between two progress lines when the output is not a terminal.
PLAIN_EVERY = 5.0


@dataclass
class Snapshot:
    panda: Counter[str]
    ce: Counter[str]
    reported: int
    jobs: int
    daemons_up: int = 0
    daemons: int = 0

    def finished(self) -> bool:
        in_final = sum(self.panda[state] for state in FINAL_STATES)
        return self.reported >= self.jobs and in_final >= self.jobs

    def line(self, elapsed: float) -> str:
        act_part = " ".join(f"{s} {self.panda[s]}" for s in PANDA_ORDER if self.panda[s])
        ce_part = " ".join(f"{s} {n}" for s, n in sorted(self.ce.items()))
        starting = (
            f"daemons up {self.daemons_up}/{self.daemons} | "
            if self.daemons_up < self.daemons
            else ""
        )
        return (
            f"[{elapsed:5.1f}s] {starting}reported to PanDA: {self.reported}/{self.jobs} | "
            f"act: {act_part or '-'} | CE: {ce_part or '-'}"
        )


def _counts(conn: sa.Connection, column: sa.Column[Any]) -> Counter[str]:
    rows = conn.execute(sa.select(column, sa.func.count()).group_by(column)).all()
    return Counter({str(state): int(count) for state, count in rows})


def snapshot(
    db: Database, server: PandaTestServer, ids: Sequence[int], daemons: int = 0
) -> Snapshot:
    """Jobs per state in the job store, final reports at the test server, daemons running (a
    liveness row, not stopped)."""
    with db.read() as conn:
        panda = _counts(conn, panda_jobs.c.state)
        ce = _counts(conn, ce_jobs.c.state)
        up = conn.execute(
            sa.select(sa.func.count()).where(processes.c.stopped_at.is_(None))
        ).scalar_one()
    reported = sum(1 for panda_id in ids if server.final_state(panda_id) is not None)
    return Snapshot(panda, ce, reported, len(ids), int(up), daemons)


class Display:
    """One progress line: redrawn in place on a terminal, printed every few seconds otherwise."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last_plain = -PLAIN_EVERY
        self.drawn = False

    def show(self, text: str, elapsed: float, *, force: bool = False) -> None:
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            self.stream.write("\r\x1b[K" + text[:width])
            self.drawn = True
        elif force or elapsed - self.last_plain >= PLAIN_EVERY:
            self.stream.write(text + "\n")
            self.last_plain = elapsed
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False
