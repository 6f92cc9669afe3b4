"""The fields of a job update (heartbeat or final report) as each PanDA API takes them.

act keeps a job's report fields in the legacy camelCase names, those of pilot3's
``heartbeat.json``. This module turns them into what each API's update function accepts; the
tables below are checked, name by name and type by type, against the real server code
(tests/test_update_fields.py: panda-server 1.0.4's ``pilot_api.update_job`` introspected in the
PanDA server's venv, 0.8.1's ``JobDispatcher.updateJob`` read with ``ast``).

**Legacy** (panda-server <= 0.8.x, ``updateJob`` / ``updateJobsInBulk``): the keyword arguments
of :data:`LEGACY_ARGS`, every value a string (form fields; the bulk call's JSON list carries the
same strings). ``updateJobsInBulk`` passes each job's fields to ``updateJob`` as keywords, so one
unknown name makes the whole bulk call fail with a TypeError: names outside the signature are
never sent. ``computingElement`` and ``timestamp`` are accepted (0.8.x only logs them).

**New** (panda-server >= 1.0, ``/api/v1/pilot/update_job`` and ``update_jobs_bulk``): the
snake_case arguments of :data:`NEW_ARGS`, JSON-typed. The server's ``request_validation`` refuses
the whole update (``success: false``) for an unknown argument or a value that is not an instance
of the annotation, so every value is typed here:

* ``int`` arguments: an int; an integral float or a numeric string is converted, a fractional
  value rounded half up (1.0.4 annotates ``mean_core_count`` as int although it stores a float
  and pilot3 reports e.g. ``7.5``: it goes as 8; the legacy API gets the float);
* ``int | float`` arguments: a number; a numeric string converted;
* ``str`` arguments: a number or bool as its text, a list or dict as JSON text;
* ``start_time``/``end_time``: PanDA's text form (:mod:`act.atlas.pilot_times`; epoch seconds
  are converted), in both APIs.

A value that cannot be typed (a bool or text for a number, NaN, an unreadable time) is not sent
and named in :attr:`Fields.refused`; a name the API does not take is not sent and named in
:attr:`Fields.dropped`. **1.0.4 has no** ``computingElement``, ``timestamp``, ``workdir``,
``remainingSpace``, ``messageLevel`` **or** ``token`` **argument**: act never sends them to the
new API. Measured on 1.0.4: the ``computing_element`` given to ``acquire_jobs`` is stored, and the
next update replaces it with the CE of the job's Harvester worker (``updateJobStatus`` reads
``harvester_workers``), NULL for a job act fetched; 1.0.4 offers no way for a non-Harvester
client to report the CE.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from act.atlas.pilot_times import BadTime, panda_text, read_time

Kind = Literal["int", "number", "str"]

#: Keyword arguments of panda-server 0.8.1's ``JobDispatcher.updateJob`` after ``req``
#: (``jobId`` and ``state`` are set by the client itself).
LEGACY_ARGS = frozenset(
    {
        "jobId", "state", "token", "transExitCode", "pilotErrorCode", "pilotErrorDiag",
        "timestamp", "timeout", "xml", "node", "workdir", "cpuConsumptionTime",
        "cpuConsumptionUnit", "remainingSpace", "schedulerID", "pilotID", "siteName",
        "messageLevel", "pilotLog", "metaData", "cpuConversionFactor", "exeErrorCode",
        "exeErrorDiag", "pilotTiming", "computingElement", "startTime", "endTime", "nEvents",
        "nInputFiles", "batchID", "attemptNr", "jobMetrics", "stdout", "jobSubStatus",
        "coreCount", "maxRSS", "maxVMEM", "maxSWAP", "maxPSS", "avgRSS", "avgVMEM", "avgSWAP",
        "avgPSS", "totRCHAR", "totWCHAR", "totRBYTES", "totWBYTES", "rateRCHAR", "rateWCHAR",
        "rateRBYTES", "rateWBYTES", "corruptedFiles", "meanCoreCount", "cpu_architecture_level",
        "grid", "source_site", "destination_site",
    }
)  # fmt: skip

_MEMORY = {
    f"{kind}{what}": f"{kind}_{what.lower()}"
    for kind in ("max", "avg")
    for what in ("RSS", "VMEM", "SWAP", "PSS")
}
_IO = {
    f"{kind}{what}": f"{kind}_{what.lower()}"
    for kind in ("tot", "rate")
    for what in ("RCHAR", "WCHAR", "RBYTES", "WBYTES")
}

#: Legacy names and their new-API names (every argument of 1.0.4's update_job but ``req``).
LEGACY_TO_NEW: dict[str, str] = {
    "jobId": "job_id",
    "state": "job_status",
    "attemptNr": "attempt_nr",
    "transExitCode": "trans_exit_code",
    "pilotErrorCode": "pilot_error_code",
    "pilotErrorDiag": "pilot_error_diag",
    "exeErrorCode": "exe_error_code",
    "exeErrorDiag": "exe_error_diag",
    "timeout": "timeout",
    "xml": "job_output_report",
    "node": "node",
    "siteName": "site_name",
    "schedulerID": "scheduler_id",
    "pilotID": "pilot_id",
    "batchID": "batch_id",
    "cpuConsumptionTime": "cpu_consumption_time",
    "cpuConsumptionUnit": "cpu_consumption_unit",
    "cpuConversionFactor": "cpu_conversion_factor",
    "cpu_architecture_level": "cpu_architecture_level",
    "coreCount": "core_count",
    "meanCoreCount": "mean_core_count",
    "nEvents": "n_events",
    "nInputFiles": "n_input_files",
    "startTime": "start_time",
    "endTime": "end_time",
    "pilotTiming": "pilot_timing",
    "jobSubStatus": "job_sub_status",
    "jobMetrics": "job_metrics",
    "metaData": "meta_data",
    "pilotLog": "pilot_log",
    "stdout": "stdout",
    "corruptedFiles": "corrupted_files",
    "grid": "grid",
    "source_site": "source_site",
    "destination_site": "destination_site",
    **_MEMORY,
    **_IO,
}

#: panda-server 1.0.4's ``update_job`` arguments and the JSON type each must have
#: (``number``: annotated ``int | float`` or ``float | int``).
NEW_ARGS: dict[str, Kind] = {
    **{name: "str" for name in LEGACY_TO_NEW.values()},
    **{
        name: "int"
        for name in (
            "job_id", "attempt_nr", "trans_exit_code", "pilot_error_code", "exe_error_code",
            "cpu_consumption_time", "core_count", "mean_core_count", "n_events", "n_input_files",
            "timeout",
        )
    },
    **{name: "number" for name in ("cpu_conversion_factor", *_MEMORY.values(), *_IO.values())},
}  # fmt: skip

#: Fields holding JSON text (a dict or list given is serialised); never cut.
JSON_FIELDS = frozenset({"xml", "metaData"})
TIME_FIELDS = frozenset({"startTime", "endTime"})
_NUMBER = re.compile(r"\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*")


@dataclass
class Fields:
    """One update's fields for one API: ``values`` to send, and what was left out."""

    values: dict[str, Any] = field(default_factory=dict)
    #: names the API does not take
    dropped: list[str] = field(default_factory=list)
    #: "<name>: <why>" for values that could not be given the type the API wants
    refused: list[str] = field(default_factory=list)


