"""The circuit breaker of each CE, kept in the ``ces`` table so every process shares it.

* **closed**: the CE gets jobs. Each failure (a submission call that raised
  :class:`~act.engine.backend.CEUnavailable` or whose jobs all failed transiently, or a job that
  failed fast) adds one to ``failures``; a success resets it. ``breaker.failures`` consecutive
  failures open the breaker.
* **open**: no jobs until ``breaker.cooldown`` seconds after ``opened_at``; then one probe job is
  let through (:func:`start_probe`) and the breaker is **half_open**.
* **half_open**: no further jobs while the probe is out. Its successful submission closes the
  breaker; its failure opens it again with a new cool-down. A probe that never reports back (its
  submitter died) is replaced after another cool-down.

On top of that, an operator may force the breaker open or closed (``breaker_forced``, which wins
over the automatic state until set back to automatic) and drain a CE (``enabled`` false: no new
jobs, the jobs already there go on). ``success_score`` is an exponentially weighted moving
average of recent outcomes (1 success, 0 failure) that the ``weighted`` strategy uses. Every
change of state is logged with ``ce=<name>``.

Callers pass the open transaction; reading and updating a row happen under its row lock.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.rows import fetch, select_of
from act.common.schema import ces
from act.common.timeutil import iso, seconds, utcnow
from act.engine.queries import CERow
from act.engine.settings import BreakerSettings, CESettings

log = logging.getLogger(__name__)

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
#: Weight of the newest outcome in ``success_score``.
ALPHA = 0.2
#: ``last_error`` is cut to this many characters.
ERROR_LEN = 2000


@dataclass(frozen=True)
class Admission:
    """Whether a CE may get new jobs now, and why not; ``probe``: only one, as a probe."""

    ok: bool
    state: str
    reason: str = ""
    probe: bool = False


def ewma(score: float | None, outcome: float) -> float:
    """The new success score after one outcome (1.0 success, 0.0 failure)."""
    previous = 1.0 if score is None else score
    return (1 - ALPHA) * previous + ALPHA * outcome


def _row(conn: Connection, ce: str) -> CERow:
    """The CE's row, locked for this transaction; created (unknown back end) if missing."""
    stmt = select_of(CERow, ces).where(ces.c.name == ce).with_for_update()
    found = fetch(conn, CERow, stmt)
    if not found:
        _insert(conn, ce, backend="", now=None)
        found = fetch(conn, CERow, stmt)
    return found[0]


def _insert(conn: Connection, ce: str, *, backend: str, now: datetime | None) -> None:
    conn.execute(
        sa.insert(ces).values(
            endpoint=ce, backend=backend, updated_at=now or utcnow(), breaker=CLOSED, failures=0
        )
    )


def _update(conn: Connection, ce: str, **values: Any) -> None:
    conn.execute(sa.update(ces).where(ces.c.name == ce).values(**values))


def sync_ces(conn: Connection, configured: Mapping[str, CESettings], *, now: datetime) -> None:
    """Insert a row for each configured CE that has none; correct a changed back-end name."""
    rows = {
        row.endpoint: row.backend
        for row in conn.execute(sa.select(ces.c.name, ces.c.backend)).all()
    }
    for name, settings in sorted(configured.items()):
        if name not in rows:
            try:
                with conn.begin_nested():
                    _insert(conn, name, backend=settings.backend, now=now)
            except sa.exc.IntegrityError:  # another process inserted it meanwhile
                pass
        elif rows[name] != settings.backend:
            _update(conn, name, backend=settings.backend)


