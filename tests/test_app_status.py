"""app_status on every backend: CE states onto PanDA states (CE states set through transitions with
the engine's actors), kills, cleaning, and event ranges reported to the PanDA TEST DOUBLE."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from act.atlas import events
from act.atlas.app_status import AppStatusOptions, run_once
from act.atlas.config import Context
from act.atlas.reporting import report_fields
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs
from act.common.schema import transitions as history
from act.common.states import Actor, Layer
from act.common.transitions import transition
from act.service.settings import Settings
from act.testing.panda import PandaTestServer
from tests.support.contexts import daemon_context
from tests.support.jobs import make_jobs
from tests.support.panda import settings_for

CE = {"flavour": "arc", "endpoint": "arc1"}


def make_settings(root: Path, server: PandaTestServer | None = None) -> Settings:
    data: dict[str, Any] = {
        "root": str(root),
        "queues": {
            "serve": {
                "NATIVE": {"ces": [CE], "truepilot": False},
                "TRUE": {"ces": [CE], "truepilot": True},
            }
        },
    }
    if server is not None:
        data["panda"] = settings_for(server).model_dump(mode="json")
    return Settings.model_validate(data)


def context(db: Database, settings: Settings, *, batch: int = 100) -> Context:
    return daemon_context(db, settings, "app_status", options=AppStatusOptions(), batch=batch)


def pair(
    db: Database, panda_state: str, ce_state: str, *, panda_id: int, queue: str = "NATIVE"
) -> tuple[int, int]:
    """A PanDA job and its CE job, each walked to its state through allowed transitions."""
    (pid,) = db.run(lambda c: make_jobs(c, Layer.PANDA, panda_state, first_panda_id=panda_id))
    (cid,) = db.run(lambda c: make_jobs(c, Layer.CE, ce_state))
    db.run(
        lambda c: c.execute(
            sa.update(ce_jobs)
            .where(ce_jobs.c.id == cid)
            .values(panda_job_id=pid, panda_id=panda_id, queue=queue, exit_code=3)
        )
    )
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs)
            .where(panda_jobs.c.id == pid)
            .values(queue=queue, next_report_at=None)
        )
    )
    return pid, cid


def ce_move(db: Database, cid: int, from_state: str, to_state: str, actor: Actor) -> None:
    assert db.run(lambda c: transition(c, Layer.CE, [cid], from_state, to_state, actor=actor))


def state(db: Database, layer: Layer, job_id: int) -> str:
    table = panda_jobs if layer is Layer.PANDA else ce_jobs
    with db.read() as conn:
        return str(conn.execute(sa.select(table.c.state).where(table.c.id == job_id)).scalar())


def panda(db: Database, pid: int) -> Any:
    with db.read() as conn:
        return conn.execute(sa.select(panda_jobs).where(panda_jobs.c.id == pid)).one()


@pytest.mark.parametrize(
    ("panda_state", "ce_state", "expected"),
    [
        ("queued", "submitted", "queued"),
        ("queued", "running", "running"),
        ("running", "submitted", "queued"),
        ("queued", "finishing", "transferring"),
        ("running", "finishing", "transferring"),
        ("running", "done", "tovalidate"),
        ("transferring", "done", "tovalidate"),
        ("queued", "finished", "queued"),  # outputs not fetched yet: wait
    ],
)
def test_progress(
    db: Database, tmp_path: Path, panda_state: str, ce_state: str, expected: str
) -> None:
    pid, cid = pair(db, panda_state, ce_state, panda_id=1)
    run_once(context(db, make_settings(tmp_path)))
    job = panda(db, pid)
    assert job.state == expected
    assert (job.next_report_at is not None) == (expected != panda_state)
    assert state(db, Layer.CE, cid) == ce_state  # files still needed by the validator


def test_batches_many_jobs_in_few_queries(db: Database, tmp_path: Path) -> None:
    jobs = [pair(db, "queued", "running", panda_id=100 + i) for i in range(7)]
    ctx = context(db, make_settings(tmp_path), batch=3)
    assert run_once(ctx) is True  # a full batch: more work waiting
    moved = [pid for pid, _ in jobs if state(db, Layer.PANDA, pid) == "running"]
    assert len(moved) == 3
    while run_once(ctx):
        pass
    assert all(state(db, Layer.PANDA, pid) == "running" for pid, _ in jobs)


@pytest.mark.parametrize(("queue", "ce_state"), [("TRUE", "done"), ("NATIVE", "donefailed")])
def test_ended_ce_jobs_go_to_the_validator_with_their_files(
    db: Database, tmp_path: Path, queue: str, ce_state: str
) -> None:
    """Truepilot jobs and failed CE jobs too: the validator publishes their logs and takes the
    pilot's error report, so their CE job (and its fetched files) stays until it has decided."""
    pid, cid = pair(db, "running", ce_state, panda_id=2, queue=queue)
    run_once(context(db, make_settings(tmp_path)))
    job = panda(db, pid)
    assert job.state == "tovalidate" and job.next_report_at is not None
    assert state(db, Layer.CE, cid) == ce_state


