"""How actctl shows things: tabulate tables for people, sorted JSON for programs.

Every function here returns text (or JSON-ready data) and prints nothing; times are ISO 8601 UTC
(:func:`act.common.timeutil.iso`) in both forms.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from tabulate import tabulate

from act.common.job_counts import Counts
from act.common.liveness import process_status
from act.common.states import STATES, Edge, Layer, edges
from act.common.timeutil import iso
from act.ctl.queries import JobDetail, Row

#: How much of a job spec or CE job description the human output shows without --full.
TRUNCATE = 2000
#: How much of an error text fits in one table cell.
ERROR_WIDTH = 80
#: Columns shown after the row's table, as a block of text of their own.
LONG_COLUMNS = {"spec", "description"}
LAYER_TITLES = {Layer.PANDA: "PanDA layer", Layer.CE: "CE layer"}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot show {type(value).__name__} as JSON")


def to_json(data: Any) -> str:
    """Indented JSON with sorted keys; datetimes as ISO UTC strings."""
    return json.dumps(data, sort_keys=True, indent=2, default=_json_default)


def cell(value: Any) -> Any:
    """A value as a table cell: times in ISO UTC, None as an empty cell."""
    if isinstance(value, datetime):
        return iso(value)
    if value is None:
        return ""
    return value


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str], fmt: str = "simple") -> str:
    return tabulate(
        [[cell(value) for value in row] for row in rows],
        headers=list(headers),
        tablefmt=fmt,
        disable_numparse=True,
    )


def one_line(text: str | None, width: int = ERROR_WIDTH) -> str:
    """A one-line summary of a (possibly multi-line) message, at most ``width`` characters.

    For a Python traceback that is the exception's line (SQLAlchemy follows it with the SQL and
    a "Background on this error" link, which say nothing of the cause); otherwise its first line.
    """
    if not text:
        return ""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = _exception_line(lines) if lines[0].startswith(_TRACEBACK) else lines[0]
    return line if len(line) <= width else line[: width - 3] + "..."


_TRACEBACK = "Traceback (most recent call last)"
#: The line naming an exception in a traceback: ``module.SomeError: message``.
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning)\b[^:]*:")


def _exception_line(lines: list[str]) -> str:
    """The line of the (last) exception of a traceback; its last line if none looks like one."""
    frames = [i for i, line in enumerate(lines) if line.startswith('File "')]
    after = lines[frames[-1] + 1 :] if frames else lines
    return next((line for line in after if _EXCEPTION.match(line)), lines[-1])


# --- status ------------------------------------------------------------------------------------


def status_json(panda: Counts, ce: Counts) -> dict[str, Counts]:
    return {"panda": panda, "ce": ce}


def counts_table(counts: Counts, layer: Layer, label: str) -> str:
    """One row per queue (or CE), one column per state that occurs, in STATES order, and a total."""
    if not counts:
        return "(no jobs)"
    present = {state for by_state in counts.values() for state in by_state}
    columns = [state for state in STATES[layer] if state in present]
    columns += sorted(present.difference(STATES[layer]))  # a state this act does not know
    rows = [
        [name, *(by_state.get(state, 0) for state in columns), sum(by_state.values())]
        for name, by_state in sorted(counts.items())
    ]
    return table(rows, [label, *columns, "total"])


def status_text(panda: Counts, ce: Counts) -> str:
    return "\n".join(
        [
            "PanDA jobs per queue",
            counts_table(panda, Layer.PANDA, "queue"),
            "",
            "CE jobs per CE",
            counts_table(ce, Layer.CE, "ce"),
        ]
    )


# --- jobs --------------------------------------------------------------------------------------

JOB_COLUMNS = (
    "panda_id",
    "queue",
    "state",
    "panda_status",
    "attempt",
    "ce_name",
    "ce_state",
    "ce_job_id",
    "state_changed_at",
)


def jobs_text(rows: Sequence[Row]) -> str:
    if not rows:
        return "(no jobs)"
    body = [[*(row[name] for name in JOB_COLUMNS), _error(row)] for row in rows]
    return table(body, [*JOB_COLUMNS, "error"])


def _error(row: Row) -> str:
    text = one_line(row["error_text"])
    if row["error_code"] is None:
        return text
    return f"{row['error_code']}: {text}" if text else str(row["error_code"])


# --- job ---------------------------------------------------------------------------------------

HISTORY_COLUMNS = ("layer", "job_id", "at", "from_state", "to_state", "actor", "reason")


def job_json(detail: JobDetail, links: dict[str, Any] | None = None) -> dict[str, Any]:
    found = {"panda_job": detail.panda_job, "ce_jobs": detail.ce_jobs, "history": detail.history}
    if links is not None:
        found["links"] = links
    return found


def job_text(detail: JobDetail, *, full: bool, links: str | None = None) -> str:
    parts = ["PanDA job", _record(detail.panda_job, full)]
    for number, ce_job in enumerate(detail.ce_jobs, 1):
        parts += ["", f"CE job {number} of {len(detail.ce_jobs)}", _record(ce_job, full)]
    if not detail.ce_jobs:
        parts += ["", "CE jobs: none"]
    if links is not None:
        parts += ["", "Links and logs", links]
    parts += ["", "History (both layers, oldest first)"]
    rows = [[row[name] for name in HISTORY_COLUMNS] for row in detail.history]
    parts.append(table(rows, HISTORY_COLUMNS) if rows else "(none)")
    return "\n".join(parts)


def _record(row: Row, full: bool) -> str:
    """Every column of a row as field/value lines, long text columns last as blocks."""
    short = [(name, value) for name, value in row.items() if name not in LONG_COLUMNS]
    text = table(short, ["field", "value"])
    for name in (name for name in row if name in LONG_COLUMNS):
        text += "\n\n" + _block(name, row[name], full)
    return text


def _block(name: str, value: str | None, full: bool) -> str:
    if value is None:
        return f"{name}: (none)"
    if full or len(value) <= TRUNCATE:
        return f"{name} ({len(value)} characters):\n{value}"
    return (
        f"{name} ({len(value)} characters, first {TRUNCATE} shown; --full shows all):\n"
        f"{value[:TRUNCATE]}"
    )


# --- processes ---------------------------------------------------------------------------------

PROCESS_COLUMNS = (
    "role",
    "instance",
    "host",
    "pid",
    "status",
    "heartbeat_age",
    "cycles",
    "errors",
    "last_cycle_ended_at",
    "last_cycle_seconds",
    "last_error",
)


def process_records(rows: Sequence[Row], *, dead_after: float, now: datetime) -> list[Row]:
    """The fields ``actctl processes`` shows, with the status and heartbeat age worked out."""
    return [
        {
            "role": row["role"],
            "instance": row["instance"],
            "host": row["host"],
            "pid": row["pid"],
            "status": process_status(row, dead_after=dead_after, now=now),
            "heartbeat_at": row["heartbeat_at"],
            "heartbeat_age": round((now - row["heartbeat_at"]).total_seconds(), 3),
            "stopped_at": row["stopped_at"],
            "cycles": row["cycles"],
            "errors": row["errors"],
            "last_cycle_ended_at": row["last_cycle_ended_at"],
            "last_cycle_seconds": row["last_cycle_seconds"],
            "last_error": one_line(row["last_error"], width=200) or None,
            "last_error_at": row["last_error_at"],
        }
        for row in rows
    ]


def processes_text(records: Sequence[Row]) -> str:
    if not records:
        return "(no processes)"
    return table([_process_cells(record) for record in records], PROCESS_COLUMNS)


def _process_cells(record: Row) -> list[Any]:
    seconds = record["last_cycle_seconds"]
    shown = {
        **record,
        "heartbeat_age": f"{record['heartbeat_age']:.1f}s",
        "last_cycle_seconds": None if seconds is None else f"{seconds:.3f}s",
        "last_error": one_line(record["last_error"]),
    }
    return [shown[name] for name in PROCESS_COLUMNS]


# --- states ------------------------------------------------------------------------------------


def _actors(edge: Edge) -> list[str]:
    return sorted(actor.value for actor in edge.actors)


def states_json(layers: Sequence[Layer]) -> dict[str, Any]:
    return {
        layer.value: {
            "states": [
                {"name": s.name, "kind": s.kind.value, "meaning": s.meaning}
                for s in STATES[layer].values()
            ],
            "transitions": [
                {"from": e.from_state, "to": e.to_state, "actors": _actors(e), "why": e.why}
                for e in edges(layer)
            ],
        }
        for layer in layers
    }


def states_text(layers: Sequence[Layer], *, markdown: bool) -> str:
    """The states and transitions of each layer; ``markdown``: GitHub tables for the README."""
    fmt = "github" if markdown else "simple"
    fix = _markdown_cell if markdown else str
    parts = []
    for layer in layers:
        title = LAYER_TITLES[layer]
        states = [[fix(s.name), s.kind.value, fix(s.meaning)] for s in STATES[layer].values()]
        moves = [
            [fix(e.from_state or "(new)"), fix(e.to_state), ", ".join(_actors(e)), fix(e.why)]
            for e in edges(layer)
        ]
        parts += [
            f"### {title}" if markdown else title,
            "",
            table(states, ["state", "kind", "meaning"], fmt),
            "",
            table(moves, ["from", "to", "actors", "why"], fmt),
            "",
        ]
    return "\n".join(parts).rstrip("\n")


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def operator_notes(records: Sequence[Mapping[str, Any]], key: str) -> list[str]:
    """Lines "Operator notes:" and one per record with a ``reason`` (who, when), or none."""
    notes = [
        f"{record[key]}: {record['reason']} (by {record['updated_by']}, "
        f"{cell(record['updated_at'])})"
        for record in records
        if record["reason"]
    ]
    return ["", "Operator notes:", *notes] if notes else []
