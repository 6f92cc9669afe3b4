"""``actctl report``: one page on how act is doing, per PanDA queue and per CE.

Per queue (PanDA layer): jobs per state, the oldest job in each state, the jobs that failed in
the window with their top error codes, and the heartbeat lag (how late the most overdue report
to PanDA is). Per CE (CE layer): jobs per state, the oldest job in each state, the jobs that
failed in the window with their top errors, and the CE's breaker and drain state.

Everything is a handful of GROUP BY queries, each served by an index, whatever the number of
jobs: counts and the oldest job per state come from the ``(queue, state, id)`` and
``(ce_endpoint, state, id)`` indexes (the oldest job of a state is the one fetched first, i.e.
the lowest id); failures come from the ``transitions`` history through its ``at`` index (only
the window's rows are read); the heartbeat lag from the ``next_report_at`` index.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.atlas import report_backlog
from act.common.job_counts import UNASSIGNED
from act.common.schema import ce_jobs, ces, panda_jobs
from act.common.schema import transitions as history
from act.common.states import C_FAILED, P_FAILED, STATES, Layer, in_table_order
from act.common.timeutil import utcnow
from act.ctl import durations, output
from act.ctl.queries import Row
from act.engine import breaker

#: The states a job "fails" into: a job counts once however many of them it entered.
FAILED_STATES = {Layer.PANDA: P_FAILED, Layer.CE: C_FAILED}
#: Most error codes (or texts) shown per queue or CE.
TOP_ERRORS = 5
#: How much of an error text is compared when CE errors are grouped, and shown.
ERROR_PREFIX = 200
#: Most ids in one ``IN (...)`` list.
CHUNK = 500
DEFAULT_WINDOW = "1h"


@dataclass(frozen=True)
class Scope:
    """What the report covers: one queue and/or one CE (None: all), failures since ``since``."""

    queue: str | None
    ce: str | None
    since: datetime
    now: datetime


# --- the queries ---------------------------------------------------------------------------------


def _key(name: Any) -> str:
    return UNASSIGNED if name is None else str(name)


def _in_chunks(ids: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start : start + CHUNK]


def _per_state(
    conn: Connection,
    table: sa.Table,
    group: sa.Column[Any],
    *,
    wanted: str | None,
    shown: dict[str, str],
    now: datetime,
) -> dict[str, dict[str, Any]]:
    """{name: {"states": {state: n}, "total": n, "oldest": {state: job}}}: one GROUP BY over the
    (group, state, id) index, then the oldest job (lowest id) of each group by primary key,
    with its columns ``shown`` ({column: label})."""
    stmt = sa.select(group, table.c.state, sa.func.count(), sa.func.min(table.c.id)).group_by(
        group, table.c.state
    )
    if wanted is not None:
        stmt = stmt.where(group == wanted)
    found: dict[str, dict[str, Any]] = {}
    oldest_ids: dict[int, tuple[str, str]] = {}
    for name, state, number, first in conn.execute(stmt):
        entry = found.setdefault(_key(name), {"states": {}, "total": 0, "oldest": {}})
        entry["states"][str(state)] = int(number)
        entry["total"] += int(number)
        oldest_ids[int(first)] = (_key(name), str(state))
    # Not the whole row: a PanDA job's spec can be megabytes.
    names = dict.fromkeys(("id", *shown, "created_at", "state_changed_at"))
    columns = [table.c[name] for name in names]
    for chunk in _in_chunks(sorted(oldest_ids)):
        for row in conn.execute(sa.select(*columns).where(table.c.id.in_(chunk))).mappings():
            name, state = oldest_ids[int(row["id"])]
            found[name]["oldest"][state] = {
                **{label: row[name] for name, label in shown.items()},
                "created_at": row["created_at"],
                "state_changed_at": row["state_changed_at"],
                "age_seconds": _seconds(now - row["created_at"]),
                "in_state_seconds": _seconds(now - row["state_changed_at"]),
            }
    layer = Layer.PANDA if table is panda_jobs else Layer.CE
    for entry in found.values():
        entry["states"] = _in_state_order(entry["states"], layer)
        entry["oldest"] = _in_state_order(entry["oldest"], layer)
    return found


def _seconds(delta: timedelta) -> float:
    return round(delta.total_seconds(), 3)


def _in_state_order(by_state: dict[str, Any], layer: Layer) -> dict[str, Any]:
    order = list(STATES[layer])
    return dict(
        sorted(by_state.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else 99)
    )


def _failed_ids(conn: Connection, layer: Layer, scope: Scope) -> list[int]:
    """Ids of the jobs of ``layer`` that entered a failed state in the window, read through the
    index on transitions.at. The layer is compared as ``layer || ''`` so that no planner takes
    the (layer, job_id) index instead (SQLite does): that would read the layer's whole history,
    where the window holds only its last hour or so."""
    stmt = (
        sa.select(history.c.job_id)
        .where(
            history.c.at.between(scope.since, scope.now),
            history.c.layer.concat("") == layer.value,
            history.c.to_state.in_(in_table_order(layer, FAILED_STATES[layer])),
        )
        .distinct()
    )
    return sorted(int(job_id) for job_id in conn.execute(stmt).scalars())


@dataclass
class _Error:
    jobs: int
    text: str | None


def _failures(
    conn: Connection,
    table: sa.Table,
    group: sa.Column[Any],
    *,
    kind: sa.ColumnElement[Any],
    ids: list[int],
    wanted: str | None,
) -> tuple[dict[str, int], dict[str, dict[Any, _Error]]]:
    """For the failed jobs ``ids``: {name: how many}, and {name: {error kind: jobs, a text}}.

    The ids go in by primary key (in chunks), so the plan is the same on every backend whatever
    the table's size: handing the database the subquery instead let MariaDB's planner read the
    whole (group, state, id) index to probe the subquery's result.
    """
    text = sa.func.min(_prefix(table.c.error_text))
    counted: dict[str, int] = {}
    errors: dict[str, dict[Any, _Error]] = {}
    for chunk in _in_chunks(ids):
        stmt = (
            sa.select(group, kind, sa.func.count(), text)
            .where(table.c.id.in_(chunk))
            .group_by(group, kind)
        )
        if wanted is not None:
            stmt = stmt.where(group == wanted)
        for name, key, number, example in conn.execute(stmt):
            counted[_key(name)] = counted.get(_key(name), 0) + int(number)
            found = errors.setdefault(_key(name), {}).setdefault(key, _Error(0, example))
            found.jobs += int(number)
            if example is not None and (found.text is None or example < found.text):
                found.text = example
    return counted, errors


def _top(errors: dict[Any, _Error], label: str | None) -> list[Row]:
    """The TOP_ERRORS most frequent errors (ties: by kind), each as a JSON-ready row."""
    ranked = sorted(errors.items(), key=lambda kv: (-kv[1].jobs, str(kv[0]), str(kv[1].text)))
    return [
        {
            **({label: key} if label else {}),
            "jobs": error.jobs,
            "error_text": output.one_line(error.text) or None,
        }
        for key, error in ranked[:TOP_ERRORS]
    ]


def _prefix(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
    # Literal numbers, not bound parameters: PostgreSQL must see the same expression in the
    # SELECT list and in GROUP BY.
    return sa.func.substr(column, sa.literal_column("1"), sa.literal_column(str(ERROR_PREFIX)))


def _heartbeats(conn: Connection, scope: Scope) -> dict[str, Row]:
    """{queue: overdue reports and the lag of the most overdue}, as
    :func:`act.atlas.report_backlog.overdue_by_queue` reads them."""
    return {
        _key(queue): {
            "overdue": lag.overdue,
            "oldest_due": lag.oldest_due,
            "lag_seconds": _seconds(scope.now - lag.oldest_due),
        }
        for queue, lag in report_backlog.overdue_by_queue(
            conn, scope.now, queue=scope.queue
        ).items()
    }


def _all_heartbeats(conn: Connection, now: datetime) -> Row:
    """Reports scheduled and overdue over all queues, and the lag: what ``actctl panda`` shows
    first (:func:`act.ctl.panda.backlog`), from the next_report_at index alone (backlog() also
    reads every scheduled job's row for what PanDA was told, which the report does not show)."""
    t = panda_jobs
    scheduled = conn.execute(
        sa.select(sa.func.count()).where(t.c.next_report_at >= report_backlog.SCHEDULED_SINCE)
    ).scalar_one()
    overdue, oldest = conn.execute(
        sa.select(sa.func.count(), sa.func.min(t.c.next_report_at)).where(
            t.c.next_report_at.between(report_backlog.SCHEDULED_SINCE, now)
        )
    ).one()
    return {
        "all_queues": True,
        "scheduled": int(scheduled),
        "overdue": int(overdue),
        "oldest_due": oldest,
        "lag_seconds": _seconds(now - oldest) if oldest is not None else None,
    }


def _ce_rows(conn: Connection, wanted: str | None) -> dict[str, Row]:
    stmt = sa.select(ces)
    if wanted is not None:
        stmt = stmt.where(ces.c.endpoint == wanted)
    return {str(row["endpoint"]): dict(row) for row in conn.execute(stmt).mappings()}


# --- the report ----------------------------------------------------------------------------------


#: What the oldest job of a state is shown with: {column: label}.
PANDA_JOB = {"panda_id": "pandaid"}
CE_JOB = {"id": "id", "ce_job_id": "ce_job_id", "pandaid": "pandaid"}


def build(
    conn: Connection,
    scope: Scope,
    *,
    configured_queues: Iterable[str] = (),
    configured_ces: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report as one JSON-ready object (see the module docstring)."""
    configured_ces = configured_ces or {}
    pj, cj = panda_jobs, ce_jobs
    queue_states = _per_state(
        conn, pj, pj.c.queue, wanted=scope.queue, shown=PANDA_JOB, now=scope.now
    )
    queue_failures, queue_errors = _failures(
        conn,
        pj,
        pj.c.queue,
        kind=pj.c.error_code,
        ids=_failed_ids(conn, Layer.PANDA, scope),
        wanted=scope.queue,
    )
    lags = _heartbeats(conn, scope)
    ce_states = _per_state(conn, cj, cj.c.ce_endpoint, wanted=scope.ce, shown=CE_JOB, now=scope.now)
    ce_failures, ce_errors = _failures(
        conn,
        cj,
        cj.c.ce_endpoint,
        kind=_prefix(cj.c.error_text),
        ids=_failed_ids(conn, Layer.CE, scope),
        wanted=scope.ce,
    )
    ce_rows = _ce_rows(conn, scope.ce)
    overall = _all_heartbeats(conn, scope.now)

    queue_names = set(queue_states) | set(queue_failures) | set(lags)
    queue_names |= {q for q in configured_queues if scope.queue in (None, q)}
    empty: dict[str, Any] = {"states": {}, "total": 0, "oldest": {}}
    queues = {
        name: {
            **queue_states.get(name, empty),
            "failed_in_window": queue_failures.get(name, 0),
            "top_errors": _top(queue_errors.get(name, {}), "error_code"),
            "heartbeat": lags.get(name, {"overdue": 0, "oldest_due": None, "lag_seconds": None}),
        }
        for name in sorted(queue_names)
    }
    ce_names = set(ce_states) | set(ce_failures) | set(ce_rows)
    ce_names |= {c for c in configured_ces if scope.ce in (None, c)}
    ce_report = {}
    for name in sorted(ce_names):
        row = ce_rows.get(name, {})
        settings = configured_ces.get(name)
        ce_report[name] = {
            **ce_states.get(name, empty),
            "failed_in_window": ce_failures.get(name, 0),
            "top_errors": _top(ce_errors.get(name, {}), None),
            "configured": settings is not None,
            "backend": getattr(settings, "backend", None) or row.get("backend"),
            "enabled": bool(row.get("enabled", True)),
            "breaker": row.get("breaker", breaker.CLOSED),
            "breaker_forced": row.get("breaker_forced"),
            "consecutive_failures": int(row.get("failures") or 0),
            "reason": row.get("reason"),
        }
    return {
        "now": scope.now,
        "window": {
            "since": scope.since,
            "seconds": _seconds(scope.now - scope.since),
            "failed_states": [str(s) for s in in_table_order(Layer.PANDA, P_FAILED)],
        },
        "filters": {"queue": scope.queue, "ce": scope.ce},
        "heartbeat": overall,
        "queues": queues,
        "ces": ce_report,
    }


# --- text ----------------------------------------------------------------------------------------


def _states_in(records: dict[str, Row], layer: Layer) -> list[str]:
    present = {state for record in records.values() for state in record["states"]}
    columns = [state for state in STATES[layer] if state in present]
    return columns + sorted(present.difference(STATES[layer]))


def _window_label(report: Row) -> str:
    return f"failed ({durations.short(report['window']['seconds'])})"


def _queue_table(report: Row) -> str:
    queues = report["queues"]
    if not queues:
        return "(no queues)"
    columns = _states_in(queues, Layer.PANDA)
    rows = [
        [
            name,
            *(record["states"].get(state, 0) for state in columns),
            record["total"],
            record["failed_in_window"],
            record["heartbeat"]["overdue"],
            durations.clock(record["heartbeat"]["lag_seconds"]),
        ]
        for name, record in queues.items()
    ]
    headers = ["queue", *columns, "total", _window_label(report), "overdue", "heartbeat lag"]
    return output.table(rows, headers)


def _ce_table(report: Row) -> str:
    found = report["ces"]
    if not found:
        return "(no CEs)"
    columns = _states_in(found, Layer.CE)
    rows = []
    for name, record in found.items():
        forced = record["breaker_forced"]
        rows.append(
            [
                name + ("" if record["configured"] else " (not configured)"),
                "yes" if record["enabled"] else "drained",
                f"forced {forced}" if forced else record["breaker"],
                *(record["states"].get(state, 0) for state in columns),
                record["total"],
                record["failed_in_window"],
            ]
        )
    headers = ["ce", "enabled", "breaker", *columns, "total", _window_label(report)]
    return output.table(rows, headers)


def _oldest_table(records: dict[str, Row], label: str, ids: list[str]) -> str:
    rows = [
        [
            name,
            state,
            *(job[key] for key in ids),
            durations.clock(job["age_seconds"]),
            durations.clock(job["in_state_seconds"]),
        ]
        for name, record in records.items()
        for state, job in record["oldest"].items()
    ]
    if not rows:
        return "(no jobs)"
    return output.table(rows, [label, "state", *ids, "age", "in state"])


def _errors_table(records: dict[str, Row], label: str, with_code: bool) -> str:
    rows = [
        [name, *([error["error_code"]] if with_code else []), error["jobs"], error["error_text"]]
        for name, record in records.items()
        for error in record["top_errors"]
    ]
    if not rows:
        return "(no failures)"
    return output.table(rows, [label, *(["code"] if with_code else []), "jobs", "error"])


def to_text(report: Row) -> str:
    beat = report["heartbeat"]
    since = output.cell(report["window"]["since"])
    return "\n".join(
        [
            f"act report at {output.cell(report['now'])}; failures since {since}",
            "",
            "PanDA jobs per queue",
            _queue_table(report),
            "",
            "Oldest PanDA job per queue and state (the first fetched)",
            _oldest_table(report["queues"], "queue", ["pandaid"]),
            "",
            f"Top errors of PanDA jobs failed since {since}",
            _errors_table(report["queues"], "queue", with_code=True),
            "",
            "CE jobs per CE",
            _ce_table(report),
            "",
            "Oldest CE job per CE and state (the first made)",
            _oldest_table(report["ces"], "ce", ["ce_job_id", "pandaid"]),
            "",
            f"Top errors of CE jobs failed since {since}",
            _errors_table(report["ces"], "ce", with_code=False),
            "",
            f"Heartbeats to PanDA (all queues): {beat['overdue']} of {beat['scheduled']} overdue, "
            f"lag {durations.clock(beat['lag_seconds']) or 'none'}",
        ]
    )


def register(cli: click.Group, pass_app: Callable[..., Any]) -> None:
    """Add ``report`` to actctl's top-level group."""

    @cli.command("report")
    @click.option("--queue", help="Only this PanDA queue (narrows the PanDA-layer part).")
    @click.option("--ce", help="Only this CE (narrows the CE-layer part).")
    @click.option(
        "--since",
        "window",
        type=durations.Duration(),
        default=DEFAULT_WINDOW,
        show_default=True,
        help="Count failures in this window (90s, 30m, 1h, 2d, 1h30m).",
    )
    @click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
    @pass_app
    def report_command(
        app: Any, queue: str | None, ce: str | None, window: timedelta, as_json: bool
    ) -> None:
        """Per queue and CE: jobs per state, oldest job per state, recent failures and their
        top errors, heartbeat lag, breaker state.

        --queue narrows the PanDA-layer part (queues), --ce the CE-layer part (CEs).
        """
        settings = app.settings()
        now = utcnow()
        scope = Scope(queue=queue, ce=ce, since=now - window, now=now)
        with app.checked().read() as conn:
            found = build(
                conn,
                scope,
                configured_queues=settings.queues.serve,
                configured_ces=settings.engine.ces,
            )
        click.echo(output.to_json(found) if as_json else to_text(found))