@pytest.mark.parametrize(
    ("ce_state", "diag"),
    [
        ("lost", "lost at the CE"),
        ("cancelled", "cancelled at the CE"),
    ],
)
def test_failures(db: Database, tmp_path: Path, ce_state: str, diag: str) -> None:
    pid, cid = pair(db, "running", ce_state, panda_id=3)
    run_once(context(db, make_settings(tmp_path)))
    job = panda(db, pid)
    assert job.state == "failed" and job.error_text.startswith(diag)
    assert report_fields(job.report)["pilotErrorDiag"].startswith(diag)
    assert job.error_code == 9002
    assert job.next_report_at is not None
    assert state(db, Layer.CE, cid) == "toclean"


def test_validated_job_gets_its_ce_job_cleaned(db: Database, tmp_path: Path) -> None:
    pid, cid = pair(db, "running", "done", panda_id=4)
    ctx = context(db, make_settings(tmp_path))
    run_once(ctx)
    assert state(db, Layer.CE, cid) == "done"  # the validator still needs the outputs
    db.run(
        lambda c: transition(c, Layer.PANDA, [pid], "tovalidate", "finished", actor=Actor.VALIDATOR)
    )
    run_once(ctx)
    assert state(db, Layer.CE, cid) == "toclean"


def test_kill(db: Database, tmp_path: Path) -> None:
    pid, cid = pair(db, "running", "running", panda_id=5)
    db.run(
        lambda c: transition(c, Layer.PANDA, [pid], "running", "tobekilled", actor=Actor.PROPAGATOR)
    )
    ctx = context(db, make_settings(tmp_path))
    run_once(ctx)
    assert state(db, Layer.CE, cid) == "tocancel"
    assert state(db, Layer.PANDA, pid) == "tobekilled"  # until the CE confirms
    ce_move(db, cid, "tocancel", "cancelling", Actor.CANCELLER)
    run_once(ctx)
    assert state(db, Layer.PANDA, pid) == "tobekilled"
    ce_move(db, cid, "cancelling", "cancelled", Actor.POLLER)
    run_once(ctx)
    job = panda(db, pid)
    assert job.state == "cancelled" and job.next_report_at is not None
    assert state(db, Layer.CE, cid) == "toclean"


def test_kill_of_a_job_never_submitted(db: Database, tmp_path: Path) -> None:
    (pid,) = db.run(lambda c: make_jobs(c, Layer.PANDA, "received", first_panda_id=6))
    db.run(
        lambda c: transition(c, Layer.PANDA, [pid], "received", "tobekilled", actor=Actor.OPERATOR)
    )
    run_once(context(db, make_settings(tmp_path)))
    assert state(db, Layer.PANDA, pid) == "cancelled"


