"""A TEST DOUBLE of a CE back end: :class:`ScriptedBackend` does what a test scripted, in memory.

It is for the engine daemons' unit tests of fault paths (the happy paths are also tested end to
end with the local back end). Its whole state — the script and everything that happened — lives in
one JSON file named by ``$ACT_SCRIPTED_BACKEND_STATE`` and guarded by an ``fcntl`` lock, so a
daemon run in-process (``run_daemon(..., once=True)``) or in a separate process
(``python -m tests.support.scripted_backend NAME --config ... --once``, which is ``act-daemon``
with the double registered) sees the same script, and the test reads back what happened.

A test scripts it through :class:`Script`::

    script = install(monkeypatch, tmp_path / "scripted.json")  # engine.ces.x.backend: scripted
    script.ce_unavailable("ce1")                   # every call for ce1 raises CEUnavailable
    script.submit_error("bad xrsl", permanent=True, token="t1")
    script.submit_error("busy", times=2)           # the next two submissions fail, transiently
    script.lose_submit_reply("ce1")                # the CE takes the jobs, then the reply is lost
    script.find_blind("ce1", times=1)              # the next find lists nothing (a lagging CE)
    script.find_unavailable("ce1")                 # find raises CEUnavailable (the rest works)
    script.states(job(CEReportedState.RUNNING),
                  job(CEReportedState.FAILED, errors=["LRMS error: (271)"]),
                  job_id=7)                        # one step per status call, the last repeats
    script.outcome("kill", "error", error="denied", ce_job_id="ce1/1")
    script.fetch({"heartbeat.json": "{}"}, token="t1")
    script.slow("fetch", 1.0)                      # each fetch takes a second (a slow CE)
    assert len(script.calls("submit", ce="ce1")) == 1

Rules are chosen most specific first: ``ce_job_id``, ``token``, ``job_id`` (``ce_jobs.id``),
``ce``, then the default (no selector). Without a rule a submission is accepted, a job stays
SUBMITTED, kill/clean/restart succeed and fetch writes nothing. A successful kill makes the job
CANCELLED; a successful clean makes the CE forget it (status ``None``, later calls ``gone``).
``limits`` and ``close`` never raise; they are recorded like every other call.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from act.engine.backend import (
    BACKENDS,
    CE,
    BackendFactory,
    CEReportedState,
    CEUnavailable,
    Fetched,
    JobStatus,
    Limits,
    Outcome,
    SubmitRequest,
    Submitted,
)

if TYPE_CHECKING:
    import pytest

    from act.common.db import Database
    from act.engine.config import EngineConfig

ENV_STATE = "ACT_SCRIPTED_BACKEND_STATE"
NAME = "scripted"
TARGET = "tests.support.scripted_backend:ScriptedBackend"
UNKNOWN = "unknown"  # a state step: the CE does not know the job (status returns None)

OutcomeKind = Literal["ok", "gone", "error"]


def _empty() -> dict[str, Any]:
    return {
        "next_id": 1,
        "unavailable": {},  # ce -> cause
        "lose_reply": {},  # ce -> cause
        "find_blind": {},  # ce -> how many more find calls list nothing (-1: all)
        "find_down": {},  # ce -> cause
        "limits": {},  # ce -> Limits fields
        "slow": {},  # method -> seconds each call takes, after it is recorded
        "rules": {"submit": {}, "states": {}, "kill": {}, "clean": {}, "restart": {}, "fetch": {}},
        "jobs": {},  # ce_job_id -> record
        "calls": [],
    }


class _StateFile:
    """The JSON file and its lock; ``edit()`` is one atomic read-modify-write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = path.with_name(path.name + ".lock")

    @contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock, "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = json.loads(self.path.read_text()) if self.path.exists() else _empty()
                try:
                    yield state
                finally:  # a call that raises (CEUnavailable) is recorded all the same
                    self._write(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, state: dict[str, Any]) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.path)

    def read(self) -> dict[str, Any]:
        with self.edit() as state:
            copy: dict[str, Any] = json.loads(json.dumps(state))
            return copy


