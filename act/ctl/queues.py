"""actctl's queue commands: ``actctl queues`` lists the PanDA queues, ``actctl queue
enable|disable QUEUE`` switches fetching jobs for one on or off (records who and why).

A queue is known when it is configured under ``queues.serve`` or has a row in the ``queues``
table. The panda_fetcher reads ``queues.enabled`` (no row: enabled) and asks PanDA for no jobs
for a disabled queue; the jobs it already has go on. The row is created on the first switch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from sqlalchemy.engine import Connection

from act.atlas.queues import _BUILTIN, QueueSettings, QueuesSettings
from act.common import exitcodes, job_counts
from act.common.db import upsert
from act.common.schema import queues
from act.common.states import Layer
from act.common.timeutil import utcnow
from act.ctl import audit, output, queries, queue_queries
from act.ctl.options import json_flag
from act.ctl.queries import Row

COLUMNS = ("queue", "enabled", "max_jobs", "max_queued", "jobs")


def _configured_limit(settings: QueuesSettings, name: str, key: str) -> int | None:
    """The limit the config gives (the queue's entry, the defaults, the built-in; CRIC aside)."""
    entry: QueueSettings | None = settings.serve.get(name)
    for source in (entry, settings.defaults):
        value = getattr(source, key, None) if source is not None else None
        if value is not None:
            return int(value)
    builtin = _BUILTIN.get(key)
    return int(builtin) if builtin is not None else None


def queue_records(conn: Connection, settings: QueuesSettings) -> list[Row]:
    """One record per configured or recorded queue, with its jobs per state."""
    rows = queue_queries.queues_shown(conn)
    counts = job_counts.panda_counts(conn)
    records = []
    for name in sorted(set(rows) | set(settings.serve)):
        row = rows.get(name)
        by_state = counts.get(name, {})
        records.append(
            {
                "queue": name,
                "configured": name in settings.serve,
                "enabled": row.enabled if row else True,
                "max_jobs": row.max_jobs if row else None,
                "max_queued": row.max_queued if row else None,
                "config_max_jobs": _configured_limit(settings, name, "max_jobs"),
                "config_max_queued": _configured_limit(settings, name, "max_queued"),
                "reason": row.reason if row else None,
                "updated_by": row.updated_by if row else None,
                "updated_at": row.updated_at if row else None,
                "jobs": queries.in_state_order(by_state, Layer.PANDA),
            }
        )
    return records


def _limit_cell(record: Row, key: str) -> str:
    override = record[key]
    if override is not None:
        return f"{override} (set)"
    configured = record[f"config_{key}"]
    return "" if configured is None else str(configured)


def queues_text(records: list[Row]) -> str:
    if not records:
        return "(no queues configured under queues.serve)"
    cells = [
        [
            record["queue"] + ("" if record["configured"] else " (not configured)"),
            "yes" if record["enabled"] else "disabled",
            _limit_cell(record, "max_jobs"),
            _limit_cell(record, "max_queued"),
            " ".join(f"{state}={n}" for state, n in record["jobs"].items()),
        ]
        for record in records
    ]
    return "\n".join([output.table(cells, COLUMNS), *output.operator_notes(records, "queue")])


def switch(conn: Connection, name: str, *, enabled: bool, who: str, reason: str) -> None:
    """Set the queue's ``enabled`` flag (inserting its row if it has none)."""
    values = {"enabled": enabled, "reason": reason, "updated_by": who, "updated_at": utcnow()}
    upsert(conn, queues, queues.c.name, name, values)


def register(cli: click.Group, pass_app: Callable[..., Any], failure: type[Exception]) -> None:
    """Add ``queues`` and ``queue`` to actctl's top-level group."""

    @cli.command("queues")
    @json_flag("a table")
    @pass_app
    def queues_command(app: Any, as_json: bool) -> None:
        """Every PanDA queue: enabled or not (who, why), job limits, jobs per state.

        Limits marked "(set)" are the operator's, in the database; the others come from the
        config (queues.serve, queues.defaults; CRIC may give others).
        """
        settings = app.settings().queues
        with app.checked().read() as conn:
            records = queue_records(conn, settings)
        click.echo(output.to_json(records) if as_json else queues_text(records))

    @cli.group("queue")
    def queue_group() -> None:
        """Switch fetching new jobs for one PanDA queue on or off (records who and why)."""

    def action(name: str, enabled: bool, summary: str) -> None:
        @queue_group.command(name, help=summary)
        @click.argument("queue")
        @click.option("--reason", required=True, help="Why (shown by `actctl queues`).")
        @click.option("--who", default=None, help="Who decides (default: the OS user).")
        @pass_app
        def command(app: Any, queue: str, reason: str, who: str | None) -> None:
            why = audit.check_reason(reason)
            person = audit.person(who)
            configured = app.settings().queues.serve

            def change(conn: Connection) -> bool:
                if queue not in configured and not queue_queries.queue_known(conn, queue):
                    return False
                switch(conn, queue, enabled=enabled, who=person, reason=why)
                audit.record(
                    conn,
                    who=person,
                    command=f"queue {name}",
                    target=f"queue:{queue}",
                    reason=why,
                    details={"enabled": enabled},
                )
                return True

            if not app.checked().run(change):
                raise failure(f"no queue {queue!r} (see `actctl queues`)", exitcodes.NOT_FOUND)
            click.echo(f"{queue}: {summary.lower().rstrip('.')} (by {person}: {why})")

    action("disable", False, "Disabled: no new jobs fetched from PanDA; its jobs go on.")
    action("enable", True, "Enabled: new jobs fetched again.")
