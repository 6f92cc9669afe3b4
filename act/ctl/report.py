"""``actctl report``: one page on how act is doing, per PanDA queue and per CE.

Per queue (PanDA layer): jobs per state, the oldest job in each state, the jobs that failed in
the window with their top error codes, and the heartbeat lag (how late the most overdue report
to PanDA is). Per CE (CE layer): jobs per state, the oldest job in each state, the jobs that
failed in the window with their top errors, and the CE's breaker and drain state.

Everything is a handful of GROUP BY queries, each served by an index whatever the number of
jobs (:mod:`act.ctl.report_queries`); this module shapes their results into the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import click
from sqlalchemy.engine import Connection

from act.atlas import report_backlog
from act.common.states import P_FAILED, STATES, Layer, in_table_order
from act.common.timeutil import utcnow
from act.ctl import durations, output
from act.ctl import report_queries as queries
from act.ctl.queries import Row
from act.ctl.report_queries import ErrorCount, OldestCEJob, OldestPandaJob
from act.engine import breaker
from act.engine import queries as engine_queries

#: Most error codes (or texts) shown per queue or CE.
TOP_ERRORS = 5
DEFAULT_WINDOW = "1h"


@dataclass(frozen=True)
class Scope:
    """What the report covers: one queue and/or one CE (None: all), failures since ``since``."""

    queue: str | None
    ce: str | None
    since: datetime
    now: datetime


# --- the queries' results, shaped ----------------------------------------------------------------


def _per_state(
    conn: Connection,
    layer: Layer,
    oldest: type[OldestPandaJob | OldestCEJob],
    *,
    wanted: str | None,
    shown: dict[str, str],
    now: datetime,
) -> dict[str, dict[str, Any]]:
    """{name: {"states": {state: n}, "total": n, "oldest": {state: job}}}, the oldest job of
    each state with its fields ``shown`` ({field: label})."""
    found: dict[str, dict[str, Any]] = {}
    oldest_ids: dict[int, tuple[str, str]] = {}
    for count in queries.counts_per_state(conn, layer, wanted=wanted):
        entry = found.setdefault(count.name, {"states": {}, "total": 0, "oldest": {}})
        entry["states"][count.state] = count.jobs
        entry["total"] += count.jobs
        oldest_ids[count.oldest_id] = (count.name, count.state)
    for job in queries.oldest_jobs(conn, oldest, oldest_ids):
        name, state = oldest_ids[job.id]
        found[name]["oldest"][state] = {
            **{label: getattr(job, field) for field, label in shown.items()},
            "created_at": job.created_at,
            "state_changed_at": job.state_changed_at,
            "age_seconds": _seconds(now - job.created_at),
            "in_state_seconds": _seconds(now - job.state_changed_at),
        }
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


def _top(errors: dict[Any, ErrorCount], label: str | None) -> list[Row]:
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


def _heartbeats(conn: Connection, scope: Scope) -> dict[str, Row]:
    """{queue: overdue reports and the lag of the most overdue}, as
    :func:`act.atlas.report_backlog.overdue_by_queue` reads them."""
    return {
        queries.name_of(queue): {
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
    first (:func:`act.ctl.panda.backlog`)."""
    found = queries.report_schedule(conn, now)
    return {
        "all_queues": True,
        "scheduled": found.scheduled,
        "overdue": found.overdue,
        "oldest_due": found.oldest_due,
        "lag_seconds": _seconds(now - found.oldest_due) if found.oldest_due is not None else None,
    }


# --- the report ----------------------------------------------------------------------------------


#: What the oldest job of a state is shown with: {field: label}.
PANDA_JOB = {"panda_id": "panda_id"}
CE_JOB = {"id": "id", "ce_job_id": "ce_job_id", "panda_id": "panda_id"}


def build(
    conn: Connection,
    scope: Scope,
    *,
    configured_queues: Iterable[str] = (),
    configured_ces: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report as one JSON-ready object (see the module docstring)."""
    configured_ces = configured_ces or {}
    queue_states = _per_state(
        conn, Layer.PANDA, OldestPandaJob, wanted=scope.queue, shown=PANDA_JOB, now=scope.now
    )
    failed_ids = queries.failed_ids(conn, Layer.PANDA, scope.since, scope.now)
    queue_failed = queries.failures(conn, Layer.PANDA, failed_ids, wanted=scope.queue)
    queue_failures, queue_errors = queue_failed.counted, queue_failed.errors
    lags = _heartbeats(conn, scope)
    ce_states = _per_state(
        conn, Layer.CE, OldestCEJob, wanted=scope.ce, shown=CE_JOB, now=scope.now
    )
    failed_ids = queries.failed_ids(conn, Layer.CE, scope.since, scope.now)
    ce_failed = queries.failures(conn, Layer.CE, failed_ids, wanted=scope.ce)
    ce_failures, ce_errors = ce_failed.counted, ce_failed.errors
    ce_rows = engine_queries.ces_shown(conn, scope.ce)
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
        row = ce_rows.get(name)
        settings = configured_ces.get(name)
        ce_report[name] = {
            **ce_states.get(name, empty),
            "failed_in_window": ce_failures.get(name, 0),
            "top_errors": _top(ce_errors.get(name, {}), None),
            "configured": settings is not None,
            "backend": getattr(settings, "backend", None) or (row.backend if row else None),
            "enabled": row.enabled if row else True,
            "breaker": row.breaker if row else breaker.CLOSED,
            "breaker_forced": row.breaker_forced if row else None,
            "consecutive_failures": row.failures if row else 0,
            "reason": row.reason if row else None,
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
            _oldest_table(report["queues"], "queue", ["panda_id"]),
            "",
            f"Top errors of PanDA jobs failed since {since}",
            _errors_table(report["queues"], "queue", with_code=True),
            "",
            "CE jobs per CE",
            _ce_table(report),
            "",
            "Oldest CE job per CE and state (the first made)",
            _oldest_table(report["ces"], "ce", ["ce_job_id", "panda_id"]),
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