def _selector(
    *,
    ce_job_id: str | None = None,
    token: str | None = None,
    job_id: int | None = None,
    ce: str | None = None,
) -> str:
    given = [
        f"{kind}:{value}"
        for kind, value in (("ce_job_id", ce_job_id), ("token", token), ("job_id", job_id))
        if value is not None
    ] + ([f"ce:{ce}"] if ce is not None else [])
    if len(given) > 1:
        raise ValueError(f"give at most one selector, not {given}")
    return given[0] if given else "*"


def _selectors(job: Mapping[str, Any]) -> list[str]:
    """A job's rule keys, most specific first."""
    return [
        f"ce_job_id:{job['ce_job_id']}",
        f"token:{job['token']}",
        f"job_id:{job['job_id']}",
        f"ce:{job['ce']}",
        "*",
    ]


def _rule(rules: Mapping[str, Any], job: Mapping[str, Any]) -> tuple[str, Any] | None:
    for key in _selectors(job):
        if key in rules:
            return key, rules[key]
    return None


def job(
    state: CEReportedState,
    *,
    exit_code: int | None = None,
    errors: Sequence[str] = (),
    raw_state: str | None = None,
    restartable: bool = False,
    cpu_seconds: int | None = None,
    wall_seconds: int | None = None,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
    worker_node: str | None = None,
) -> dict[str, Any]:
    """One step of a job's scripted state progression."""
    return {
        "state": state.value,
        "exit_code": exit_code,
        "errors": list(errors),
        "raw_state": raw_state or state.name,
        "restartable": restartable,
        "cpu_seconds": cpu_seconds,
        "wall_seconds": wall_seconds,
        "started_at": started_at.isoformat() if started_at else None,
        "ended_at": ended_at.isoformat() if ended_at else None,
        "worker_node": worker_node,
    }


