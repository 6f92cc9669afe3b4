"""A daemon asked to stop in the middle of a batch finishes the job at hand, leaves the others
and hands their claims back before it exits, so the next instance takes them at once.

The CE fetcher, a real act-daemon process, fetches claimed jobs one by one from a slow CE (the
scripted back end, a TEST DOUBLE of a CE: one second per fetch); SIGTERM arrives during the first
fetch.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from sqlalchemy.engine import URL

from act.common import exitcodes
from act.common.db import Database
from act.engine.fetcher import run_once
from act.service.settings import Settings
from tests.support.follow import context, put_job, row_of, submit_at_ce
from tests.support.procs import SCRIPTED_DAEMON, env, wait_for, write_config
from tests.support.scripted_backend import Script

JOBS = 5


def test_sigterm_mid_batch_leaves_the_unprocessed_jobs_unclaimed(
    db: Database, db_url: URL, script: Script, tmp_path: Path
) -> None:
    config = {
        "root": str(tmp_path / "root"),
        "db": {"url": db_url.render_as_string(hide_password=False)},
        "engine": {"ces": {"ce1": {"backend": "scripted"}}},
        "daemons": {"ce_fetcher": {"batch": 10}},
    }
    ctx = context(db, Settings.model_validate(config), "ce_fetcher")
    jobs = []
    for i in range(JOBS):
        ce_job_id = submit_at_ce(ctx, "ce1", f"t{i}")
        jobs.append(put_job(db, "finished", ce_job_id=ce_job_id, token=f"t{i}"))
    script.slow("fetch", 1.0)
    path = write_config(tmp_path / "act.yaml", config)
    log = tmp_path / "ce_fetcher.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen(
            [*SCRIPTED_DAEMON, "ce_fetcher", "--config", str(path), "--once"],
            env=env(tmp_path, ACT_SCRIPTED_BACKEND_STATE=str(script.path)),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        wait_for(lambda: script.calls("fetch"), timeout=60, what="the first fetch")
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert code == exitcodes.OK, text
    assert len(script.calls("fetch")) == 1, text
    rows = [row_of(db, job) for job in jobs]
    assert [row["state"] for row in rows] == ["done"] + ["finished"] * (JOBS - 1), text
    assert [row["lease_owner"] for row in rows] == [None] * JOBS
    left = JOBS - 1
    assert f"stop requested: {left} of {JOBS} job(s) left to the next instance" in text
    assert f"stopped; released {left} claimed job(s)" in text
    # the next instance takes them at once (no lease to wait for)
    script.slow("fetch", 0.0)
    run_once(ctx)
    assert [row_of(db, job)["state"] for job in jobs] == ["done"] * JOBS
