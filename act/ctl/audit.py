"""The operators' record: who changed what through actctl, when and why (``operator_actions``).

Every actctl command that changes something calls :func:`record` inside the transaction of the
change, so the change and its record commit together or not at all. ``who`` is ``--who`` or the
OS user; ``--reason`` is required. ``actctl history`` lists the record, newest first.

Targets name what was changed: ``ce:NAME``, ``queue:NAME``, ``storage:ENDPOINT``, ``job:PANDA_ID``
for one job, ``jobs:<filter>`` for several (their PanDA ids are in ``details["panda_ids"]``).
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.schema import ENDPOINT_LEN, NAME_LEN, operator_actions
from act.common.timeutil import utcnow
from act.ctl import durations, output
from act.ctl.options import json_option, limit_option
from act.ctl.queries import Row

COLUMNS = ("at", "who", "command", "target", "reason", "details")


def person(who: str | None) -> str:
    """Who acts: ``--who`` when given, else the OS user."""
    return who.strip() if who and who.strip() else getpass.getuser()


def check_reason(reason: str) -> str:
    """The reason, stripped; a blank one is refused (every change says why)."""
    text = reason.strip()
    if not text:
        raise click.UsageError("--reason must say why (it is recorded)")
    return text


def record(
    conn: Connection,
    *,
    who: str,
    command: str,
    target: str,
    reason: str,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Write one ``operator_actions`` row in the caller's transaction."""
    if not reason.strip():
        raise ValueError("an operator action needs a reason")
    conn.execute(
        sa.insert(operator_actions).values(
            at=utcnow(),
            who=who[:NAME_LEN],
            command=command[:NAME_LEN],
            target=target[:ENDPOINT_LEN],
            reason=reason,
            details=None if details is None else json.dumps(dict(details), sort_keys=True),
        )
    )


def actions(
    conn: Connection,
    *,
    target: str | None = None,
    who: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[Row]:
    """Operator actions, newest first.

    ``target`` matches exactly (``queue:X``), or by name when it has no kind (``X`` finds
    ``queue:X`` and ``ce:X``); ``job:PANDA_ID`` also finds the multi-job actions that moved it.
    """
    t = operator_actions
    stmt = sa.select(t).order_by(t.c.at.desc(), t.c.id.desc())
    job = _job_target(target)
    if target is not None:
        if job is not None:
            found_in = sa.and_(t.c.target.startswith("jobs:"), t.c.details.contains(str(job)))
            stmt = stmt.where(sa.or_(t.c.target == target, found_in))
        elif ":" in target:
            stmt = stmt.where(t.c.target == target)
        else:
            stmt = stmt.where(
                sa.or_(t.c.target == target, t.c.target.endswith(":" + target, autoescape=True))
            )
    if who is not None:
        stmt = stmt.where(t.c.who == who)
    if since is not None:
        stmt = stmt.where(t.c.at >= since)
    if limit and job is None:
        stmt = stmt.limit(limit)
    rows = []
    for row in conn.execute(stmt).mappings():
        record_ = dict(row)
        record_["details"] = json.loads(row["details"]) if row["details"] else None
        if job is not None and record_["target"] != target and not _moved(record_, job):
            continue  # the id only appeared as part of a longer number, or as something else
        rows.append(record_)
    return rows[:limit] if limit else rows


def _job_target(target: str | None) -> int | None:
    if target is None or not target.startswith("job:"):
        return None
    try:
        return int(target[4:])
    except ValueError:
        return None


def _moved(record_: Row, panda_id: int) -> bool:
    details = record_["details"]
    return isinstance(details, dict) and panda_id in (details.get("panda_ids") or [])


def _details_cell(details: Any) -> str:
    if not isinstance(details, dict):
        return ""
    # The filter is in the target already; the ids are too many for a cell (see --json).
    shown = {k: v for k, v in details.items() if k not in ("panda_ids", "filter")}
    return output.one_line(" ".join(f"{k}={v}" for k, v in sorted(shown.items())), 60)


def history_text(rows: list[Row]) -> str:
    if not rows:
        return "(no operator actions recorded)"
    cells = [
        [
            r["at"],
            r["who"],
            r["command"],
            r["target"],
            output.one_line(r["reason"], 50),
            _details_cell(r["details"]),
        ]
        for r in rows
    ]
    return output.table(cells, COLUMNS)


def register(cli: click.Group, pass_app: Callable[..., Any], failure: type[Exception]) -> None:
    """Add ``history`` to actctl's top-level group."""

    @cli.command("history")
    @click.option("--target", help="Only actions on this (queue:X, ce:X, job:PANDA_ID, or a name).")
    @click.option("--who", help="Only actions by this person.")
    @click.option(
        "--since", type=durations.Duration(), help="Only actions this recent (30m, 2h, 7d)."
    )
    @limit_option("actions")
    @json_option
    @pass_app
    def history_command(
        app: Any,
        *,
        target: str | None,
        who: str | None,
        since: timedelta | None,
        limit: int,
        as_json: bool,
    ) -> None:
        """What operators changed through actctl, newest first: who, when, why."""
        start = utcnow() - since if since is not None else None
        with app.checked().read() as conn:
            rows = actions(conn, target=target, who=who, since=start, limit=limit)
        click.echo(output.to_json(rows) if as_json else history_text(rows))
