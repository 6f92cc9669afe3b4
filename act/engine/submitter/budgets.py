"""Step 4 of the submitter, first half: each CE's room this cycle (:class:`Budget`) and which CE
each ``tosubmit`` job goes to (:func:`assign`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection

from act.common.timeutil import seconds
from act.engine import breaker, queries, strategies
from act.engine.backend import CE
from act.engine.config import Context
from act.engine.queries import CERow, ToSubmit
from act.engine.runtime import EnginePool
from act.engine.submitter.jobs import (
    QUEUED_STATES,
    RUNNING_STATES,
)


@dataclass
class Budget:
    """What one CE may still take this cycle."""

    ce: CE
    row: CERow
    left: int
    probe: bool = False
    assigned: list[ToSubmit] = field(default_factory=list)


def budgets(
    ctx: Context, engine: EnginePool, now: datetime
) -> tuple[dict[str, Budget], dict[str, str]]:
    """Each configured CE's room this cycle, and why the others have none."""
    settings = ctx.settings.engine

    def read(conn: Connection) -> tuple[list[CERow], dict[str, Counter[str]]]:
        breaker.sync_ces(conn, settings.ces, now=now)
        counts = queries.jobs_per_state_at(conn, settings.ces, [*QUEUED_STATES, *RUNNING_STATES])
        return queries.ce_rows(conn, settings.ces), counts

    rows, counts = ctx.db.run(read)
    room: dict[str, Budget] = {}
    closed: dict[str, str] = {}
    for row in rows:
        name = row.endpoint
        ce = engine.ce(name)
        admission = breaker.admits(row, now=now, settings=settings.breaker)
        if not admission.ok:
            closed[name] = admission.reason
            continue
        try:
            engine.backend(ce)  # made once and kept; a CE whose back end cannot be made gets none
        except Exception as error:
            closed[name] = f"its back end cannot be made ({error})"
            continue
        queued = sum(counts[name][state] for state in QUEUED_STATES)
        running = sum(counts[name][state] for state in RUNNING_STATES)
        max_queued = row.max_queued if row.max_queued is not None else ce.settings.max_queued
        max_running = row.max_running if row.max_running is not None else ce.settings.max_running
        left = min(ce.settings.max_per_cycle, int(max_queued) - queued)
        if max_running is not None:
            left = min(left, int(max_running) - running)
        last = row.last_submit_at
        if left <= 0:
            closed[name] = (
                f"full ({queued} queued of {max_queued}"
                + (f", {running} running of {max_running}" if max_running is not None else "")
                + ")"
            )
            continue
        if last is not None and now < last + seconds(ce.settings.min_spacing):
            closed[name] = f"last batch less than {ce.settings.min_spacing:g}s ago"
            continue
        if admission.probe:
            left = 1
        room[name] = Budget(ce, row, left, probe=admission.probe)
    return room, closed


def assign(
    rows: Sequence[ToSubmit],
    room: Mapping[str, Budget],
    closed: Mapping[str, str],
    chooser: strategies.Chooser,
    configured: Mapping[str, Any],
) -> dict[str, int]:
    """Give each job a CE with room (filling ``Budget.assigned``); returns why others wait."""
    waiting: Counter[str] = Counter()
    for row in rows:
        candidates = strategies.names(row.candidates) or strategies.names(row.ce_name)
        known = [name for name in candidates if name in configured]
        if not known:
            waiting["no configured candidate CE"] += 1
            continue
        available = {name for name, budget in room.items() if budget.left > 0}
        choices = strategies.eligible(known, strategies.names(row.excluded), available)
        if not choices:
            allowed = strategies.allowed(known, strategies.names(row.excluded))
            reasons = sorted(
                {f"{name}: {closed.get(name, 'no room left this cycle')}" for name in allowed}
            )
            waiting["; ".join(reasons)] += 1
            continue
        weights = {
            name: strategies.weight_of(room[name].row.success_score, room[name].ce.settings.weight)
            for name in choices
        }
        name = chooser.choose(choices, weights)
        room[name].left -= 1
        room[name].assigned.append(row)
    return dict(waiting)


def chooser_of(ctx: Context) -> strategies.Chooser:
    strategy = ctx.settings.engine.strategy
    found = ctx.cache.get("submitter_chooser")
    if not isinstance(found, strategies.Chooser) or found.strategy != strategy:
        found = strategies.Chooser(strategy)
        ctx.cache["submitter_chooser"] = found
    return found