def json_text(value: Any) -> str:
    """A JSON field's text: a string as it is, anything else serialised (datetimes as PanDA
    time; a naive one is refused with ValueError)."""
    return value if isinstance(value, str) else json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return panda_text(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def for_new_api(fields: Mapping[str, Any]) -> Fields:
    """``fields`` (legacy names) renamed and typed for 1.0.4's update_job; None values skipped."""
    out = Fields()
    for key, value in fields.items():
        name = LEGACY_TO_NEW.get(key, key if key in NEW_ARGS else None)
        if name is None:
            out.dropped.append(key)
            continue
        if value is None:
            continue
        try:
            out.values[name] = _typed(key, NEW_ARGS[name], value)
        except _Untyped as why:
            out.refused.append(f"{key}: {why}")
    return out


def for_legacy_api(fields: Mapping[str, Any]) -> Fields:
    """``fields`` as 0.8.x's updateJob form strings; None values skipped."""
    out = Fields()
    for key, value in fields.items():
        if key not in LEGACY_ARGS:
            out.dropped.append(key)
            continue
        if value is None:
            continue
        try:
            out.values[key] = _legacy_text(key, value)
        except _Untyped as why:
            out.refused.append(f"{key}: {why}")
    return out


class _Untyped(ValueError):
    pass


def _time_text(value: Any) -> str:
    try:
        when = read_time(value)
    except BadTime as error:
        raise _Untyped(str(error)) from None
    if when is None:
        raise _Untyped(f"{value!r} is not a time")
    return panda_text(when)


def _legacy_text(key: str, value: Any) -> str:
    if key in TIME_FIELDS:
        return _time_text(value)
    if key in JSON_FIELDS:
        return json_text(value)
    return form_text(value)


def form_text(value: Any) -> str:
    """A value as a form field's text (as the legacy API and pilot3 send it)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, datetime):
        return panda_text(value)
    return json.dumps(value, default=_json_default)


def _typed(key: str, kind: Kind, value: Any) -> Any:
    if key in TIME_FIELDS:
        return _time_text(value)
    if key in JSON_FIELDS:
        return json_text(value)
    if kind == "str":
        return form_text(value)
    number = _number(value)
    if kind == "number":
        return number
    if isinstance(number, float):
        return math.floor(number + 0.5)  # rounded half up (see the module docstring)
    return number


def _number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise _Untyped(f"{value!r} is not a number")
    if isinstance(value, str):
        if not _NUMBER.fullmatch(value):
            raise _Untyped(f"{value!r} is not a number")
        text = value.strip()
        value = int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Untyped(f"{value!r} is not a finite number")
        return int(value) if value.is_integer() else value
    raise _Untyped(f"a {type(value).__name__} is not a number")
