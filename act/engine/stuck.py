"""The "stuck in a state for too long" policy: every such rule of both layers, applied in one place.

``engine.stuck`` is one table of rules (layer, state, after, action), checked against the state
table when the config is loaded (:class:`act.engine.settings.StuckRule`). :func:`apply` moves the
jobs of each rule that have been in ``state`` for longer than ``after`` seconds to ``action``, as
the janitor, recording the rule as the reason in the transitions history. Jobs another daemon has
claimed are left alone (it is working on them); a cycle moves at most ``limit`` jobs in all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import partial

from sqlalchemy.engine import Connection

from act.common.claims import claim
from act.common.db import Database
from act.common.states import Actor, Layer
from act.common.timeutil import seconds, utcnow
from act.common.transitions import TABLES, transition
from act.engine.settings import StuckRule


@dataclass(frozen=True)
class Applied:
    rule: StuckRule
    label: str
    moved: int


def label(rule: StuckRule) -> str:
    """How a rule is named in logs and history: ``stuck: ce submitted > 604800s -> tocancel``."""
    return f"stuck: {rule.layer} {rule.state} > {rule.after:g}s -> {rule.action}"


def apply(
    db: Database,
    rules: list[StuckRule],
    *,
    owner: str,
    limit: int,
    lease: float = 60.0,
    now: datetime | None = None,
) -> list[Applied]:
    """Apply every rule once (at most ``limit`` jobs moved in all); what each one moved."""
    now = now or utcnow()
    results: list[Applied] = []
    budget = limit
    for rule in rules:
        moved = 0
        if budget > 0:
            moved = db.run(
                partial(_one, rule=rule, owner=owner, limit=budget, lease=lease, now=now)
            )
            budget -= moved
        results.append(Applied(rule, label(rule), moved))
    return results


def _one(
    conn: Connection, *, rule: StuckRule, owner: str, limit: int, lease: float, now: datetime
) -> int:
    layer = Layer(rule.layer)
    table = TABLES[layer]
    cutoff = now - seconds(rule.after)
    ids = claim(
        conn,
        layer,
        [rule.state],
        owner=owner,
        lease=lease,
        limit=limit,
        where=[table.c.state_changed_at < cutoff],
    )
    if not ids:
        return 0
    return len(
        transition(
            conn,
            layer,
            ids,
            rule.state,
            rule.action,
            actor=Actor.JANITOR,
            reason=label(rule),
            owner=owner,
        )
    )
