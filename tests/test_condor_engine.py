"""The engine daemons with the HTCondor back end on FakeSchedd (the in-memory test double; no
HTCondor daemons can be installed here), on every database of the ``db`` fixture.

The real submitter, poller, CE fetcher, canceller and cleaner run (``run_once``); the test moves
the fake's jobs as a schedd would (idle, running, held, completed, removed, to history).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from act.common.db import Database
from act.common.schema import ce_jobs, ces
from act.common.states import Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs, transition
from act.condor.fake_schedd import FakeSchedd
from act.engine import canceller, cleaner, fetcher, poller, submitter
from act.engine.config import Context
from act.engine.runtime import pool
from act.engine.submitter import submission as submitter_submission
from act.service.settings import Settings
from tests.support.condor import install_fake, sh
from tests.support.follow import context, history, row_of, set_columns

DAEMONS = ("submitter", "poller", "ce_fetcher", "canceller", "cleaner")


def ce_config(**options: Any) -> dict[str, Any]:
    return {
        "backend": "condor",
        "url": "ce01.example.org:9619",
        "min_spacing": 0,
        "options": options,
    }


def config(tmp_path: Path, ces_: dict[str, dict[str, Any]], **engine: Any) -> Settings:
    return Settings.model_validate(
        {
            "root": str(tmp_path / "root"),
            "engine": {"ces": ces_, "strategy": "round_robin", **engine},
        }
    )


class Run:
    def __init__(self, db: Database, settings: Settings, tmp_path: Path) -> None:
        self.db = db
        self.settings = settings
        self.web = tmp_path / "web"
        self.ctx: dict[str, Context] = {name: context(db, settings, name) for name in DAEMONS}

    def request(self, panda_id: int, candidates: str = "condor1", attempts: int = 3) -> int:
        row = {
            "backend": "condor",
            "candidates": candidates,
            "description": sh(panda_id, self.web),
            "attempts_left": attempts,
            "panda_id": panda_id,
        }
        [job] = self.db.run(
            lambda conn: create_jobs(conn, Layer.CE, [row], "tosubmit", actor=Actor.TRANSLATOR)
        )
        return job

    def poll(self, *jobs: int) -> None:
        for job in jobs:
            set_columns(self.db, job, next_check_at=None)
        poller.run_once(self.ctx["poller"])

    def state(self, job: int) -> str:
        return str(row_of(self.db, job)["state"])

    def app_moves(self, job: int, target: str) -> None:
        state = self.state(job)
        moved = self.db.run(
            lambda conn: transition(conn, Layer.CE, [job], state, target, actor=Actor.APP_STATUS)
        )
        assert moved == [job]

    def close(self) -> None:
        for ctx in self.ctx.values():
            pool(ctx).close()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeSchedd:
    return install_fake(monkeypatch)


def _run(db: Database, tmp_path: Path, **engine: Any) -> Run:
    ces_ = engine.pop("ces", None) or {"condor1": ce_config(status_batch=2)}
    return Run(db, config(tmp_path, ces_, **engine), tmp_path)


def test_submit_run_complete_fetch_clean(db: Database, fake: FakeSchedd, tmp_path: Path) -> None:
    run = _run(db, tmp_path)
    jobs = [run.request(500 + i) for i in range(3)]
    submitter.run_once(run.ctx["submitter"])
    rows = {job: row_of(db, job) for job in jobs}
    assert [r["state"] for r in rows.values()] == ["submitted"] * 3
    assert sorted(r["ce_job_id"] for r in rows.values()) == ["1.0", "1.1", "1.2"]
    assert [c for c, _ in fake.calls] == ["submit"]  # one transaction for the batch
    ids = {job: str(rows[job]["ce_job_id"]) for job in jobs}
    for job in jobs:
        assert fake.job(ids[job]).ad["ActToken"] == rows[job]["token"]

    for job in jobs:
        fake.running(ids[job])
    fake.calls.clear()
    run.poll(*jobs)
    assert [run.state(job) for job in jobs] == ["running"] * 3
    assert row_of(db, jobs[0])["worker_node"] == "wn1.example.org"
    queries = [detail for call, detail in fake.calls if call == "query"]
    assert len(queries) == 2 and all(q.count("ProcId") == 1 for q in queries)  # status_batch 2

    iwd = Path(str(fake.job(ids[jobs[0]]).ad["Iwd"]))
    (iwd / "heartbeat.json").write_text('{"state": "finished"}')
    fake.complete(ids[jobs[0]], 0)  # leaves the queue: found in history
    fake.complete(ids[jobs[1]], 3)
    fake.running(ids[jobs[2]], grid="COMPLETED")
    run.poll(*jobs)
    assert [run.state(job) for job in jobs] == ["finished", "failed", "finishing"]
    assert row_of(db, jobs[1])["error_text"] == "exit code 3"
    assert any(call == "history" for call, _ in fake.calls)

    fetcher.run_once(run.ctx["ce_fetcher"])
    done = row_of(db, jobs[0])
    assert done["state"] == "done"
    assert (Path(done["output_dir"]) / "heartbeat.json").read_text() == '{"state": "finished"}'
    assert run.state(jobs[1]) == "donefailed"
    assert "JobStatus completed; ExitCode 3" in str(row_of(db, jobs[1])["error_text"])

    run.app_moves(jobs[0], "toclean")
    cleaner.run_once(run.ctx["cleaner"])
    assert run.state(jobs[0]) == "cleaned"
    assert not iwd.exists()
    run.close()


def test_a_held_job_is_released_by_the_restart_rule(
    db: Database, fake: FakeSchedd, tmp_path: Path
) -> None:
    run = _run(db, tmp_path)
    job = run.request(600)
    submitter.run_once(run.ctx["submitter"])
    ce_job_id = str(row_of(db, job)["ce_job_id"])
    fake.hold(ce_job_id, "Transfer input files failure at access point", 13, 2)
    run.poll(job)
    assert run.state(job) == "torerun"
    assert row_of(db, job)["error_text"] == (
        "held: Transfer input files failure at access point (code 13, subcode 2)"
    )
    submitter.run_once(run.ctx["submitter"])  # the rerun step: condor_release
    assert run.state(job) == "submitted"
    assert fake.job(ce_job_id).ad["JobStatus"] == 1
    assert row_of(db, job)["ce_job_id"] == ce_job_id  # the same job, released
    run.close()


def test_a_held_job_is_removed_and_resubmitted_by_a_resubmit_rule(
    db: Database, fake: FakeSchedd, tmp_path: Path
) -> None:
    run = _run(
        db,
        tmp_path,
        ces={"condor1": ce_config(), "condor2": ce_config()},
        resubmit=[{"pattern": r"^held: .*\(code 26, subcode", "action": "resubmit"}],
    )
    job = run.request(700, candidates="condor1 condor2")
    submitter.run_once(run.ctx["submitter"])
    first = row_of(db, job)
    fake.hold(str(first["ce_job_id"]), "memory usage exceeded request_memory", 26, 102)
    run.poll(job)
    assert run.state(job) == "toresubmit"
    submitter.run_once(run.ctx["submitter"])  # removes the held job, then submits again
    again = row_of(db, job)
    assert again["state"] == "submitted" and again["ce_name"] != first["ce_name"]
    assert again["ce_job_id"] != first["ce_job_id"] and again["excluded"] == first["ce_name"]
    assert fake.job(str(first["ce_job_id"])).ad["JobStatus"] == 3  # removed from the queue
    assert again["attempts_left"] == first["attempts_left"] - 1
    run.close()


def test_a_job_removed_outside_act_is_cancelled_and_a_kill_goes_through(
    db: Database, fake: FakeSchedd, tmp_path: Path
) -> None:
    run = _run(db, tmp_path)
    outside, killed = run.request(800), run.request(801)
    submitter.run_once(run.ctx["submitter"])
    fake.remove(str(row_of(db, outside)["ce_job_id"]), "via condor_rm (by user root)")
    run.poll(outside)
    assert run.state(outside) == "cancelled"
    assert history(db, outside)[-1][3] == "killed outside act (removed)"

    run.app_moves(killed, "tocancel")
    canceller.run_once(run.ctx["canceller"])
    assert run.state(killed) == "cancelling"
    run.poll(killed)
    assert run.state(killed) == "cancelled"
    assert fake.job(str(row_of(db, killed)["ce_job_id"])).ad["RemoveReason"] == "killed by act"
    run.close()


def test_an_unreachable_schedd_opens_the_breaker_and_loses_no_job(
    db: Database, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    live, dead = FakeSchedd(), FakeSchedd()
    dead.fail()
    install_fake(monkeypatch, live, {"dead": dead})
    failures = 2
    run = _run(
        db,
        tmp_path,
        ces={"down": ce_config(schedd="dead"), "condor1": ce_config()},
        breaker={"failures": failures, "cooldown": 3600},
    )
    waves = []
    for wave in range(failures + 1):
        waves.append([run.request(900 + 10 * wave + i, "down condor1") for i in range(4)])
        submitter.run_once(run.ctx["submitter"])
    submitter.run_once(run.ctx["submitter"])
    with db.read() as conn:
        rows = {r["endpoint"]: dict(r) for r in conn.execute(sa.select(ces)).mappings()}
    assert rows["down"]["breaker"] == "open"
    assert "Failed to connect" in str(rows["down"]["last_error"])
    jobs = [job for wave in waves for job in wave]
    placed = [row_of(db, job) for job in jobs]
    assert {r["state"] for r in placed} == {"submitted"}
    assert {r["ce_name"] for r in placed} == {"condor1"}
    assert len(live.jobs) == len(jobs) and not dead.jobs
    assert [c for c, _ in dead.calls].count("submit") == failures  # none once it was open

    # The live schedd goes away too: polls change nothing, the jobs stay.
    live.fail()
    run.poll(*jobs)
    assert {run.state(job) for job in jobs} == {"submitted"}
    run.close()


def test_a_submitter_killed_between_submit_and_commit_is_reconciled_without_resubmission(
    db: Database, fake: FakeSchedd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Killed(BaseException):
        """Stands for the process dying (os._exit in production's fault hook)."""

    def crash(point: str) -> None:
        if point == "submitter:after-submit":
            raise Killed(point)

    run = _run(db, tmp_path)
    jobs = [run.request(1000 + i) for i in range(4)]
    monkeypatch.setattr(submitter_submission, "maybe_crash", crash)
    with pytest.raises(Killed):
        submitter.run_once(run.ctx["submitter"])
    assert {run.state(job) for job in jobs} == {"submitting"}
    assert len(fake.jobs) == 4  # the schedd has them; the database does not know
    monkeypatch.undo()

    past = utcnow() - timedelta(seconds=1)
    db.run(lambda conn: conn.execute(sa.update(ce_jobs).values(lease_expires=past)))
    install_fake(monkeypatch, fake)
    submitter.run_once(run.ctx["submitter"])
    rows = [row_of(db, job) for job in jobs]
    assert {r["state"] for r in rows} == {"submitted"}
    assert Counter(str(j.ad["ActToken"]) for j in fake.jobs.values()) == Counter(
        str(r["token"]) for r in rows
    )
    assert sorted(str(r["ce_job_id"]) for r in rows) == sorted(fake.jobs)
    assert [c for c, _ in fake.calls].count("submit") == 1  # never submitted twice
    assert all("reconciled" in str(history(db, job)[-1][3]) for job in jobs)
    run.close()


def test_reconciliation_finds_jobs_already_in_history(
    db: Database, fake: FakeSchedd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Killed(BaseException):
        pass

    def crash(point: str) -> None:
        if point == "submitter:after-submit":
            raise Killed(point)

    run = _run(db, tmp_path)
    job = run.request(1100)
    monkeypatch.setattr(submitter_submission, "maybe_crash", crash)
    with pytest.raises(Killed):
        submitter.run_once(run.ctx["submitter"])
    monkeypatch.undo()
    install_fake(monkeypatch, fake)
    [ce_job_id] = list(fake.jobs)
    fake.complete(ce_job_id, 0)  # finished and left the queue while nobody looked
    set_columns(db, job, lease_expires=utcnow() - timedelta(seconds=1))
    submitter.run_once(run.ctx["submitter"])
    assert row_of(db, job)["ce_job_id"] == ce_job_id and run.state(job) == "submitted"
    run.poll(job)
    assert run.state(job) == "finished"
    run.close()
