"""What act and its PanDA client (:mod:`act.atlas.panda_client`) exchange: a job PanDA handed
out, one heartbeat, and PanDA's answer to it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class AcquiredJob:
    """A job PanDA handed out. ``raw`` is the job's text exactly as received (store it verbatim):
    the job's JSON object, or for a legacy URL-encoded single-job reply the whole reply
    (``raw_format`` says which)."""

    panda_id: int
    spec: dict[str, Any]
    raw: str
    raw_format: Literal["json", "urlencoded"] = "json"


@dataclass(frozen=True)
class JobUpdate:
    """One heartbeat. ``fields`` are extra legacy camelCase fields (``jobId``, ``state`` and
    ``attemptNr`` are added by the client); the new API gets them renamed and typed."""

    panda_id: int
    state: str
    attempt: int | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdateResult:
    """PanDA's answer to one heartbeat. ``command``: tobekilled, badattemptnr, alreadydone,
    debug, ... or None; ``error`` says why ``ok`` is False."""

    panda_id: int
    ok: bool
    command: str | None
    error: str | None
