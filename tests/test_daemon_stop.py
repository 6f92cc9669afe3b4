"""A daemon asked to stop in the middle of a batch finishes the job at hand, leaves the others
and hands their claims back before it exits, so the next instance takes them at once.

The CE fetcher, a real act-daemon process, fetches claimed jobs one by one from a slow CE (the
scripted back end, a TEST DOUBLE of a CE: one second per fetch); SIGTERM arrives during the first
fetch.

The PanDA-side daemons stop the same way within a cycle (run_once with the stop flag raised at a
chosen step): the validator between the jobs it reads and settles, the propagator before sending
and between bulk calls; and the PanDA client's wait before a retry ends at once on a stop.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from act.atlas import propagator, runtime, validator
from act.atlas.config import Context as AtlasContext
from act.atlas.credentials import NoCredentials
from act.atlas.panda_client import PandaClient, PandaTransportError
from act.atlas.propagator import PropagatorOptions
from act.atlas.propagator import send as send_module
from act.common import exitcodes
from act.common.db import Database
from act.common.schema import panda_jobs
from act.common.states import Layer
from act.common.timeutil import utcnow
from act.engine.fetcher import run_once
from act.service.settings import Settings
from act.testing.panda import PandaTestServer
from tests.support import validating
from tests.support.contexts import daemon_context
from tests.support.follow import context, put_job, row_of, submit_at_ce
from tests.support.jobs import make_jobs
from tests.support.panda import settings_for
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


# -- the PanDA-side daemons and the PanDA client: the same, within one cycle --------------------


@pytest.mark.parametrize("step", ["_read", "_settle"])
def test_the_validator_stops_between_jobs_and_hands_the_rest_back(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """Asked to stop while reading the first job's files, the validator judges none (nothing is
    written before the judgement); while settling the first job, it settles that one only. The
    others stay in tovalidate, unclaimed, and the next cycle takes them."""
    settings = validating.make_settings(tmp_path)
    jobs = [validating.Job(db, tmp_path, 3001 + i, ce="donefailed") for i in range(3)]
    ctx = validating.context(db, settings)
    original = getattr(validator, step)
    calls: list[int] = []

    def stop_during(ctx_: Any, job: Any, opts: Any) -> Any:
        calls.append(job.panda_id)
        ctx.stop.set()
        return original(ctx_, job, opts)

    monkeypatch.setattr(validator, step, stop_during)
    assert validator.run_once(ctx) is False
    states = [job.row().state for job in jobs]
    assert len(calls) == 1
    if step == "_read":
        assert states == ["tovalidate"] * 3
    else:
        assert states[0] == "failed" and states[1:] == ["tovalidate"] * 2
    assert [job.row().lease_owner for job in jobs] == [None] * 3
    monkeypatch.setattr(validator, step, original)
    ctx.stop.clear()
    validator.run_once(ctx)
    assert [job.row().state for job in jobs] == ["failed"] * 3


def _due_jobs(db: Database, server: PandaTestServer, count: int) -> tuple[list[int], list[int]]:
    """``count`` running PanDA jobs (known to ``server``) whose report is due: ids, PandaIDs."""
    panda_ids = server.seed(count)
    ids = db.run(lambda c: make_jobs(c, Layer.PANDA, "running", count, first_panda_id=panda_ids[0]))
    due = utcnow() - timedelta(seconds=1)
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs).where(panda_jobs.c.id.in_(ids)), {"next_report_at": due}
        )
    )
    return ids, panda_ids


def _leases(db: Database, ids: list[int]) -> list[str | None]:
    with db.read() as conn:
        rows = conn.execute(sa.select(panda_jobs.c.lease_owner).where(panda_jobs.c.id.in_(ids)))
        return [row.lease_owner for row in rows]


@pytest.mark.parametrize("when", ["building the reports", "sending the first batch"])
def test_the_propagator_stops_between_batches_and_hands_the_rest_back(
    db: Database, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    """Asked to stop while building the reports, the propagator sends none; during the first
    bulk call (reports too big to share a call: one batch each, one call at a time), it records
    that call's answers and starts no other (one the pool had already begun may finish). The
    jobs left stay due, unclaimed, and the next cycle reports them."""
    with PandaTestServer() as server:
        ids, panda_ids = _due_jobs(db, server, 5)
        settings = Settings().model_copy(update={"panda": settings_for(server)})
        options = PropagatorOptions(batch_size=5, in_flight=1, outage_backoff=0.0)
        ctx: AtlasContext = daemon_context(db, settings, "propagator", options=options)
        client = runtime.panda_client(ctx, retries=0)
        monkeypatch.setattr(send_module, "in_batches", lambda sends, *_: [[s] for s in sends])
        if when == "building the reports":
            build = propagator.report_of

            def stop_while_building(*args: Any, **kwargs: Any) -> Any:
                ctx.stop.set()
                return build(*args, **kwargs)

            monkeypatch.setattr(propagator, "report_of", stop_while_building)
        else:
            send = client.update_jobs_bulk

            def stop_while_sending(*args: Any, **kwargs: Any) -> Any:
                ctx.stop.set()
                time.sleep(0.2)  # the cycle sees the stop before this call ends
                return send(*args, **kwargs)

            monkeypatch.setattr(client, "update_jobs_bulk", stop_while_sending)
        assert propagator.run_once(ctx) is False
        reported = [panda_id for panda_id in panda_ids if server.states(panda_id)]
        if when == "building the reports":
            assert reported == []
        else:
            assert reported in (panda_ids[:1], panda_ids[:2])
        assert _leases(db, ids) == [None] * 5
        monkeypatch.undo()
        ctx.stop.clear()
        propagator.run_once(ctx)
        assert all(server.states(panda_id) for panda_id in panda_ids)


def test_a_panda_retry_wait_ends_when_the_daemon_is_asked_to_stop() -> None:
    """PanDA down, 5 retries 30 s apart: the stop asked 0.3 s in ends the wait and the call
    (with its last error); a call made while stopping is not retried at all."""
    with PandaTestServer() as server:
        server.inject("http", status=503, count=20)
        stop = threading.Event()
        settings = settings_for(server, retries=5, backoff=30.0, backoff_max=30.0)
        client = PandaClient(settings, NoCredentials(), stop=stop)
        timer = threading.Timer(0.3, stop.set)
        timer.start()
        start = time.monotonic()
        with pytest.raises(PandaTransportError):
            client.get_job_status([1])
        timer.join()
        assert time.monotonic() - start < 5
        assert server.faults_served == 1
        with pytest.raises(PandaTransportError):
            client.get_job_status([1])
        assert server.faults_served == 2
        client.close()