class Script:
    """How a test scripts the double and reads what happened (through the shared state file)."""

    def __init__(self, path: Path) -> None:
        self.file = _StateFile(path)
        self.path = path

    # -- scripting ---------------------------------------------------------------------------

    def ce_unavailable(self, ce: str, cause: str | None = "connection refused") -> None:
        """Every call for ``ce`` (but limits/close) raises CEUnavailable; ``cause=None`` heals."""
        with self.file.edit() as state:
            if cause is None:
                state["unavailable"].pop(ce, None)
            else:
                state["unavailable"][ce] = cause

    def lose_submit_reply(self, ce: str, cause: str | None = "read timed out") -> None:
        """Submissions to ``ce`` are taken by the CE, then CEUnavailable is raised (lost reply)."""
        with self.file.edit() as state:
            if cause is None:
                state["lose_reply"].pop(ce, None)
            else:
                state["lose_reply"][ce] = cause

    def find_blind(self, ce: str, times: int | None = 1) -> None:
        """The next ``times`` find calls for ``ce`` list nothing, as a CE that has not yet
        written the jobs it accepted (``None``: every call; 0 heals)."""
        with self.file.edit() as state:
            state["find_blind"][ce] = -1 if times is None else times

    def find_unavailable(self, ce: str, cause: str | None = "read timed out") -> None:
        """find for ``ce`` raises CEUnavailable; ``cause=None`` heals."""
        with self.file.edit() as state:
            if cause is None:
                state["find_down"].pop(ce, None)
            else:
                state["find_down"][ce] = cause

    def slow(self, method: str, seconds: float) -> None:
        """Each later call of ``method`` (``fetch``) takes ``seconds`` after it is recorded, as a
        slow CE would: a test can act while the daemon waits in it (0 heals)."""
        with self.file.edit() as state:
            state.setdefault("slow", {})[method] = seconds

    def limits(self, ce: str, **fields: Any) -> None:
        """What ``limits(ce)`` returns (``Limits`` fields; default ``can_restart=True``)."""
        with self.file.edit() as state:
            state["limits"][ce] = fields

    def submit_error(
        self,
        error: str,
        *,
        permanent: bool = False,
        times: int | None = None,
        token: str | None = None,
        job_id: int | None = None,
        ce: str | None = None,
    ) -> None:
        """Submissions matching the selector fail with ``error`` (``times`` times, or always)."""
        with self.file.edit() as state:
            state["rules"]["submit"][_selector(token=token, job_id=job_id, ce=ce)] = {
                "error": error,
                "permanent": permanent,
                "times": times,
            }

    def states(
        self,
        *steps: dict[str, Any] | str,
        ce_job_id: str | None = None,
        token: str | None = None,
        job_id: int | None = None,
        ce: str | None = None,
    ) -> None:
        """The states matching jobs go through: one step per status call, the last one stays.

        A step is :func:`job` (...) or :data:`UNKNOWN`. Setting a rule restarts the progression.
        """
        if not steps:
            raise ValueError("give at least one step")
        key = _selector(ce_job_id=ce_job_id, token=token, job_id=job_id, ce=ce)
        with self.file.edit() as state:
            state["rules"]["states"][key] = list(steps)
            for record in state["jobs"].values():
                record["positions"].pop(key, None)

    def outcome(
        self,
        method: Literal["kill", "clean", "restart"],
        result: OutcomeKind,
        *,
        error: str | None = None,
        ce_job_id: str | None = None,
        token: str | None = None,
        job_id: int | None = None,
        ce: str | None = None,
    ) -> None:
        """What kill/clean/restart answers for matching jobs: ok, gone or error."""
        with self.file.edit() as state:
            state["rules"][method][
                _selector(ce_job_id=ce_job_id, token=token, job_id=job_id, ce=ce)
            ] = {"result": result, "error": error}

    def fetch(
        self,
        files: Mapping[str, str | bytes] | None = None,
        *,
        error: str | None = None,
        gone: bool = False,
        diagnostics: str | None = None,
        ce_job_id: str | None = None,
        token: str | None = None,
        job_id: int | None = None,
        ce: str | None = None,
    ) -> None:
        """What fetch writes into dest (relative path -> content) or the error it reports."""
        encoded = {
            name: (data.decode("latin-1") if isinstance(data, bytes) else data)
            for name, data in (files or {}).items()
        }
        with self.file.edit() as state:
            state["rules"]["fetch"][
                _selector(ce_job_id=ce_job_id, token=token, job_id=job_id, ce=ce)
            ] = {"files": encoded, "error": error, "gone": gone, "diagnostics": diagnostics}

    # -- reading back ------------------------------------------------------------------------

    def calls(self, method: str | None = None, *, ce: str | None = None) -> list[dict[str, Any]]:
        """Recorded calls (``method``, ``ce``, ``ids``, ``tokens``, ``job_ids``, ``pid``)."""
        return [
            call
            for call in self.file.read()["calls"]
            if (method is None or call["method"] == method) and (ce is None or call["ce"] == ce)
        ]

    def jobs(self) -> dict[str, dict[str, Any]]:
        """The CE's jobs by ce_job_id (``ce``, ``token``, ``job_id``, ``killed``, ...)."""
        jobs: dict[str, dict[str, Any]] = self.file.read()["jobs"]
        return jobs

    def submitted_tokens(self, ce: str | None = None) -> list[str]:
        """Every token the CE accepted, once per accepted submission (duplicates show)."""
        return [
            record["token"] for record in self.jobs().values() if ce is None or record["ce"] == ce
        ]

    def ce_job_id(self, token: str) -> str:
        for ce_job_id, record in self.jobs().items():
            if record["token"] == token:
                return ce_job_id
        raise KeyError(f"no job with token {token!r}")


