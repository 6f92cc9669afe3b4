"""The demo's summary: what a run ended with (:class:`Outcome`), act's final state of each job
next to what the PanDA test server recorded, as a table for the terminal and as
``<dir>/summary.json``, and where to look next."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from tabulate import tabulate

from act.common.db import Database
from act.common.schema import panda_jobs
from act.demo.progress import FINAL_STATES, PANDA_ORDER
from act.service.settings import Settings
from act.testing.panda import PandaTestServer


@dataclass
class Outcome:
    """What a run ended with (for the summary and the tests)."""

    ok: bool
    wall: float
    panda_ids: list[int]


def job_rows(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(
            conn.execute(
                sa.select(
                    panda_jobs.c.panda_id,
                    panda_jobs.c.state,
                    panda_jobs.c.log_url,
                    panda_jobs.c.error_code,
                    panda_jobs.c.error_text,
                ).order_by(panda_jobs.c.panda_id)
            )
        )


def url_path(url: str | None) -> Path | None:
    if not url or not url.startswith("file://"):
        return None
    return Path(unquote(urlsplit(url).path))


def _told(server: PandaTestServer, panda_id: int) -> str:
    return server.final_state(panda_id) or "no final report"


def summary(
    outcome: Outcome,
    rows: Sequence[Any],
    *,
    settings: Settings,
    directory: Path,
    config: Path,
    server: PandaTestServer,
) -> str:
    lines: list[str] = []
    by_state: dict[str, list[Any]] = {}
    for row in rows:
        by_state.setdefault(row.state, []).append(row)
    table = []
    for state in sorted(by_state, key=lambda s: PANDA_ORDER.index(s) if s in PANDA_ORDER else 99):
        told = Counter(_told(server, r.panda_id) for r in by_state[state])
        codes = Counter(r.error_code for r in by_state[state] if r.error_code)
        told_text = ", ".join(f"{k} {n}" for k, n in sorted(told.items()))
        code_text = ", ".join(f"{k} x{n}" for k, n in sorted(codes.items())) or "-"
        table.append([state, len(by_state[state]), told_text, code_text])
    missing = len(outcome.panda_ids) - len(rows)
    if missing > 0:
        table.append(["(not fetched)", missing, "-", "-"])
    rate = len(outcome.panda_ids) / outcome.wall * 60 if outcome.wall > 0 else 0.0
    verdict = "all jobs reported" if outcome.ok else "NOT all jobs reported (timeout)"
    lines.append(
        f"act demo: {len(outcome.panda_ids)} jobs, {verdict} in {outcome.wall:.1f} s "
        f"({rate:.0f} jobs/min)"
    )
    lines.append("")
    lines.append(
        tabulate(
            table,
            headers=["act state", "jobs", "PanDA test server recorded", "error codes"],
            tablefmt="simple",
        )
    )
    web = Path(settings.weblogs.dir or Path(settings.root) / "weblogs")
    lines += ["", f"web area (pilot logs, as the PanDA monitor links them): {web}"]
    examples = [r for r in rows if r.log_url][:3]
    for row in examples:
        path = url_path(row.log_url)
        there = "" if path is None or path.is_file() else "  (not published)"
        lines.append(f"  {row.panda_id}: {row.log_url}{there}")
    if examples:
        day_dir = url_path(examples[0].log_url)
        if day_dir is not None:
            lines.append(f"  all of them: ls {day_dir.parent}")
    lines += [
        f"outputs on storage (file://):           {directory / 'storage'}",
        f"daemon logs:                            {settings.log_dir}",
        f"config:                                 {config}",
        f"inspect:  actctl --config {config} status",
        f"          actctl --config {config} jobs --state donefailed",
    ]
    if rows:
        lines.append(f"          actctl --config {config} job {rows[0].panda_id}")
    if not outcome.ok:
        stuck = [
            r for r in rows if r.state not in FINAL_STATES or not server.final_state(r.panda_id)
        ]
        lines += ["", "stuck jobs (PandaID: act state, PanDA's record):"]
        for row in stuck[:20]:
            lines.append(f"  {row.panda_id}: {row.state}, {_told(server, row.panda_id)}")
        if len(stuck) > 20:
            lines.append(f"  ... and {len(stuck) - 20} more")
        lines.append(f"look at the daemon logs in {settings.log_dir}")
    return "\n".join(lines)


def write_record(
    path: Path, outcome: Outcome, rows: Sequence[Any], server: PandaTestServer
) -> None:
    """``<dir>/summary.json``: the run, and per job act's final state next to what the PanDA
    test server recorded (final state, number of final reports, pilot error code)."""
    act_rows = {row.panda_id: row for row in rows}
    jobs = {}
    for panda_id in outcome.panda_ids:
        row = act_rows.get(panda_id)
        told = server.last_fields(panda_id)
        jobs[str(panda_id)] = {
            "act_state": row.state if row else None,
            "error_code": row.error_code if row else None,
            "log_url": row.log_url if row else None,
            "panda_final_state": server.final_state(panda_id),
            "panda_final_reports": server.final_reports(panda_id),
            "panda_pilot_error_code": told.get("pilot_error_code", told.get("pilotErrorCode")),
        }
    record = {"ok": outcome.ok, "wall_seconds": round(outcome.wall, 3), "jobs": jobs}
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