def test_old_ce_job_of_a_resubmitted_job_is_cleaned_not_followed(
    db: Database, tmp_path: Path
) -> None:
    pid, old = pair(db, "queued", "done", panda_id=7)
    (new,) = db.run(lambda c: make_jobs(c, Layer.CE, "running"))
    db.run(
        lambda c: c.execute(sa.update(ce_jobs).where(ce_jobs.c.id == new).values(panda_job_id=pid))
    )
    run_once(context(db, make_settings(tmp_path)))
    assert state(db, Layer.PANDA, pid) == "running"  # the new job, not the old one's done
    assert state(db, Layer.CE, old) == "toclean"


def test_history_names_app_status(db: Database, tmp_path: Path) -> None:
    pid, _ = pair(db, "queued", "running", panda_id=8)
    run_once(context(db, make_settings(tmp_path)))
    with db.read() as conn:
        actors = conn.execute(
            sa.select(history.c.actor).where(
                history.c.layer == "panda", history.c.job_id == pid, history.c.to_state == "running"
            )
        ).all()
    assert [a.actor for a in actors] == ["app_status"]


# -- event ranges reported after the job ---------------------------------------------------------


@pytest.fixture
def server() -> Iterator[PandaTestServer]:
    with PandaTestServer() as test_server:
        yield test_server


def es_pair(db: Database, server: PandaTestServer, tmp_path: Path) -> tuple[int, int, list[str]]:
    (panda_id,) = server.seed(1, queue="NATIVE", event_service=True)
    client_ranges = server.jobs[panda_id].event_ranges[:3]
    ids = [r["eventRangeID"] for r in client_ranges]
    pid, cid = pair(db, "running", "done", panda_id=panda_id)
    out = tmp_path / "out"
    out.mkdir()
    dump = {str(panda_id): [{"eventRangeID": i, "eventStatus": "finished"} for i in ids]}
    (out / "event_status.dump.json").write_text(json.dumps(dump))
    text = events.EventState([dict(r) for r in client_ranges]).dump()
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs).where(panda_jobs.c.id == pid).values(event_ranges=text)
        )
    )
    db.run(
        lambda c: c.execute(
            sa.update(ce_jobs).where(ce_jobs.c.id == cid).values(output_dir=str(out))
        )
    )
    return pid, panda_id, ids


def test_event_ranges_reported_once_despite_the_http_500(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    assert server.event_ranges_bug  # panda-server 1.0.4's HTTP 500 after the update
    pid, panda_id, ids = es_pair(db, server, tmp_path)
    # the test double hands ranges out before they can be updated
    server.jobs[panda_id].event_status.update({i: "running" for i in ids})
    ctx = context(db, make_settings(tmp_path, server))
    run_once(ctx)
    assert len(server.received("event/update_event_ranges")) == 1
    assert server.event_status(panda_id) == {i: "finished" for i in ids}
    job = panda(db, pid)
    assert job.state == "tovalidate"
    stored = events.load(job.event_ranges)
    assert stored is not None and stored.reported_at is not None and stored.attempts == 1
    run_once(ctx)
    run_once(ctx)
    assert len(server.received("event/update_event_ranges")) == 1  # never sent again


def test_event_report_failing_is_retried_a_bounded_number_of_times(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    pid, _, _ = es_pair(db, server, tmp_path)
    server.inject(
        "http", status=403, count=10, body="forbidden", method="event/update_event_ranges"
    )
    ctx = context(db, make_settings(tmp_path, server))
    for _ in range(events.MAX_ATTEMPTS - 1):
        run_once(ctx)
        assert state(db, Layer.PANDA, pid) == "running"  # waits for the report
    run_once(ctx)
    job = panda(db, pid)
    assert job.state == "tovalidate"  # given up after MAX_ATTEMPTS: the job goes on
    stored = events.load(job.event_ranges)
    assert stored is not None and stored.attempts == events.MAX_ATTEMPTS
    assert stored.reported_at is None and stored.error
    run_once(ctx)
    assert server.faults_served == events.MAX_ATTEMPTS