class ScriptedBackend:
    """TEST DOUBLE of :class:`act.engine.backend.Backend`, driven by a :class:`Script`."""

    def __init__(self, *, settings: EngineConfig, db: Database | None, log: logging.Logger) -> None:
        path = os.environ.get(ENV_STATE)
        if not path:
            raise RuntimeError(f"ScriptedBackend (a test double) needs ${ENV_STATE}")
        self.file = _StateFile(Path(path))
        self.settings = settings
        self.log = log
        self.closed = False

    @staticmethod
    def _record(state: dict[str, Any], method: str, ce: str | None, **what: Any) -> None:
        state["calls"].append(
            {
                "method": method,
                "ce": ce,
                "ids": list(what.get("ids", [])),
                "tokens": list(what.get("tokens", [])),
                "job_ids": list(what.get("job_ids", [])),
                "pid": os.getpid(),
            }
        )

    @staticmethod
    def _check(state: Mapping[str, Any], ce: CE) -> None:
        cause = state["unavailable"].get(ce.name)
        if cause is not None:  # refused: nothing reaches the CE
            raise CEUnavailable(ce.name, cause, maybe_sent=False)

    def limits(self, ce: CE) -> Limits:
        with self.file.edit() as state:
            self._record(state, "limits", ce.name)
            fields = {"can_restart": True, **state["limits"].get(ce.name, {})}
        return Limits(**fields)

    def submit(self, ce: CE, jobs: Sequence[SubmitRequest]) -> list[Submitted]:
        with self.file.edit() as state:
            self._record(
                state,
                "submit",
                ce.name,
                tokens=[r.token for r in jobs],
                job_ids=[r.job_id for r in jobs],
            )
            self._check(state, ce)
            results = [self._submit_one(state, ce, request) for request in jobs]
            lost = state["lose_reply"].get(ce.name)
        if lost is not None:
            raise CEUnavailable(ce.name, lost)
        return results

    @staticmethod
    def _submit_one(state: dict[str, Any], ce: CE, request: SubmitRequest) -> Submitted:
        probe = {"ce_job_id": None, "token": request.token, "job_id": request.job_id, "ce": ce.name}
        found = _rule(state["rules"]["submit"], probe)
        if found is not None:
            key, rule = found
            if rule["times"] is None or rule["times"] > 0:
                if rule["times"] is not None:
                    rule["times"] -= 1
                    if rule["times"] == 0:
                        del state["rules"]["submit"][key]
                return Submitted(request.job_id, None, rule["error"], rule["permanent"])
        ce_job_id = f"{ce.name}/{state['next_id']}"
        state["next_id"] += 1
        state["jobs"][ce_job_id] = {
            "ce_job_id": ce_job_id,
            "ce": ce.name,
            "token": request.token,
            "job_id": request.job_id,
            "panda_id": request.panda_id,
            "description": request.description,
            "input_dir": str(request.input_dir) if request.input_dir else None,
            "killed": False,
            "cleaned": False,
            "restarts": 0,
            "positions": {},
        }
        return Submitted(request.job_id, ce_job_id)

    def status(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, JobStatus | None]:
        with self.file.edit() as state:
            self._record(state, "status", ce.name, ids=ce_job_ids)
            self._check(state, ce)
            return {i: self._status_one(state, ce, i) for i in ce_job_ids}

    @staticmethod
    def _status_one(state: dict[str, Any], ce: CE, ce_job_id: str) -> JobStatus | None:
        record = state["jobs"].get(ce_job_id)
        if record is None or record["ce"] != ce.name or record["cleaned"]:
            return None
        if record["killed"]:
            return JobStatus(ce_job_id, CEReportedState.CANCELLED, "KILLED")
        found = _rule(state["rules"]["states"], record)
        if found is None:
            return JobStatus(ce_job_id, CEReportedState.SUBMITTED, "QUEUED")
        key, steps = found
        position = record["positions"].get(key, 0)
        record["positions"][key] = position + 1
        step = steps[min(position, len(steps) - 1)]
        if step == UNKNOWN:
            return None
        return JobStatus(
            ce_job_id,
            CEReportedState(step["state"]),
            step["raw_state"],
            exit_code=step["exit_code"],
            errors=tuple(step["errors"]),
            worker_node=step["worker_node"],
            cpu_seconds=step["cpu_seconds"],
            wall_seconds=step["wall_seconds"],
            started_at=datetime.fromisoformat(step["started_at"]) if step["started_at"] else None,
            ended_at=datetime.fromisoformat(step["ended_at"]) if step["ended_at"] else None,
            restartable=step["restartable"],
        )

    def find(self, ce: CE, tokens: Sequence[str]) -> dict[str, str]:
        with self.file.edit() as state:
            self._record(state, "find", ce.name, tokens=tokens)
            self._check(state, ce)
            down = state["find_down"].get(ce.name)
            if down is not None:
                raise CEUnavailable(ce.name, down)
            blind = state["find_blind"].get(ce.name, 0)
            if blind:
                state["find_blind"][ce.name] = blind - 1 if blind > 0 else blind
                return {}
            wanted = set(tokens)
            return {
                record["token"]: ce_job_id
                for ce_job_id, record in state["jobs"].items()
                if record["ce"] == ce.name and record["token"] in wanted and not record["cleaned"]
            }

    def fetch(self, ce: CE, ce_job_id: str, dest: Path, *, failed: bool) -> Fetched:
        with self.file.edit() as state:
            self._record(state, "fetch", ce.name, ids=[ce_job_id])
            delay = float(state.get("slow", {}).get("fetch", 0.0))
            self._check(state, ce)
            record = state["jobs"].get(ce_job_id)
            if record is None or record["ce"] != ce.name or record["cleaned"]:
                return Fetched(ce_job_id, gone=True, error="the CE does not know the job")
            found = _rule(state["rules"]["fetch"], record)
            rule = found[1] if found else {"files": {}, "error": None, "gone": False}
        time.sleep(delay)  # outside the lock: the test reads the calls meanwhile
        if rule["gone"]:
            return Fetched(ce_job_id, gone=True, error="the CE does not know the job")
        if rule["error"] is not None:
            return Fetched(ce_job_id, error=rule["error"], diagnostics=rule.get("diagnostics"))
        written, size = [], 0
        for name, text in sorted(rule["files"].items()):
            relative = PurePosixPath(name)
            if relative.is_absolute() or ".." in relative.parts:
                return Fetched(ce_job_id, error=f"unsafe file name {name!r}")
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            data = text.encode("latin-1")
            target.write_bytes(data)
            written.append(str(relative))
            size += len(data)
        return Fetched(ce_job_id, tuple(written), size, diagnostics=rule.get("diagnostics"))

    def kill(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        return self._act("kill", ce, ce_job_ids)

    def clean(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        return self._act("clean", ce, ce_job_ids)

    def restart(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        return self._act("restart", ce, ce_job_ids)

    def _act(self, method: str, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        with self.file.edit() as state:
            self._record(state, method, ce.name, ids=ce_job_ids)
            self._check(state, ce)
            results = {}
            for ce_job_id in ce_job_ids:
                record = state["jobs"].get(ce_job_id)
                if record is None or record["ce"] != ce.name or record["cleaned"]:
                    results[ce_job_id] = Outcome(ce_job_id, ok=False, gone=True)
                    continue
                found = _rule(state["rules"][method], record)
                rule = found[1] if found else {"result": "ok", "error": None}
                if rule["result"] == "gone":
                    results[ce_job_id] = Outcome(ce_job_id, ok=False, gone=True)
                elif rule["result"] == "error":
                    error = rule["error"] or f"{method} failed (scripted)"
                    results[ce_job_id] = Outcome(ce_job_id, ok=False, error=error)
                else:
                    if method == "kill":
                        record["killed"] = True
                    elif method == "clean":
                        record["cleaned"] = True
                    else:
                        record["restarts"] += 1
                        record["positions"] = {}
                    results[ce_job_id] = Outcome(ce_job_id, ok=True)
            return results

    def close(self) -> None:
        self.closed = True
        with self.file.edit() as state:
            self._record(state, "close", None)


#: What make_backend builds this back end with (TARGET), declared so that mypy
#: checks it (make check): built with the engine's keywords, it is a Backend. A method missing or
#: of another signature fails the type check, not the first daemon that calls it.
backend_factory: BackendFactory = ScriptedBackend


def install(monkeypatch: pytest.MonkeyPatch | None = None, path: Path | None = None) -> Script:
    """Register the double as back end ``scripted`` and point it at ``path``.

    With ``monkeypatch`` (in a test) both are undone after the test; without it (in a child
    process, see ``__main__`` below) the current environment's ``$ACT_SCRIPTED_BACKEND_STATE`` is
    used when ``path`` is not given.
    """
    if path is None:
        if not os.environ.get(ENV_STATE):
            raise RuntimeError(f"install() needs a path or ${ENV_STATE}")
        path = Path(os.environ[ENV_STATE])
    if monkeypatch is not None:
        monkeypatch.setitem(BACKENDS, NAME, TARGET)
        monkeypatch.setenv(ENV_STATE, str(path))
    else:
        BACKENDS[NAME] = TARGET
        os.environ[ENV_STATE] = str(path)
    return Script(path)


if __name__ == "__main__":
    # ``python -m tests.support.scripted_backend NAME [act-daemon options]``: act-daemon with the
    # double registered, for tests that run an engine daemon in a separate process.
    from act.service.daemon import main

    install()
    sys.exit(main())
