"""``actctl panda``: the PanDA reporting backlog, what PanDA was last told, and credentials.

The backlog is read from ``panda_jobs.next_report_at`` (the propagator's schedule, by
:mod:`act.ctl.backlog_queries`): jobs whose report is overdue, and how late the oldest one is —
the heartbeat lag PanDA sees. PanDA declares a job lost after hours without a heartbeat, so a
growing lag is the first thing to watch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection

from act.atlas.credentials import credential_lifetimes
from act.atlas.panda_settings import PandaServerSettings
from act.common.timeutil import utcnow
from act.ctl import backlog_queries as queries
from act.ctl import durations, output

NOTHING_YET = "(nothing yet)"


@dataclass(frozen=True)
class Backlog:
    """The reporting schedule at ``now``."""

    now: datetime
    scheduled: int  # jobs with a report still to send (next_report_at set)
    overdue: int  # of which due now or earlier
    oldest_due: datetime | None  # the most overdue job's due time
    failing: int  # scheduled jobs whose last report(s) failed
    most_failures: int
    told: dict[str, int]  # what PanDA was last told, over the scheduled jobs
    stopped: dict[str, int]  # jobs PanDA stopped by a command, per command, not yet over

    @property
    def lag(self) -> timedelta | None:
        """How late the most overdue report is (the heartbeat lag); None when none is."""
        if self.oldest_due is None or self.oldest_due > self.now:
            return None
        return self.now - self.oldest_due


def backlog(conn: Connection, now: datetime | None = None) -> Backlog:
    """Read the reporting backlog (every query goes through the next_report_at index)."""
    now = now or utcnow()
    late = queries.overdue(conn, now)
    scheduled = queries.scheduled(conn)
    told = {status or NOTHING_YET: count for status, count in queries.last_told(conn).items()}
    stopped = queries.stopped_by_command(conn)
    return Backlog(
        now=now,
        scheduled=scheduled.jobs,
        overdue=late.jobs,
        oldest_due=late.oldest_due,
        failing=scheduled.failing,
        most_failures=scheduled.most_failures,
        told=dict(sorted(told.items())),
        stopped=dict(sorted(stopped.items())),
    )


def credential_rows(settings: PandaServerSettings) -> list[dict[str, Any]]:
    """Each configured PanDA role's credential: where, when it expires, time left, problem."""
    return [
        {
            "role": info.role,
            "kind": info.kind,
            "path": info.path,
            "expires": info.expires,
            "remaining_seconds": (
                int(info.remaining.total_seconds()) if info.remaining is not None else None
            ),
            "problem": info.problem,
        }
        for info in credential_lifetimes(settings)
    ]


def to_json(found: Backlog, credentials: list[dict[str, Any]]) -> dict[str, Any]:
    lag = found.lag
    return {
        "now": found.now,
        "scheduled": found.scheduled,
        "overdue": found.overdue,
        "oldest_due": found.oldest_due,
        "lag_seconds": lag.total_seconds() if lag is not None else None,
        "failing": found.failing,
        "most_failures": found.most_failures,
        "told": found.told,
        "stopped_by_command": found.stopped,
        "credentials": credentials,
    }


def to_text(found: Backlog, credentials: list[dict[str, Any]]) -> str:
    summary = [
        ("jobs with a report to send", found.scheduled),
        ("overdue", found.overdue),
        ("heartbeat lag (oldest overdue)", durations.clock(found.lag) or "none"),
        ("failing (last report refused)", found.failing),
        ("most failures of one job", found.most_failures),
    ]
    parts = [
        "PanDA reporting",
        output.table(summary, [], fmt="plain"),
        "",
        "What PanDA was last told (jobs with a report to send)",
        output.table(found.told.items(), ["told", "jobs"]) if found.told else "(no jobs)",
    ]
    if found.stopped:
        parts += [
            "",
            "Stopped by a PanDA command",
            output.table(found.stopped.items(), ["command", "jobs"]),
        ]
    parts += ["", "PanDA credentials"]
    if credentials:
        rows = [
            [
                c["role"],
                c["kind"],
                c["path"],
                c["expires"],
                durations.clock(c["remaining_seconds"]),
                c["problem"],
            ]
            for c in credentials
        ]
        parts.append(output.table(rows, ["role", "kind", "path", "expires", "left", "problem"]))
    else:
        parts.append("(none configured under panda.roles)")
    return "\n".join(parts)
