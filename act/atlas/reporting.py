"""What other daemons use to make the propagator report a PanDA job.

Every PanDA job carries the time its next report is due (``panda_jobs.next_report_at``; NULL:
nothing to report). The propagator reports jobs whose time has come, oldest first, and sets the
next time itself. A daemon that changes a PanDA job's state wants PanDA told at once: it passes
:func:`due_now` as the ``values`` of the same :func:`~act.common.transitions.transition` call, so
the state change and "report it now" commit together::

    transition(conn, Layer.PANDA, ids, "queued", "running", actor=Actor.APP_STATUS,
               values=due_now())

:func:`with_report` does the same and also stores the fields of the next report (e.g. the final
report the validator builds: ``xml``, error codes, ``pilotErrorDiag``), as legacy camelCase
heartbeat fields; the PanDA client renames them for the new API.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from act.common.timeutil import utcnow

#: Heartbeat fields the propagator sets itself; a report that names them is refused.
RESERVED_FIELDS = frozenset({"jobId", "state", "attemptNr"})


def due_now(values: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``values`` plus ``next_report_at = now``: reported at the propagator's next cycle."""
    return {**(values or {}), "next_report_at": utcnow()}


def with_report(
    fields: Mapping[str, Any], values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """:func:`due_now` plus ``report``: the extra fields (JSON) the next report carries."""
    reserved = RESERVED_FIELDS.intersection(fields)
    if reserved:
        raise ValueError(f"the propagator sets {sorted(reserved)} itself")
    return due_now({**(values or {}), "report": json.dumps(dict(fields), sort_keys=True)})


def report_fields(text: str | None) -> dict[str, Any]:
    """The fields stored in ``panda_jobs.report``; ValueError if they are not a JSON object."""
    if not text:
        return {}
    try:
        fields = json.loads(text)
    except ValueError as error:
        raise ValueError(f"report is not JSON: {error}") from None
    if not isinstance(fields, dict):
        raise ValueError(f"report is a JSON {type(fields).__name__}, not an object")
    return {key: value for key, value in fields.items() if key not in RESERVED_FIELDS}
