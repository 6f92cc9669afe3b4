"""End to end with the local back end and real processes: submitter → poller → fetcher →
(application: toclean) → cleaner, plus a failed job and a cancelled one, on every DB backend."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL

from act.common.db import Database
from act.common.states import Actor, Layer
from act.common.transitions import create_jobs, transition
from act.engine import canceller, cleaner, fetcher, poller, submitter
from act.engine.backend import CEReportedState
from act.engine.config import Context
from act.engine.runtime import pool
from act.service.daemons import resolve
from act.service.settings import Settings
from tests.support.follow import (
    context,
    history,
    put_job,
    row_of,
    set_columns,
    submit_at_ce,
)
from tests.support.follow import settings as follow_settings
from tests.support.procs import SCRIPTED_DAEMON, alive, daemon_once, wait_for, write_config
from tests.support.scripted_backend import install, job


def config(tmp_path: Path) -> Settings:
    return Settings.model_validate(
        {
            "root": str(tmp_path / "root"),
            "engine": {
                "ces": {
                    "local1": {
                        "backend": "local",
                        "options": {"slots": 4, "grace": 1},
                        "min_spacing": 0,
                    }
                },
                # Short poll intervals: the test waits for real processes, not for the clock.
                "poll": {"submitted": 0.2, "running": 0.2, "finishing": 0.2, "cancelling": 0.2},
            },
        }
    )


def requested(
    db: Database, description: dict[str, Any], panda_id: int, attempts_left: int = 1
) -> int:
    row = {
        "backend": "local",
        "candidates": "local1",
        "description": json.dumps(description),
        "attempts_left": attempts_left,
        "panda_id": panda_id,
    }
    [job] = db.run(
        lambda conn: create_jobs(conn, Layer.CE, [row], "tosubmit", actor=Actor.TRANSLATOR)
    )
    return job


def poll_until(db: Database, ctx: Context, job: int, states: set[str]) -> str:
    def reached() -> str | None:
        set_columns(db, job, next_check_at=None)
        poller.run_once(ctx)
        state: str = row_of(db, job)["state"]
        return state if state in states else None

    found: str = wait_for(reached, 60, f"job {job} to reach {sorted(states)}")
    return found


def test_jobs_go_through_the_whole_engine_with_real_processes(db: Database, tmp_path: Path) -> None:
    settings = config(tmp_path)
    contexts = {
        name: context(db, settings, name)
        for name in ("submitter", "poller", "ce_fetcher", "canceller", "cleaner")
    }
    ok = requested(
        db,
        {
            "executable": "/bin/sh",
            "arguments": ["-c", "echo hello > result.txt"],
            "outputs": ["result.txt"],
        },
        1,
    )
    bad = requested(db, {"executable": "/bin/sh", "arguments": ["-c", "echo oops >&2; exit 3"]}, 2)
    slow = requested(db, {"executable": "/bin/sleep", "arguments": ["300"]}, 3)
    try:
        submitter.run_once(contexts["submitter"])
        for job in (ok, bad, slow):
            assert row_of(db, job)["state"] == "submitted", history(db, job)
            assert row_of(db, job)["ce_job_id"]

        assert poll_until(db, contexts["poller"], ok, {"finished"}) == "finished"
        assert poll_until(db, contexts["poller"], bad, {"failed"}) == "failed"
        assert row_of(db, bad)["exit_code"] == 3

        fetcher.run_once(contexts["ce_fetcher"])
        done = row_of(db, ok)
        assert done["state"] == "done"
        assert (Path(done["output_dir"]) / "result.txt").read_text() == "hello\n"
        assert row_of(db, bad)["state"] == "donefailed"
        assert "oops" in row_of(db, bad)["error_text"]

        # The application asks to cancel the slow one.
        db.run(
            lambda conn: transition(
                conn,
                Layer.CE,
                [slow],
                row_of(db, slow)["state"],
                "tocancel",
                actor=Actor.APP_STATUS,
            )
        )
        canceller.run_once(contexts["canceller"])
        assert row_of(db, slow)["state"] == "cancelling"
        assert poll_until(db, contexts["poller"], slow, {"cancelled"}) == "cancelled"

        # The application is done with all three: the cleaner removes them from the CE.
        for job, state in ((ok, "done"), (bad, "donefailed"), (slow, "cancelled")):
            db.run(
                lambda conn: transition(
                    conn, Layer.CE, [job], state, "toclean", actor=Actor.APP_STATUS
                )
            )
        cleaner.run_once(contexts["cleaner"])
        for job in (ok, bad, slow):
            assert row_of(db, job)["state"] == "cleaned"
            assert history(db, job)[-1][3] == "CE confirmed the clean"
        engines = pool(contexts["poller"])
        ce = engines.ce("local1")
        ids = [row_of(db, job)["ce_job_id"] for job in (ok, bad, slow)]
        assert engines.backend(ce).status(ce, ids) == dict.fromkeys(ids)  # the CE forgot them
    finally:
        for ctx in contexts.values():
            pool(ctx).close()


def test_a_job_whose_runner_died_is_resubmitted_within_its_budget(
    db: Database, tmp_path: Path
) -> None:
    """A power cut for the local CE's runners (SIGKILL to each runner's process group) while
    the payloads run (before they start: tests/test_local_backend.py): the site lost the jobs,
    the engine resubmits one that has tries left, and one on its last try fails (its budget
    is spent)."""
    settings = config(tmp_path)
    contexts = {name: context(db, settings, name) for name in ("submitter", "poller")}
    sleep = {"executable": "/bin/sleep", "arguments": ["300"]}
    started = requested(db, sleep, 11, attempts_left=3)
    last_try = requested(db, sleep, 12, attempts_left=1)
    engines = pool(contexts["poller"])
    try:
        submitter.run_once(contexts["submitter"])
        ce = engines.ce("local1")
        workdir = tmp_path / "root" / "local-ce" / ce.name
        for job in (started, last_try):
            state_file = workdir / "jobs" / row_of(db, job)["ce_job_id"] / "state.json"
            wait_for(lambda: json.loads(state_file.read_text()).get("pgid"), what="payload")
            runner = json.loads(state_file.read_text())["runner_pid"]
            os.killpg(runner, signal.SIGKILL)
            wait_for(lambda: not alive(runner), what="runner gone")
        assert poll_until(db, contexts["poller"], started, {"toresubmit"}) == "toresubmit"
        assert poll_until(db, contexts["poller"], last_try, {"failed"}) == "failed"
        assert "the job was lost" in row_of(db, started)["error_text"]
        assert "the CE lost the job (the site's fault); 2 attempt(s) left" in str(
            history(db, started)[-1]
        )
        assert "no attempts left" in str(history(db, last_try)[-1])
        fetcher.run_once(context(db, settings, "ce_fetcher"))
        failed = row_of(db, last_try)
        assert failed["state"] == "donefailed", history(db, last_try)
        assert failed["error_text"].count("the job was lost") == 1, failed["error_text"]

        submitter.run_once(contexts["submitter"])  # cleans the old CE job, back to tosubmit
        submitter.run_once(contexts["submitter"])
        again = row_of(db, started)
        assert again["state"] == "submitted" and again["attempts_left"] == 2, history(db, started)
        assert poll_until(db, contexts["poller"], started, {"running"}) == "running"
    finally:
        for ctx in contexts.values():
            pool(ctx).close()
        for ce_dir in (tmp_path / "root" / "local-ce").glob("*/jobs/*"):
            state = json.loads((ce_dir / "state.json").read_text())
            for key in ("pgid", "runner_pid"):
                if alive(state.get(key)):
                    os.killpg(state[key], signal.SIGKILL)


def test_the_engine_daemons_are_registered_by_name() -> None:
    for name, module in (
        ("poller", poller),
        ("ce_fetcher", fetcher),
        ("canceller", canceller),
        ("cleaner", cleaner),
    ):
        spec = resolve(name)
        assert spec is module.DAEMON and spec.doc


def test_the_poller_and_cleaner_run_as_daemons_with_once(
    db: Database, db_url: URL, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``act-daemon poller --once`` (with the scripted double registered), in a child process."""
    script = install(monkeypatch, tmp_path / "scripted.json")
    settings = follow_settings(tmp_path)
    ce_job_id = submit_at_ce(context(db, settings, "x"), "ce1", "t1")
    polled = put_job(db, "running", ce_job_id=ce_job_id, token="t1")
    script.states(job(CEReportedState.FINISHED, exit_code=0), ce_job_id=ce_job_id)
    gone = put_job(db, "toclean", ce_job_id="ce1/999")  # the CE does not know it: cleaned
    config = write_config(
        tmp_path / "act.yaml",
        {
            "root": str(tmp_path / "root"),
            "db": {"url": db_url.render_as_string(hide_password=False)},
            "daemons": {"poller": {}, "cleaner": {}},
            "engine": {"ces": {"ce1": {"backend": "scripted"}}},
        },
    )
    for name in ("poller", "cleaner"):
        state = str(script.path)
        done = daemon_once(
            name, config, tmp_path, command=SCRIPTED_DAEMON, ACT_SCRIPTED_BACKEND_STATE=state
        )
        assert done.returncode == 0, done.stderr
    assert row_of(db, polled)["state"] == "finished"
    assert row_of(db, gone)["state"] == "cleaned"
    pids = {c["pid"] for c in script.calls("status")}
    assert pids and os.getpid() not in pids  # asked by the child process
