"""actctl's CE commands: ``actctl ces`` shows every CE, ``actctl ce ...`` steers one.

``ce open|close`` force the circuit breaker (:mod:`act.engine.breaker`) open (no new jobs) or
closed (jobs go to the CE whatever its failures) until ``ce auto`` hands it back to the automatic
rules: closed, opened by ``breaker.failures`` consecutive failures, one probe job after
``breaker.cooldown``, closed again when the probe is accepted. ``ce drain`` stops new jobs going
to a CE (its jobs go on) and ``ce enable`` ends that. Each records who (the OS user, or
``--who``) and why, on the CE's row and in ``operator_actions`` (:mod:`act.ctl.audit`), in the
same transaction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.engine import Connection

from act.common import exitcodes, job_counts
from act.common.states import Layer
from act.common.timeutil import utcnow
from act.ctl import audit, output, queries
from act.ctl.options import json_flag
from act.ctl.queries import Row
from act.engine import breaker
from act.engine import queries as engine_queries
from act.engine.settings import CESettings

COLUMNS = (
    "ce",
    "backend",
    "enabled",
    "breaker",
    "failures",
    "jobs",
    "last_submit_at",
    "last_error",
)


def ce_records(conn: Connection, configured: dict[str, CESettings]) -> list[Row]:
    """One record per CE in the config or the ``ces`` table, with its jobs per state."""
    rows = engine_queries.ces_shown(conn)
    counts = job_counts.ce_counts(conn)
    records = []
    for name in sorted(set(rows) | set(configured)):
        row = rows.get(name)
        settings = configured.get(name)
        by_state = counts.get(name, {})
        records.append(
            {
                "ce": name,
                "configured": settings is not None,
                "backend": settings.backend if settings else (row.backend if row else None),
                "enabled": row.enabled if row else True,
                "breaker": row.breaker if row else breaker.CLOSED,
                "breaker_forced": row.breaker_forced if row else None,
                "failures": row.failures if row else 0,
                "opened_at": row.opened_at if row else None,
                "probe_job_id": row.probe_job_id if row else None,
                "success_score": row.success_score if row else None,
                "last_error": row.last_error if row else None,
                "last_error_at": row.last_error_at if row else None,
                "last_submit_at": row.last_submit_at if row else None,
                "reason": row.reason if row else None,
                "updated_by": row.updated_by if row else None,
                "updated_at": row.updated_at if row else None,
                "jobs": queries.in_state_order(by_state, Layer.CE),
            }
        )
    return records


def _breaker_cell(record: Row) -> str:
    forced = record["breaker_forced"]
    if forced:
        return f"forced {forced} (auto: {record['breaker']})"
    return str(record["breaker"])


def ces_text(records: list[Row]) -> str:
    if not records:
        return "(no CEs configured)"
    rows = [
        [
            record["ce"] + ("" if record["configured"] else " (not configured)"),
            record["backend"],
            "yes" if record["enabled"] else "drained",
            _breaker_cell(record),
            record["failures"],
            " ".join(f"{state}={n}" for state, n in record["jobs"].items()),
            record["last_submit_at"],
            output.one_line(record["last_error"], 60),
        ]
        for record in records
    ]
    return "\n".join([output.table(rows, COLUMNS), *output.operator_notes(records, "ce")])


def register(cli: click.Group, pass_app: Callable[..., Any], failure: type[Exception]) -> None:
    """Add ``ces`` and ``ce`` to actctl's top-level group."""

    @cli.command("ces")
    @json_flag("a table")
    @pass_app
    def ces_command(app: Any, as_json: bool) -> None:
        """Every CE: back end, drained or not, breaker state, failures, jobs per state."""
        configured = app.settings().engine.ces
        with app.checked().read() as conn:
            records = ce_records(conn, configured)
        click.echo(output.to_json(records) if as_json else ces_text(records))

    @cli.group("ce")
    def ce_group() -> None:
        """Steer one CE: force its breaker, or drain it (records who and why)."""

    def action(name: str, summary: str, apply: Callable[..., None]) -> None:
        @ce_group.command(name, help=summary)
        @click.argument("ce")
        @click.option("--reason", required=True, help="Why (shown by `actctl ces`).")
        @click.option("--who", default=None, help="Who decides (default: the OS user).")
        @pass_app
        def command(app: Any, ce: str, reason: str, who: str | None) -> None:
            why = audit.check_reason(reason)
            person = audit.person(who)
            database = app.checked()
            settings = app.settings()

            def change(conn: Connection) -> bool:
                now = utcnow()
                breaker.sync_ces(conn, settings.engine.ces, now=now)
                if not engine_queries.ce_known(conn, ce):
                    return False
                apply(conn, ce, who=person, why=why, now=now)
                audit.record(conn, who=person, command=f"ce {name}", target=f"ce:{ce}", reason=why)
                return True

            if not database.run(change):
                raise failure(f"no CE {ce!r} (see `actctl ces`)", exitcodes.NOT_FOUND)
            click.echo(f"{ce}: {summary.lower().rstrip('.')} (by {person}: {why})")

    action("open", "Breaker forced open: no new jobs.", _forcer("open"))
    action(
        "close", "Breaker forced closed: jobs go to it whatever its failures.", _forcer("closed")
    )
    action(
        "auto",
        "Breaker back to automatic: opened by consecutive failures, probed after the cool-down.",
        _forcer(None),
    )
    action("drain", "Drained: no new jobs; its jobs go on.", _enabler(False))
    action("enable", "Enabled: new jobs again.", _enabler(True))


def _forcer(state: Any) -> Callable[..., None]:
    def apply(conn: Connection, ce: str, **what: Any) -> None:
        breaker.force(conn, ce, state, **what)

    return apply


def _enabler(enabled: bool) -> Callable[..., None]:
    def apply(conn: Connection, ce: str, **what: Any) -> None:
        breaker.set_enabled(conn, ce, enabled, **what)

    return apply
