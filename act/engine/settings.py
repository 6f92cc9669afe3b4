"""The engine's configuration: the CEs, how jobs are spread over them, and every time limit.

Everything here is under ``engine:`` in the config file; ``etc/act.yaml`` documents each key.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from act.common.section import Section
from act.common.states import STATES, Actor, CEJobState, JobState, Layer, PandaJobState, check

DAY = 86400.0


class CESettings(Section):
    """One compute element, under ``engine.ces.<name>`` in the config."""

    backend: str = Field(pattern=r"^[a-z][a-z0-9_]*$")  # arc | condor | local
    url: str | None = None  # ARC: https://host:443/arex; HTCondor-CE: host[:port]; local: unused
    queue: str | None = None  # the batch queue at the CE
    credential: str | None = None  # X509 proxy file used towards this CE
    ca: str | None = None  # CA file or directory to verify the CE (default: the system's)
    timeout: float = Field(60.0, gt=0)  # seconds, for every call to the CE
    max_queued: int = Field(100, ge=0)  # jobs waiting at the CE
    max_running: int | None = Field(None, ge=0)
    max_per_cycle: int = Field(50, ge=1)  # submissions per submitter cycle
    min_spacing: float = Field(1.0, ge=0)  # seconds between two submission batches
    weight: float = Field(1.0, gt=0)  # static weight for the weighted strategy
    options: dict[str, Any] = Field(default_factory=dict)  # back-end specific, checked by it


class BreakerSettings(Section):
    """The circuit breaker of each CE."""

    failures: int = Field(5, ge=1)  # consecutive failures that open it
    fast_fail: float = Field(600.0, ge=0)  # a job failing this soon after it started counts
    cooldown: float = Field(600.0, gt=0)  # open this long, then one probe job is let through


class PollSettings(Section):
    """How often the poller asks a CE about a job, by the job's engine state (seconds)."""

    submitted: float = Field(300.0, gt=0)
    running: float = Field(600.0, gt=0)
    finishing: float = Field(120.0, gt=0)
    cancelling: float = Field(120.0, gt=0)
    lost_after: float = Field(3600.0, gt=0)  # unknown to the CE this long: the job is lost


class ResubmitRule(Section):
    """What to do with a CE job that failed with an error matching ``pattern`` (a regex)."""

    pattern: str
    action: Literal["resubmit", "restart", "fail"]

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(f"not a regular expression: {error}") from None
        return pattern


def _default_resubmit() -> list[ResubmitRule]:
    return [
        ResubmitRule(pattern=r"(?i)(stage-?in|download|staging).*fail", action="restart"),
        ResubmitRule(
            pattern=r"(?i)node (failure|fail)|job was lost|lost heartbeat", action="resubmit"
        ),
        ResubmitRule(pattern=r"(?i)LRMS error: \((-1|271|143)\)", action="resubmit"),
        # HTCondor (act.condor): a held job's error is "held: <HoldReason> (code N, subcode M)".
        # Input/output transfer failures (codes 12, 13) and the grid manager's connection
        # troubles (code 0) are transient: release the job; a CE unreachable for long: elsewhere.
        ResubmitRule(pattern=r"^held: .*\(code (12|13), subcode", action="restart"),
        ResubmitRule(
            pattern=r"(?i)^held: .*(connect|timed? ?out|temporar|unavailable|refused).*"
            r"\(code 0, subcode",
            action="restart",
        ),
        ResubmitRule(pattern=r"^grid resource unavailable since ", action="resubmit"),
    ]


class FetchSettings(Section):
    dir: str | None = None  # per-job output directories; default <root>/ce-jobs
    max_bytes: int = Field(1 << 30, gt=0)  # per job
    max_files: int = Field(1000, gt=0)  # per job


class CleanSettings(Section):
    give_up_after: float = Field(7 * DAY, gt=0)  # then the row is marked cleaned, with a warning


class StuckRule(Section):
    """A job of ``layer`` in ``state`` for longer than ``after`` seconds is moved to ``action``."""

    layer: Literal["panda", "ce"]
    state: str
    after: float = Field(gt=0)
    action: str

    @model_validator(mode="after")
    def _is_a_janitor_edge(self) -> StuckRule:
        layer = Layer(self.layer)
        if self.state not in STATES[layer]:
            raise ValueError(f"{self.layer}: unknown state {self.state!r}")
        check(layer, self.state, self.action, Actor.JANITOR)
        return self


def _default_stuck() -> list[StuckRule]:
    C, P = CEJobState, PandaJobState
    rules: list[tuple[JobState, float, JobState]] = [
        (C.TOSUBMIT, 2 * DAY, C.TOCANCEL),
        (C.SUBMITTED, 7 * DAY, C.TOCANCEL),
        (C.RUNNING, 10 * DAY, C.TOCANCEL),
        (C.FINISHING, 2 * DAY, C.TOCANCEL),
        (C.CANCELLING, 3600.0, C.CANCELLED),
        (C.SUBMITTING, DAY, C.TOCANCEL),
        (C.TORERUN, DAY, C.TOCANCEL),
        (C.TORESUBMIT, DAY, C.TOCANCEL),
        (C.TOCANCEL, DAY, C.CANCELLED),
        (C.FINISHED, DAY, C.DONEFAILED),
        (C.FAILED, DAY, C.DONEFAILED),
        (C.DONE, 7 * DAY, C.TOCLEAN),
        (C.DONEFAILED, 7 * DAY, C.TOCLEAN),
        (C.CANCELLED, 7 * DAY, C.TOCLEAN),
        (C.LOST, 7 * DAY, C.TOCLEAN),
        (P.QUEUED, 8 * DAY, P.TOBEKILLED),
        (P.RUNNING, 11 * DAY, P.TOBEKILLED),
        (P.TRANSFERRING, 3 * DAY, P.TOBEKILLED),
    ]
    return [
        StuckRule(layer=_layer_of(state).value, state=state, after=after, action=action)
        for state, after, action in rules
    ]


def _layer_of(state: JobState) -> Layer:
    return Layer.PANDA if isinstance(state, PandaJobState) else Layer.CE


class EngineSettings(Section):
    ces: dict[str, CESettings] = Field(default_factory=dict)
    strategy: Literal["round_robin", "round_robin_random", "random", "weighted"] = (
        "round_robin_random"
    )
    # tries a PanDA job gets at the CE in all: first submission, restarts, CE-level and PanDA-level
    # resubmissions (act.engine.resubmit: the one retry budget)
    attempts: int = Field(3, ge=1)
    breaker: BreakerSettings = BreakerSettings()
    poll: PollSettings = PollSettings()
    resubmit: list[ResubmitRule] = Field(default_factory=_default_resubmit)
    fetch: FetchSettings = FetchSettings()
    clean: CleanSettings = CleanSettings()
    stuck: list[StuckRule] = Field(default_factory=_default_stuck)