def record_failure(
    conn: Connection, ce: str, *, error: str, now: datetime, settings: BreakerSettings
) -> str:
    """Count one failure of ``ce``; returns the breaker's new (automatic) state."""
    row = _row(conn, ce)
    failures = row.failures + 1
    state = row.breaker
    values: dict[str, Any] = {
        "failures": failures,
        "last_error": error[:ERROR_LEN],
        "last_error_at": now,
        "success_score": ewma(row.success_score, 0.0),
    }
    new = state
    if state == HALF_OPEN or (state == CLOSED and failures >= settings.failures):
        new = OPEN
        values.update(breaker=OPEN, opened_at=now, probe_job_id=None, probe_at=None)
    _update(conn, ce, **values)
    if new != state:
        why = "probe failed" if state == HALF_OPEN else f"{failures} consecutive failures"
        log.warning(
            "ce=%s: breaker %s -> open (%s; cool-down %.0fs): %s",
            ce,
            state,
            why,
            settings.cooldown,
            error,
        )
    return new


def record_success(conn: Connection, ce: str, *, now: datetime) -> str:
    """Count one success of ``ce``; returns the breaker's new (automatic) state.

    A success closes a half-open breaker (the probe got through). An open breaker stays open: a
    job sent before it opened proves little; the probe decides.
    """
    row = _row(conn, ce)
    state = row.breaker
    values: dict[str, Any] = {"failures": 0, "success_score": ewma(row.success_score, 1.0)}
    new = CLOSED if state == HALF_OPEN else state
    if new != state:
        values.update(breaker=CLOSED, opened_at=None, probe_job_id=None, probe_at=None)
        log.info("ce=%s: breaker half_open -> closed (the probe job was accepted)", ce)
    _update(conn, ce, **values)
    return new


def admits(row: CERow, *, now: datetime, settings: BreakerSettings) -> Admission:
    """Whether the CE of this ``ces`` row takes new jobs now (see the module's docstring)."""
    state = row.breaker
    forced = row.breaker_forced
    if not row.enabled:
        return Admission(False, state, "drained by an operator")
    if forced == OPEN:
        return Admission(False, state, "breaker forced open by an operator")
    if CLOSED in (forced, state):
        return Admission(True, state)
    if state == OPEN:
        opened = row.opened_at or now
        until = opened + seconds(settings.cooldown)
        if now < until:
            return Admission(False, state, f"breaker open until {iso(until)}")
        return Admission(True, state, "cool-down over: one probe job", probe=True)
    # half_open: one probe is out; replace it only if it never came back.
    probe_at = row.probe_at or now
    if now < probe_at + seconds(settings.cooldown):
        return Admission(False, state, f"breaker half-open: probe job {row.probe_job_id} out")
    return Admission(True, state, "probe job never came back: another probe", probe=True)


def start_probe(conn: Connection, ce: str, job_id: int, *, now: datetime) -> None:
    """Mark the breaker half-open with ``job_id`` as its probe."""
    row = _row(conn, ce)
    _update(conn, ce, breaker=HALF_OPEN, probe_job_id=job_id, probe_at=now)
    log.info("ce=%s: breaker %s -> half_open (probe job id=%d)", ce, row.breaker, job_id)


def force(
    conn: Connection,
    ce: str,
    state: Literal["open", "closed"] | None,
    *,
    who: str,
    why: str,
    now: datetime,
) -> None:
    """Force the breaker open or closed, or (``None``) hand it back to the automatic rules."""
    row = _row(conn, ce)
    values: dict[str, Any] = {
        "breaker_forced": state,
        "reason": why,
        "updated_by": who,
        "updated_at": now,
    }
    if state is None and row.breaker != CLOSED:
        # Back to automatic: an old open state would otherwise outlive the operator's decision.
        values.update(breaker=CLOSED, failures=0, opened_at=None, probe_job_id=None, probe_at=None)
    _update(conn, ce, **values)
    log.warning(
        "ce=%s: breaker %s by %s: %s",
        ce,
        f"forced {state}" if state else "back to automatic",
        who,
        why,
    )


def set_enabled(
    conn: Connection, ce: str, enabled: bool, *, who: str, why: str, now: datetime
) -> None:
    """Drain a CE (no new jobs; its jobs go on) or open it for new jobs again."""
    _row(conn, ce)
    _update(conn, ce, enabled=enabled, reason=why, updated_by=who, updated_at=now)
    log.warning("ce=%s: %s by %s: %s", ce, "enabled" if enabled else "drained", who, why)
