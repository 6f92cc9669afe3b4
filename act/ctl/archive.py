"""Archived jobs in actctl: ``job``/``jobs --panda-id`` find a job retention archived and say so;
``actctl db prune [--dry-run]`` runs (or counts) a retention pass (:mod:`act.atlas.retention`).

``db prune`` uses the retention daemon's settings (``daemons.retention``: its options and
``batch``; the defaults when it is not configured) and works batch after batch, each its own
transaction, until nothing is due, after removing the directories of archived jobs a kill left.
It needs ``--reason`` and records one operator action. ``--dry-run`` changes nothing: it
prints how many rows each table would lose (and ``archived_jobs`` gain) now.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Any

import click
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.atlas import retention
from act.common.config import DaemonSettings
from act.common.daemon import Context
from act.common.schema import archived_jobs
from act.common.timeutil import utcnow
from act.ctl import audit, output
from act.service.settings import Settings

Row = dict[str, Any]


def archived_job(conn: Connection, panda_id: int) -> Row | None:
    """The archive row of PanDA job ``panda_id``, or None if it was not archived."""
    found = conn.execute(sa.select(archived_jobs).where(archived_jobs.c.panda_id == panda_id))
    row = found.mappings().one_or_none()
    return None if row is None else {k: v for k, v in row.items() if k != "id"}


def archived_text(row: Row) -> str:
    """What ``actctl job`` shows of an archived job."""
    head = (
        f"PanDA job {row['panda_id']} is archived (since {output.cell(row['archived_at'])}): "
        "its rows and history were removed by retention; this is what was kept."
    )
    body = output.table(
        [(name, output.cell(value)) for name, value in row.items()], ("field", "value")
    )
    return f"{head}\n{body}"


def archived_json(row: Row) -> Row:
    return {"archived": True, **row}


def _options(settings: Settings) -> tuple[retention.RetentionOptions, DaemonSettings]:
    daemon = settings.daemons.get("retention") or DaemonSettings(batch=500)
    return retention.RetentionOptions.model_validate(daemon.options), daemon


def _context(settings: Settings, db: Any) -> Context[Any]:
    options, daemon = _options(settings)
    return Context(
        name="retention",
        instance=f"actctl:{socket.gethostname()}:{os.getpid()}",
        settings=settings,
        daemon=daemon,
        options=options,
        db=db,
        log=logging.getLogger("act.retention"),
        stop=threading.Event(),
    )


def register(group: click.Group, pass_app: Callable[..., Any]) -> None:
    """Add ``prune`` to the ``actctl db`` group."""

    @group.command()
    @click.option("--dry-run", is_flag=True, help="Only show what would be archived and deleted.")
    @click.option("--reason", help="Why (recorded in actctl history); not with --dry-run.")
    @click.option("--who", help="Who prunes (default: the OS user).")
    @pass_app
    def prune(app: Any, dry_run: bool, reason: str | None, who: str | None) -> None:
        """Run one retention pass now: archive final jobs past their window, delete old rows.

        Only jobs final for longer than daemons.retention.options.final_after (PanDA accepted
        their final report, nothing claims them, every CE job cleaned) are archived.
        """
        why = None if dry_run else audit.check_reason(reason or "")
        db = app.checked()
        settings: Settings = app.settings()
        options, daemon = _options(settings)
        if dry_run:
            with db.read() as conn:
                found = retention.plan(conn, options, utcnow())
            rows = list(found.counts().items())
            click.echo("would archive and delete (dry run, nothing changed):")
            click.echo(output.table(rows, ("table", "rows")))
            return
        ctx = _context(settings, db)
        swept = retention.sweep_orphans(ctx)
        jobs = ce = history = actions = dirs = 0
        while True:
            result = retention.run_pass(ctx, daemon.batch)
            jobs += len(result.archived.panda_ids)
            ce += result.archived.ce_jobs
            history += result.archived.transitions
            actions += result.actions
            dirs += result.dirs
            if not result.archived.panda_ids and not result.actions:
                break
        counts = {"panda_jobs": jobs, "ce_jobs": ce, "transitions": history}
        counts.update(operator_actions=actions, directories=dirs + swept)
        db.run(
            lambda conn: audit.record(
                conn,
                who=audit.person(who),
                command="db prune",
                target="db",
                reason=why or "",
                details=counts,
            )
        )
        click.echo(f"archived {jobs} job(s); deleted:")
        click.echo(output.table(list(counts.items()), ("what", "count")))
