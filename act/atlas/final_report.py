"""The final report of a PanDA job: the pilot's ``heartbeat.json`` with act's own corrections.

In native mode the pilot cannot reach PanDA; it leaves the fields of the report it would have sent
in ``heartbeat.json`` (legacy camelCase). act sends those as the final heartbeat, after checking
and correcting them (as aCT does):

* only scalar values are forwarded (strings cut to :data:`MAX_TEXT` characters), plus the output
  report ``xml`` (a JSON text, as the legacy API takes it); nested objects a PanDA server would
  refuse are dropped and named in the log line of the caller;
* ``jobId``, ``state`` and ``attemptNr`` are never taken from the file: the propagator sets them
  from the job act holds (a pilot cannot report for another job);
* ``computingElement`` and ``batchID`` name the CE and the CE's job id;
* ``node`` comes from the pilot, else the CE's worker node, cut to 255 characters;
* ``startTime``/``endTime`` come from the pilot, else the CE's times; the start is moved earlier
  when the CPU time reported would make the efficiency exceed 100 % (aCT's cap);
* ``coreCount`` comes from the pilot, else the job's spec;
* a failed job carries act's error code and diagnosis when act decided the failure (validation),
  and ``pilotLog``, a short excerpt of the pilot's log.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from act.atlas.reporting import RESERVED_FIELDS

#: Characters kept of any text field, and of the output report.
MAX_TEXT = 16_000
MAX_XML = 4_000_000
MAX_NODE = 255
MAX_DIAG = 500
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Corrections:
    """What act knows better than, or in addition to, the pilot."""

    ce: str | None = None
    ce_job_id: str | None = None
    worker_node: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    cores: int | None = None


@dataclass(frozen=True)
class Built:
    fields: dict[str, Any]
    dropped: tuple[str, ...]  # keys of the pilot's file that were not forwarded


def build(
    pilot: Mapping[str, Any] | None,
    fixes: Corrections,
    *,
    error_code: int | None = None,
    error_diag: str | None = None,
    pilot_log: str | None = None,
) -> Built:
    """The report fields (legacy camelCase) for the propagator; see the module docstring."""
    fields: dict[str, Any] = {}
    dropped: list[str] = []
    for key, value in (pilot or {}).items():
        if key in RESERVED_FIELDS or not isinstance(key, str):
            continue
        if key == "xml":
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            if len(text) <= MAX_XML:
                fields["xml"] = text
            else:
                dropped.append(key)
        elif isinstance(value, bool) or value is None or isinstance(value, (int, float)):
            fields[key] = value
        elif isinstance(value, str):
            fields[key] = value[:MAX_TEXT]
        else:
            dropped.append(key)
    if fixes.ce:
        fields["computingElement"] = fixes.ce[:MAX_NODE]
    if fixes.ce_job_id:
        fields["batchID"] = fixes.ce_job_id[:MAX_NODE]
    node = fields.get("node") if isinstance(fields.get("node"), str) else None
    node = node or fixes.worker_node
    if node:
        fields["node"] = node[:MAX_NODE]
    if not isinstance(fields.get("coreCount"), int) and fixes.cores:
        fields["coreCount"] = fixes.cores
    _times(fields, fixes)
    if error_code is not None:
        fields["pilotErrorCode"] = error_code
    if error_diag is not None:
        fields["pilotErrorDiag"] = error_diag[:MAX_DIAG]
    if pilot_log:
        fields["pilotLog"] = pilot_log[-MAX_TEXT:]
    return Built(fields, tuple(dropped))


def _parse(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip(), TIME_FORMAT).replace(tzinfo=timezone.utc)
    except ValueError:
        return None


def _times(fields: dict[str, Any], fixes: Corrections) -> None:
    start = _parse(fields.get("startTime")) or fixes.started_at
    end = _parse(fields.get("endTime")) or fixes.ended_at
    if start is None or end is None or end < start:
        for key, when in (("startTime", start), ("endTime", end)):
            if when is not None and key not in fields:
                fields[key] = when.astimezone(timezone.utc).strftime(TIME_FORMAT)
        return
    cpu = fields.get("cpuConsumptionTime")
    cores = fields.get("coreCount") if isinstance(fields.get("coreCount"), int) else fixes.cores
    if isinstance(cpu, (int, float)) and not isinstance(cpu, bool) and cpu > 0:
        least = timedelta(seconds=float(cpu) / max(1, cores or 1))
        if end - start < least:
            start = end - least  # efficiency capped at 100 %
    fields["startTime"] = start.astimezone(timezone.utc).strftime(TIME_FORMAT)
    fields["endTime"] = end.astimezone(timezone.utc).strftime(TIME_FORMAT)
