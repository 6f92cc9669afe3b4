"""A local CE job's state, read from its files (:mod:`act.local.jobfiles`), and its processes.

:func:`current` is the job's state file with a runner that died (or never started) recorded as
the job's end; :func:`job_status` maps it to the engine's :class:`JobStatus`;
:func:`stop` and :func:`running` signal and watch the job's runner and its process groups.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from act.engine.backend import CEReportedState, JobStatus
from act.local import jobfiles as jf

#: A job directory without state.json this long after submission had its runner never start.
NEVER_STARTED = 60.0

#: The runner's state names (:mod:`act.local.jobfiles`) as the engine reads them.
STATES = {
    jf.QUEUED: CEReportedState.SUBMITTED,
    jf.RUNNING: CEReportedState.RUNNING,
    jf.FINISHING: CEReportedState.FINISHING,
    jf.FINISHED: CEReportedState.FINISHED,
    jf.FAILED: CEReportedState.FAILED,
    jf.KILLED: CEReportedState.CANCELLED,
}


def job_status(ce_job_id: str, state: dict[str, Any]) -> JobStatus:
    """The status of a job whose state file (:func:`current`) is ``state``."""
    name = state.get("state")
    if name not in STATES:
        return JobStatus(
            ce_job_id,
            CEReportedState.FAILED,
            "unreadable",
            errors=("state.json is unreadable",),
        )
    errors = state.get("errors")
    started, ended = _time(state.get("started_at")), _time(state.get("ended_at"))
    exit_code = _int(state.get("exit_code"))
    return JobStatus(
        ce_job_id,
        STATES[name],
        str(name),
        exit_code=exit_code,
        errors=tuple(str(e)[:1000] for e in errors[:20]) if isinstance(errors, list) else (),
        lost=name == jf.FAILED and state.get(jf.LOST) is True,
        worker_node=str(state["node"])[:255] if state.get("node") else None,
        cpu_seconds=_int(state.get("cpu_seconds")),
        wall_seconds=_int(state.get("wall_seconds")),
        max_rss_kb=_int(state.get("max_rss_kb")),
        started_at=started,
        ended_at=ended,
    )


def current(jobdir: Path) -> dict[str, Any]:
    """state.json, with a runner that died (or never started) recorded as the job's end.

    A runner gone before the payload's exit was recorded (it never started, died with the job
    queued, or died while the payload ran: the payload's fate is unknown) leaves a job the site
    lost (``jf.LOST`` in its state), resubmitted by the engine; a payload failure is only what
    the payload's recorded exit says (a runner that died while uploading the outputs of a payload
    that failed).
    """
    state = jf.read_json(jobdir / jf.STATE)
    if state is None:
        job = jf.read_json(jobdir / jf.JOB) or {}
        submitted = _time(job.get("submitted_at"))
        age = time.time() - submitted.timestamp() if submitted else NEVER_STARTED + 1
        if age <= NEVER_STARTED:
            return {"state": jf.QUEUED}
        with jf.locked(jobdir):
            state = jf.read_json(jobdir / jf.STATE)
            if state is None:
                state = {
                    "state": jf.FAILED,
                    "ended_at": jf.now_iso(),
                    "errors": ["the job was lost: its runner never started"],
                    jf.LOST: True,
                }
                _record(jobdir, state)
        return state
    if state.get("state") in jf.ENDED or jf.alive(
        state.get("runner_pid"), state.get("runner_start")
    ):
        return state
    with jf.locked(jobdir):
        state = jf.read_json(jobdir / jf.STATE) or {}
        if state.get("state") in jf.ENDED:
            return state
        for key in ("pgid", "stageout_pgid"):  # orphans of the runner
            for pid in jf.group_members(state.get(key)):
                signal_pid(pid, signal.SIGKILL)
        died = f"runner died (pid {state.get('runner_pid')})"
        exit_code = _int(state.get("exit_code"))
        lost = True
        if state.get("state") == jf.QUEUED:
            errors = [f"the job was lost: its {died} before starting the payload"]
        elif state.get("state") != jf.FINISHING or exit_code is None:
            errors = [
                f"the job was lost: its {died} while the payload ran, before recording its exit"
            ]
        elif exit_code == 0:  # never "finished" with outputs half uploaded
            errors = [
                f"the job was lost: its {died} while uploading the outputs of a payload that"
                " succeeded, before recording the job's end"
            ]
        else:
            lost = False
            errors = [
                f"payload failed: exit code {exit_code} (then the {died} while uploading its"
                " outputs)"
            ]
        state[jf.LOST] = lost
        _record(jobdir, jf.ended(state, jf.FAILED, errors))
        return state


def _record(jobdir: Path, state: dict[str, Any]) -> None:
    """Write the end :func:`current` found; on a full disk the end is reported all the same,
    and the next read, finding the same dead runner, records it when there is room."""
    try:
        jf.write_json(jobdir / jf.STATE, state)
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise


def stop(jobdir: Path, signum: int) -> None:
    """Send ``signum`` to a job's runner and to every process of its payload's and its
    upload's groups."""
    state = jf.read_json(jobdir / jf.STATE) or {}
    if jf.alive(state.get("runner_pid"), state.get("runner_start")):
        signal_pid(state["runner_pid"], signum)
    for key in ("pgid", "stageout_pgid"):
        for pid in jf.group_members(state.get(key)):
            signal_pid(pid, signum)


def signal_pid(pid: int, signum: int) -> None:
    """Send ``signum`` to ``pid``, if it is still there and ours to signal."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def running(jobdir: Path) -> bool:
    """Whether the job's runner, or a process of its payload's or its upload's group, is alive."""
    state = jf.read_json(jobdir / jf.STATE) or {}
    return jf.alive(state.get("runner_pid"), state.get("runner_start")) or any(
        jf.group_members(state.get(key)) for key in ("pgid", "stageout_pgid")
    )


def panda_id_of(jobdir: Path) -> int | None:
    """The PanDA ID the job was submitted for (its job file), for log lines."""
    value = (jf.read_json(jobdir / jf.JOB) or {}).get("panda_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)
