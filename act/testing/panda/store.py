"""The test double's jobs and what it was told about them (:class:`JobStore`): hand-out,
heartbeats, statuses and event ranges, as the API handlers of both wire formats use them."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from act.atlas.panda_status import PandaCommand, PandaEventStatus, PandaServerStatus
from act.testing.panda.jobspec import make_job_spec

FINAL = (PandaServerStatus.FINISHED, PandaServerStatus.FAILED)
NEW_JOB_STATES = (
    PandaServerStatus.RUNNING,
    PandaServerStatus.STARTING,
    PandaServerStatus.TRANSFERRING,
    PandaServerStatus.HOLDING,
    PandaServerStatus.FINISHED,
    PandaServerStatus.FAILED,
)


@dataclass
class TestJob:
    """A job held by the test server, with what it was told about it."""

    __test__ = False

    spec: dict[str, Any]
    queue: str
    status: str = "activated"
    states: list[str] = field(default_factory=list)
    final_state: str | None = None
    final_reports: int = 0
    command: str | None = None
    last_fields: dict[str, Any] = field(default_factory=dict)
    event_ranges: list[dict[str, Any]] = field(default_factory=list)
    event_status: dict[str, str] = field(default_factory=dict)
    sent_at: float | None = None  # time.monotonic() of the last hand-out

    @property
    def panda_id(self) -> int:
        return int(self.spec["PandaID"])

    @property
    def label(self) -> str:
        return str(self.spec["prodSourceLabel"])

    @property
    def attempt(self) -> int:
        return int(self.spec["attemptNr"])


class JobStore:
    """The jobs held, the job logic under one lock, and the knobs the API handlers read;
    :class:`~act.testing.panda.server.PandaTestServer` is one, served over HTTP."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.jobs: dict[int, TestJob] = {}
        self._next_id = 1
        # knobs, changeable at any time
        self.refuse_role = False
        self.event_ranges_bug = True
        # legacy replies honour Accept: application/json (as 0.8.1 does) unless this is False,
        # then they are always URL-encoded, as aCT saw them
        self.legacy_accept_json = True
        # As PanDA does: a job handed out ("sent") that no update followed for this many seconds
        # is handed out again (nSent + 1). None: never (the default).
        self.sent_timeout: float | None = None

    # -- jobs -----------------------------------------------------------------------------------

    def add_jobs(
        self, specs: Iterable[Mapping[str, Any]], *, queue: str = "TEST_QUEUE"
    ) -> list[int]:
        """Hold these job specs (status ``activated``) for ``queue``; their PandaIDs."""
        ids = []
        with self._lock:
            for spec in specs:
                job = TestJob(dict(spec), queue)
                if job.panda_id in self.jobs:
                    raise ValueError(f"PandaID {job.panda_id} already held")
                if job.spec.get("eventService"):
                    job.event_ranges = _event_ranges(job.spec, 20)
                self.jobs[job.panda_id] = job
                self._next_id = max(self._next_id, job.panda_id + 1)
                ids.append(job.panda_id)
        return ids

    def seed(
        self,
        n: int,
        *,
        queue: str = "TEST_QUEUE",
        label: Literal["managed", "user"] = "managed",
        cores: int = 1,
        **spec_options: Any,
    ) -> list[int]:
        """Add ``n`` realistic jobs (see ``make_job_spec``); their PandaIDs."""
        with self._lock:
            first = self._next_id
            self._next_id += n
        specs = [
            make_job_spec(pid, label=label, cores=cores, **spec_options)
            for pid in range(first, first + n)
        ]
        return self.add_jobs(specs, queue=queue)

    def set_command(self, panda_id: int, command: str | None) -> None:
        """Answer every later heartbeat of this job with ``command`` (tobekilled, ...)."""
        with self._lock:
            self.jobs[panda_id].command = command

    def states(self, panda_id: int) -> list[str]:
        """Every state reported for this job, in order."""
        with self._lock:
            job = self.jobs.get(panda_id)
            return list(job.states) if job else []

    def final_state(self, panda_id: int) -> str | None:
        with self._lock:
            job = self.jobs.get(panda_id)
            return job.final_state if job else None

    def final_reports(self, panda_id: int) -> int:
        """How many final (finished/failed) updates this job received."""
        with self._lock:
            job = self.jobs.get(panda_id)
            return job.final_reports if job else 0

    def status(self, panda_id: int) -> str | None:
        with self._lock:
            job = self.jobs.get(panda_id)
            return job.status if job else None

    def last_fields(self, panda_id: int) -> dict[str, Any]:
        """The fields of the job's latest update, as received."""
        with self._lock:
            job = self.jobs.get(panda_id)
            return dict(job.last_fields) if job else {}

    def event_status(self, panda_id: int) -> dict[str, str]:
        with self._lock:
            job = self.jobs.get(panda_id)
            return dict(job.event_status) if job else {}

    def update_count(self) -> int:
        """Job updates received (a bulk call counts each job)."""
        with self._lock:
            return sum(len(job.states) for job in self.jobs.values())

    def _acquire(self, queue: str, label: str | None, n_jobs: int) -> list[dict[str, Any]] | None:
        """Jobs handed out, or None if the role is refused."""
        if self.refuse_role and label not in ("user",):
            return None
        accepted = _labels(label)
        out = []
        with self._lock:
            if self.sent_timeout is not None:
                expired = time.monotonic() - self.sent_timeout
                for job in self.jobs.values():
                    if job.status == "sent" and job.sent_at is not None and job.sent_at < expired:
                        job.status = "activated"  # never heard of: PanDA sends it again
            candidates = sorted(
                (
                    j
                    for j in self.jobs.values()
                    if j.status == "activated"
                    and j.queue == queue
                    and (accepted is None or j.label in accepted)
                ),
                key=lambda j: (-int(j.spec.get("currentPriority", 0)), j.panda_id),
            )
            for job in candidates[: max(n_jobs, 0)]:
                job.status = "sent"
                job.sent_at = time.monotonic()
                job.spec["nSent"] = int(job.spec.get("nSent", 0)) + 1
                out.append(dict(job.spec))
        return out

    def _update(
        self,
        panda_id: int,
        state: str,
        attempt: int | None,
        fields: Mapping[str, Any],
        *,
        legacy: bool = False,
    ) -> str:
        """Record one heartbeat; the command to answer with ("NULL" for none)."""
        with self._lock:
            job = self.jobs.get(panda_id)
            if job is None:
                return PandaCommand.TOBEKILLED
            if not legacy and attempt is not None and attempt != job.attempt:
                # as panda-server 1.0.4: its UPDATE is conditional on the attempt number, so a
                # wrong one records nothing and is answered like an unknown job
                return PandaCommand.TOBEKILLED
            already_final = job.final_state is not None
            job.states.append(state)
            job.last_fields = dict(fields)
            if state in FINAL:
                job.final_reports += 1
                job.final_state = state
                job.status = "holding"  # finished/failed wait in holding for the Adder
            elif not already_final:
                job.status = state
            if job.command:
                return job.command
            if attempt is not None and attempt != job.attempt:
                return "badattemptnr"
            if already_final and state in FINAL:
                return "alreadydone"
            return "NULL"

    def _status_of(self, panda_id: int) -> tuple[str, int, str | None]:
        with self._lock:
            job = self.jobs.get(panda_id)
            if job is None:
                return "not found", 0, None
            return job.status, job.attempt, job.command

    def _acquire_ranges(self, panda_id: int, n: int) -> list[dict[str, Any]]:
        with self._lock:
            job = self.jobs.get(panda_id)
            if job is None:
                return []
            out: list[dict[str, Any]] = []
            for item in job.event_ranges:
                if len(out) >= n:
                    break
                if item["eventRangeID"] not in job.event_status:
                    job.event_status[item["eventRangeID"]] = PandaEventStatus.RUNNING
                    out.append(dict(item))
            return out

    def _update_ranges(self, ranges: Sequence[Mapping[str, Any]]) -> int:
        with self._lock:
            done = 0
            for item in ranges:
                range_id = str(item.get("eventRangeID", ""))
                panda_id = int(range_id.split("-")[1]) if range_id.count("-") >= 3 else -1
                job = self.jobs.get(panda_id)
                if job is not None:
                    job.event_status[range_id] = str(item.get("eventStatus"))
                    done += 1
            return done


def _labels(label: str | None) -> set[str] | None:
    if label in (None, "managed"):
        return {"managed", "test", "prod_test", "install"}
    if label == "user":
        return {"user", "panda", "install"}
    if label == "unified":
        return None
    return {label}


def _event_ranges(spec: Mapping[str, Any], n: int) -> list[dict[str, Any]]:
    task, panda_id = spec["taskID"], spec["PandaID"]
    lfn = str(spec["inFiles"]).split(",")[0]
    guid = str(spec["GUID"]).split(",")[0]
    return [
        {
            "eventRangeID": f"{task}-{panda_id}-{k}-1-1",
            "startEvent": 10 * k + 1,
            "lastEvent": 10 * k + 10,
            "LFN": lfn,
            "GUID": guid,
            "scope": str(spec["scopeIn"]).split(",")[0],
        }
        for k in range(n)
    ]
