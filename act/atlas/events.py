"""Event service: event ranges fetched before submission, processed ranges reported after.

* Before submission the translator calls :func:`fetch` for an event-service job (spec
  ``eventService`` true): ``acquire_event_ranges`` (never repeated by the client, PanDA may have
  handed the ranges out), stored in ``panda_jobs.event_ranges`` *in a transaction of its own*
  before anything else can fail, and shipped with the job as ``eventranges.json``
  (``JobInput.event_ranges``).
* When the CE job is done, app_status calls :func:`report`: the pilot's
  ``event_status.dump.json`` in the CE job's ``output_dir`` (``{"<PandaID>": [{"eventRangeID",
  "eventStatus", ...}]}``) goes to ``update_event_ranges``. panda-server 1.0.4 answers HTTP 500
  after doing the update: the client counts that as done. The outcome is recorded in the stored
  document, so a report is made once, and a failing one is tried at most :data:`MAX_ATTEMPTS`
  times (app_status's cycles are the retries).

``panda_jobs.event_ranges`` holds ``{"ranges": [...], "reported_at": null | ISO time,
"attempts": n, "error": null | text}``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from act.atlas.panda_client import PandaClient
from act.atlas.panda_errors import PandaError
from act.atlas.translate.common import EVENT_STATUS_FILE
from act.common.logs import job_log
from act.common.timeutil import utcnow

MAX_ATTEMPTS = 3
TRUE = frozenset({"true", "1", "yes"})


@dataclass
class EventState:
    ranges: list[dict[str, Any]]
    reported_at: str | None = None
    attempts: int = 0
    error: str | None = None

    def dump(self) -> str:
        return json.dumps(
            {
                "ranges": self.ranges,
                "reported_at": self.reported_at,
                "attempts": self.attempts,
                "error": self.error,
            },
            sort_keys=True,
        )

    @property
    def settled(self) -> bool:
        """Nothing more to send: reported, or given up after MAX_ATTEMPTS."""
        return self.reported_at is not None or self.attempts >= MAX_ATTEMPTS


def is_event_service(spec: Mapping[str, Any]) -> bool:
    value = spec.get("eventService")
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in TRUE


def load(text: str | None) -> EventState | None:
    """The stored document (None: no ranges fetched). ValueError if it is not one."""
    if not text:
        return None
    data = json.loads(text)
    if isinstance(data, list):  # a bare list of ranges
        return EventState([dict(r) for r in data])
    if not isinstance(data, dict) or not isinstance(data.get("ranges"), list):
        raise ValueError("event_ranges: not an event-range document")
    return EventState(
        [dict(r) for r in data["ranges"]],
        data.get("reported_at"),
        int(data.get("attempts") or 0),
        data.get("error"),
    )


def fetch(
    client: PandaClient, panda_id: int, spec: Mapping[str, Any], *, n_ranges: int
) -> EventState:
    """Acquire up to ``n_ranges`` ranges for the job (raises PandaError, KeyError for a spec
    without ``jobsetID``/``taskID``)."""
    ranges = client.acquire_event_ranges(
        panda_id, jobset_id=spec["jobsetID"], task_id=spec["taskID"], n_ranges=n_ranges
    )
    return EventState([dict(r) for r in ranges])


def processed(
    output_dir: str | Path | None,
    panda_id: int,
    *,
    log: logging.Logger | None = None,
    ce: str | None = None,
) -> list[dict[str, Any]]:
    """The ranges the pilot reports in ``event_status.dump.json`` (``[]`` if none or unreadable,
    the latter logged to ``log``); each as ``{"eventRangeID", "eventStatus", ...}``."""
    if not output_dir:
        return []
    path = Path(output_dir) / EVENT_STATUS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as error:
        if log is not None:
            job_log(log, panda_id=panda_id, ce=ce).warning(
                "cannot read %s (%s): no processed event ranges to report", path, error
            )
        return []
    if not isinstance(data, dict):
        return []
    items = data.get(str(panda_id), [])
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or "eventRangeID" not in item:
            continue
        status = item.get("eventStatus", item.get("status"))
        if status is None:
            continue
        out.append({**item, "eventRangeID": str(item["eventRangeID"]), "eventStatus": status})
    return out


def report(
    client: PandaClient,
    state: EventState,
    panda_id: int,
    output_dir: str | Path | None,
    *,
    log: logging.Logger | None = None,
    ce: str | None = None,
) -> EventState:
    """Send the processed ranges once; returns the updated document (store it). A dump file
    that cannot be read is logged to ``log`` with the job's ``panda_id`` and ``ce``."""
    if state.settled:
        return state
    ranges = processed(output_dir, panda_id, log=log, ce=ce)
    state.attempts += 1
    try:
        client.update_event_ranges(ranges)
    except PandaError as error:
        state.error = str(error)[:500]
        return state
    state.reported_at = utcnow().isoformat()
    state.error = None
    return state
