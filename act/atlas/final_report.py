"""The final report of a PanDA job: the pilot's ``heartbeat.json`` with act's own corrections.

In native mode the pilot cannot reach PanDA; it leaves the fields of the report it would have sent
in ``heartbeat.json`` (legacy camelCase; pilot3's ``get_data_structure``). act sends those as the
final heartbeat, after checking and correcting them (as aCT does). What act reads, and what it
sends (the client then renames and types them per API, :mod:`act.atlas.update_fields`):

* only names one of PanDA's update functions takes (:data:`~act.atlas.update_fields.LEGACY_ARGS`
  and the new API's); others are dropped and named in :attr:`Built.dropped`;
* the job's id, status and attempt (``jobId``, ``attemptNr``, ...) are never taken from the
  file: the propagator sets them from the job act holds (a pilot cannot report for another job);
* scalar values are forwarded, strings cut to :data:`MAX_TEXT` characters (PanDA cuts the
  diagnostics to 500 itself), ``stdout`` to :data:`MAX_STDOUT` (1.0.4 stores nothing of a longer
  one); NaN and infinities are dropped (not JSON). ``jobMetrics`` (``key=value`` words) and
  ``pilotTiming`` (``a|b|c|...``) are text, not JSON;
* **JSON fields are never cut**: ``xml`` (the output report, pilot3's ``job.fileinfo``) is kept
  whole up to :data:`MAX_XML` characters, else dropped; ``metaData`` (pilot3 puts the whole
  ``jobReport.json`` there; if the heartbeat has none, the ``jobReport.json`` act fetched is
  used) is kept whole if it is valid JSON and its JSON-encoded size is at most ``max_meta_data``
  bytes (default :data:`MAX_META_DATA`). Otherwise it is dropped whole, the reason is a
  :attr:`Built.notes` entry (the validator logs it with the PanDA ID and keeps it in the job's
  ``validation_note``) and PanDA is told in ``jobMetrics`` (``actMetaDataDropped=<bytes>``, a
  ``key=value`` word the monitor shows with the job): a report PanDA cannot parse is worse than
  none, since without ``metaData`` PanDA's Adder falls back to the pilot's ``nEvents``.
  Measured on panda-server 1.0.4 behind mod_wsgi-express's default ``LimitRequestBody``
  (10 MiB): a 10.4 MB ``meta_data`` is stored whole in ``metaTable``, 11 MB is refused with
  HTTP 413 (PanDA's own httpd template allows 10 GiB; PostgreSQL's ``text`` and Oracle's CLOB
  have no smaller limit). For a ``failed`` job PanDA discards ``metaData`` (``addMetadata``)
  whatever its size;
* ``computingElement`` and ``batchID`` name the CE and the CE's job id (the new API has no
  ``computingElement``: the client does not send it there);
* ``node`` comes from the pilot, else the CE's worker node, cut to 255 characters;
* ``startTime``/``endTime``: the pilot's (epoch seconds or PanDA's text form,
  :mod:`act.atlas.pilot_times`), else the CE's; always sent as PanDA's UTC text form. A pilot time
  that is nonsense (negative, NaN, before 2000, far in the future, or an end before the start)
  is not used, and a note says why. The start is moved earlier when the CPU time reported would
  make the efficiency exceed 100 % (aCT's cap);
* ``coreCount`` comes from the pilot, else the job's spec;
* a failed job carries act's error code and diagnosis when act decided the failure (validation),
  and ``pilotLog``, a short excerpt of the pilot's log.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from act.atlas.pilot_times import BadTime, panda_text, read_time
from act.atlas.reporting import RESERVED_FIELDS
from act.atlas.update_fields import LEGACY_ARGS, LEGACY_TO_NEW, TIME_FIELDS, json_text

#: Characters kept of any text field that is not JSON.
MAX_TEXT = 16_000
#: Characters of the output report (``xml``) kept whole; a larger one is dropped.
MAX_XML = 4_000_000
#: Default bytes of ``metaData`` (JSON-encoded, as it travels) kept whole; see the docstring.
MAX_META_DATA = 4 << 20
MAX_NODE = 255
MAX_DIAG = 500
#: PanDA's jobsDebug.stdout is 2048 characters: 0.8.x cut to that, 1.0.4 loses a longer one.
MAX_STDOUT = 2048
#: PanDA keeps this many characters of ``jobMetrics``.
MAX_JOB_METRICS = 500
DROPPED_METADATA = "actMetaDataDropped"
_ACCEPTED = LEGACY_ARGS | LEGACY_TO_NEW.keys()
_ABSENT = (None, "", "NULL")


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
    #: keys of the pilot's file that were not forwarded (not an update argument, not a scalar)
    dropped: tuple[str, ...]
    #: what act refused of the pilot's values, one line each naming the field and the cause
    notes: tuple[str, ...] = field(default=())


def build(
    pilot: Mapping[str, Any] | None,
    fixes: Corrections,
    *,
    error_code: int | None = None,
    error_diag: str | None = None,
    pilot_log: str | None = None,
    job_report: str | None = None,
    max_meta_data: int = MAX_META_DATA,
    now: datetime | None = None,
) -> Built:
    """The report fields (legacy camelCase) for the propagator; see the module docstring.

    ``job_report`` is the text of the ``jobReport.json`` act fetched, used as ``metaData`` when
    the pilot's file has none.
    """
    fields: dict[str, Any] = {}
    dropped: list[str] = []
    notes: list[str] = []
    pilot = pilot or {}
    for key, value in pilot.items():
        if not isinstance(key, str) or key in RESERVED_FIELDS or key in TIME_FIELDS:
            continue  # times: below
        if key not in _ACCEPTED:
            dropped.append(key)
        elif key == "metaData":
            continue  # below
        elif key == "xml":
            text = json_text(value)
            if len(text) <= MAX_XML:
                fields["xml"] = text
            else:
                dropped.append(key)
                notes.append(f"xml: the output report ({len(text)} characters) is over {MAX_XML}")
        elif isinstance(value, float) and not math.isfinite(value):
            dropped.append(key)
            notes.append(f"{key}: {value!r} is not a number PanDA takes")
        elif isinstance(value, bool) or value is None or isinstance(value, (int, float)):
            fields[key] = value
        elif isinstance(value, str):
            fields[key] = value[: MAX_STDOUT if key == "stdout" else MAX_TEXT]
        else:
            dropped.append(key)
    meta = pilot.get("metaData")
    if meta in _ABSENT and job_report:
        meta = job_report
    if meta not in _ABSENT:
        _meta_data(fields, meta, max_meta_data, notes)
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
    _times(fields, pilot, fixes, notes, now)
    if error_code is not None:
        fields["pilotErrorCode"] = error_code
    if error_diag is not None:
        fields["pilotErrorDiag"] = error_diag[:MAX_DIAG]
    if pilot_log:
        fields["pilotLog"] = pilot_log[-MAX_TEXT:]
    return Built(fields, tuple(dropped), tuple(notes))


def _meta_data(fields: dict[str, Any], value: Any, limit: int, notes: list[str]) -> None:
    """``metaData`` whole, or not at all (with a note, and PanDA told in ``jobMetrics``)."""
    try:
        text = json_text(value)
        json.loads(text)
    except (TypeError, ValueError) as error:
        reason = f"not JSON ({' '.join(str(error).split())[:120]})"
        size = len(value.encode("utf-8", "replace")) if isinstance(value, str) else 0
    else:
        size = len(json.dumps(text).encode("utf-8"))  # as it travels: a JSON string
        if size <= limit:
            fields["metaData"] = text
            return
        reason = f"{size} bytes as sent, over the limit of {limit}"
    notes.append(f"metaData not sent (PanDA gets none rather than a cut one): {reason}")
    word = f"{DROPPED_METADATA}={size}"
    metrics = fields.get("jobMetrics")
    words = metrics.split() if isinstance(metrics, str) else []
    while words and len(" ".join([word, *words])) > MAX_JOB_METRICS:
        words.pop()  # PanDA keeps 500 characters: the note first, whole words of the pilot's
    fields["jobMetrics"] = " ".join([word, *words])


def _pilot_time(
    pilot: Mapping[str, Any], key: str, notes: list[str], now: datetime | None
) -> datetime | None:
    try:
        return read_time(pilot.get(key), now=now)
    except BadTime as error:
        notes.append(f"{key} of the pilot not used: {error}")
        return None


def _times(
    fields: dict[str, Any],
    pilot: Mapping[str, Any],
    fixes: Corrections,
    notes: list[str],
    now: datetime | None,
) -> None:
    start = _pilot_time(pilot, "startTime", notes, now)
    end = _pilot_time(pilot, "endTime", notes, now)
    if start is not None and end is not None and end < start:
        notes.append(
            f"startTime/endTime of the pilot not used: the end ({panda_text(end)}) is before "
            f"the start ({panda_text(start)})"
        )
        start = end = None
    start = start or fixes.started_at
    end = end or fixes.ended_at
    if start is not None and end is not None and end < start:
        # the pilot's one and the CE's other do not fit together: the CE's pair, if it fits
        start, end = fixes.started_at, fixes.ended_at
        if start is not None and end is not None and end < start:
            start = end = None
    if start is not None and end is not None:
        cpu = fields.get("cpuConsumptionTime")
        cores = fields.get("coreCount") if isinstance(fields.get("coreCount"), int) else fixes.cores
        if isinstance(cpu, (int, float)) and not isinstance(cpu, bool) and cpu > 0:
            least = timedelta(seconds=float(cpu) / max(1, cores or 1))
            if end - start < least:
                start = end - least  # efficiency capped at 100 %
    for key, when in (("startTime", start), ("endTime", end)):
        if when is not None:
            fields[key] = panda_text(when)
