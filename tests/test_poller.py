"""The poller: CE states onto transitions, due-ness, batches, lost jobs, unavailable CEs, the
breaker and the resubmission policy, against the scripted back end on every DB backend."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from act.common.db import Database
from act.common.schema import ces
from act.common.timeutil import utcnow
from act.engine.backend import CEReportedState
from act.engine.config import Context
from act.engine.poller import UNAVAILABLE_RETRY, run_once
from tests.support.follow import ago, context, history, put_job, row_of, settings, submit_at_ce
from tests.support.scripted_backend import UNKNOWN, Script, job


def at_ce(
    db: Database, ctx: Context, state: str, token: str, ce: str = "ce1", **values: Any
) -> tuple[int, str]:
    ce_job_id = submit_at_ce(ctx, ce, token)
    job_id = put_job(db, state, ce=ce, ce_job_id=ce_job_id, token=token, **values)
    return job_id, ce_job_id


CASES = [
    # (engine state, what the CE says, expected engine state, expected reason fragment)
    ("submitted", job(CEReportedState.RUNNING, raw_state="RUNNING"), "running", "CE state RUNNING"),
    ("submitted", job(CEReportedState.SUBMITTED, raw_state="QUEUING"), "submitted", None),
    ("submitted", job(CEReportedState.FINISHING), "finishing", "CE state"),
    ("submitted", job(CEReportedState.FINISHED, exit_code=0), "finished", "CE state"),
    ("running", job(CEReportedState.SUBMITTED), "submitted", "CE state"),  # requeued
    ("running", job(CEReportedState.FINISHING), "finishing", "CE state"),
    ("finishing", job(CEReportedState.RUNNING), "finishing", None),  # the CE lags: not followed
    ("finishing", job(CEReportedState.FINISHED), "finished", "CE state"),
    (
        "running",
        job(CEReportedState.FAILED, errors=["payload exit 3"]),
        "failed",
        "no resubmit rule",
    ),
    (
        "running",
        job(CEReportedState.CANCELLED, raw_state="KILLED"),
        "cancelled",
        "killed outside act",
    ),
    ("cancelling", job(CEReportedState.CANCELLED), "cancelled", "CE confirmed the kill"),
    ("cancelling", job(CEReportedState.RUNNING), "cancelling", None),
    ("cancelling", job(CEReportedState.FINISHED), "cancelled", "before the kill"),
]


def test_every_ce_state_maps_onto_its_transition(
    db: Database, script: Script, tmp_path: Path
) -> None:
    config = settings(tmp_path)
    ctx = context(db, config, "poller")
    jobs = []
    for index, (state, step, _, _) in enumerate(CASES):
        job_id, ce_job_id = at_ce(db, ctx, state, f"t{index}")
        script.states(step, ce_job_id=ce_job_id)
        jobs.append(job_id)
    before = utcnow()
    assert run_once(ctx) is False
    for job_id, (state, _, expected, reason) in zip(jobs, CASES, strict=True):
        row = row_of(db, job_id)
        assert row["state"] == expected, (state, expected)
        assert row["last_seen_at"] >= before and row["lease_owner"] is None
        moves = history(db, job_id)
        if reason is None:
            assert moves[-1][1] == state  # no new transition
        else:
            assert moves[-1][:3] == (state, expected, "poller")
            assert reason in str(moves[-1][3])
        delay = getattr(config.engine.poll, expected, None)
        if delay is None:
            assert row["next_check_at"] is None
        else:
            left = (row["next_check_at"] - before).total_seconds()
            assert 0.9 * delay - 5 <= left <= 1.1 * delay + 5


def test_what_the_ce_says_is_stored(db: Database, script: Script, tmp_path: Path) -> None:
    ctx = context(db, settings(tmp_path), "poller")
    job_id, ce_job_id = at_ce(db, ctx, "running", "t1")
    started, ended = ago(7200).replace(microsecond=0), ago(60).replace(microsecond=0)
    script.states(
        job(
            CEReportedState.FAILED,
            raw_state="FAILED",
            exit_code=3,
            errors=["Job failed", "LRMS error: (1) exit"],
            worker_node="wn17.example.org",
            cpu_seconds=3500,
            wall_seconds=7000,
            started_at=started,
            ended_at=ended,
        ),
        ce_job_id=ce_job_id,
    )
    run_once(ctx)
    row = row_of(db, job_id)
    assert row["state"] == "failed" and row["ce_state"] == "FAILED" and row["exit_code"] == 3
    assert row["error_text"] == "Job failed; LRMS error: (1) exit"
    assert row["worker_node"] == "wn17.example.org"
    assert (row["cpu_seconds"], row["wall_seconds"]) == (3500, 7000)
    assert (row["started_at"], row["ended_at"]) == (started, ended)
    assert row["next_check_at"] is None


def test_only_due_jobs_are_polled_in_batches_per_ce(
    db: Database, script: Script, tmp_path: Path
) -> None:
    ctx = context(db, settings(tmp_path), "poller")
    script.limits("ce1", status_batch=2)
    due = [at_ce(db, ctx, "submitted", f"a{i}", next_check_at=ago(10))[1] for i in range(3)]
    due.append(at_ce(db, ctx, "running", "a3")[1])  # NULL: due
    later = at_ce(db, ctx, "running", "a4", next_check_at=utcnow() + timedelta(hours=1))[1]
    other = at_ce(db, ctx, "finishing", "b0", ce="ce2")[1]
    finished = at_ce(db, ctx, "finished", "a5")[1]  # not a polled state
    run_once(ctx)
    ce1 = [call["ids"] for call in script.calls("status", ce="ce1")]
    assert all(len(ids) <= 2 for ids in ce1) and len(ce1) == 2
    assert sorted(i for ids in ce1 for i in ids) == sorted(due)
    assert [call["ids"] for call in script.calls("status", ce="ce2")] == [[other]]
    assert later not in str(ce1) and finished not in str(ce1)
    # Now every job has a next_check_at in the future: nothing is polled again.
    run_once(ctx)
    assert len(script.calls("status")) == 3


def test_a_job_unknown_to_the_ce_is_lost_only_after_lost_after(
    db: Database, script: Script, tmp_path: Path
) -> None:
    ctx = context(db, settings(tmp_path, poll={"lost_after": 3600}), "poller")
    recent, recent_id = at_ce(db, ctx, "running", "r", last_seen_at=ago(600))
    old, old_id = at_ce(db, ctx, "running", "o", last_seen_at=ago(4000))
    never, never_id = at_ce(db, ctx, "submitted", "n", submitted_at=ago(4000))
    killing, killing_id = at_ce(db, ctx, "cancelling", "k", last_seen_at=ago(4000))
    for ce_job_id in (recent_id, old_id, never_id, killing_id):
        script.states(UNKNOWN, ce_job_id=ce_job_id)
    run_once(ctx)
    assert row_of(db, recent)["state"] == "running"
    assert row_of(db, recent)["next_check_at"] is not None
    assert row_of(db, old)["state"] == "lost"
    assert row_of(db, never)["state"] == "lost"
    assert row_of(db, killing)["state"] == "cancelled"
    assert "unknown to the CE since" in str(history(db, old)[-1][3])


def test_an_unavailable_ce_only_delays_the_next_check_with_one_line(
    db: Database, script: Script, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = context(db, settings(tmp_path), "poller")
    jobs = [at_ce(db, ctx, "running", f"u{i}")[0] for i in range(3)]
    fine, fine_id = at_ce(db, ctx, "running", "f", ce="ce2")
    script.states(job(CEReportedState.FINISHED), ce_job_id=fine_id)
    script.ce_unavailable("ce1", "connection refused")
    before = utcnow()
    with caplog.at_level(logging.WARNING, logger="act.poller"):
        run_once(ctx)
    for job_id in jobs:
        row = row_of(db, job_id)
        assert row["state"] == "running" and row["last_seen_at"] is None
        assert row["lease_owner"] is None
        left = (row["next_check_at"] - before).total_seconds()
        assert 0.9 * UNAVAILABLE_RETRY - 5 <= left <= 1.1 * UNAVAILABLE_RETRY + 5
    lines = [r.getMessage() for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(lines) == 1 and "ce=ce1" in lines[0] and "connection refused" in lines[0]
    assert row_of(db, fine)["state"] == "finished"  # the other CE is not held up


def breaker_row(db: Database, ce: str) -> dict[str, object]:
    with db.read() as conn:
        found = conn.execute(sa.select(ces).where(ces.c.name == ce)).mappings().one_or_none()
    return dict(found) if found else {}


def test_a_fast_failure_counts_for_the_breaker_and_a_finished_job_resets_it(
    db: Database, script: Script, tmp_path: Path
) -> None:
    ctx = context(db, settings(tmp_path, breaker={"fast_fail": 600}), "poller")
    fast, fast_id = at_ce(db, ctx, "running", "fast")
    slow, slow_id = at_ce(db, ctx, "running", "slow", ce="ce2")
    script.states(
        job(CEReportedState.FAILED, errors=["boom"], started_at=ago(30), ended_at=ago(5)),
        ce_job_id=fast_id,
    )
    script.states(
        job(CEReportedState.FAILED, errors=["boom"], started_at=ago(7200), ended_at=ago(5)),
        ce_job_id=slow_id,
    )
    run_once(ctx)
    assert row_of(db, fast)["state"] == row_of(db, slow)["state"] == "failed"
    assert breaker_row(db, "ce1")["failures"] == 1
    assert "failed fast" in str(breaker_row(db, "ce1")["last_error"])
    assert breaker_row(db, "ce2").get("failures", 0) == 0
    ok, ok_id = at_ce(db, ctx, "running", "ok")
    script.states(job(CEReportedState.FINISHED, exit_code=0), ce_job_id=ok_id)
    run_once(ctx)
    assert row_of(db, ok)["state"] == "finished"
    assert breaker_row(db, "ce1")["failures"] == 0


def test_failed_jobs_follow_the_resubmission_rules(
    db: Database, script: Script, tmp_path: Path
) -> None:
    ctx = context(db, settings(tmp_path), "poller")
    lrms = job(CEReportedState.FAILED, errors=["LRMS error: (271) killed"], started_at=ago(7200))
    staging = job(CEReportedState.FAILED, errors=["Stage-in failed"], restartable=True)
    cases: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
        ("resubmit", lrms, {"attempts_left": 2}, "toresubmit"),
        ("none-left", lrms, {"attempts_left": 1}, "failed"),  # its last one just failed
        ("restart", staging, {"attempts_left": 2}, "torerun"),
        ("restart-none-left", staging, {"attempts_left": 1}, "failed"),  # a restart is a try
        ("no-restart", job(CEReportedState.FAILED, errors=["Stage-in failed"]), {}, "failed"),
        ("no-match", job(CEReportedState.FAILED, errors=["segfault"]), {}, "failed"),
    ]
    made = []
    for token, step, values, _ in cases:
        job_id, ce_job_id = at_ce(db, ctx, "running", token, **values)
        script.states(step, ce_job_id=ce_job_id)
        made.append(job_id)
    run_once(ctx)
    for job_id, (token, _, _, expected) in zip(made, cases, strict=True):
        assert row_of(db, job_id)["state"] == expected, token
    assert "resubmit rule 2" in str(history(db, made[0])[-1][3])
    assert "no attempts left" in str(history(db, made[1])[-1][3])
    assert "no attempts left" in str(history(db, made[3])[-1][3])


def test_a_back_end_that_cannot_restart_fails_the_job(
    db: Database, script: Script, tmp_path: Path
) -> None:
    ctx = context(db, settings(tmp_path), "poller")
    script.limits("ce1", can_restart=False)
    job_id, ce_job_id = at_ce(db, ctx, "running", "s")
    script.states(
        job(CEReportedState.FAILED, errors=["staging failed"], restartable=True),
        ce_job_id=ce_job_id,
    )
    run_once(ctx)
    assert row_of(db, job_id)["state"] == "failed"
    assert "cannot restart" in str(history(db, job_id)[-1][3])


def test_jobs_of_a_ce_no_longer_configured_are_left_and_checked_much_later(
    db: Database, script: Script, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = context(db, settings(tmp_path, poll={"lost_after": 3600}), "poller")
    job_id = put_job(db, "running", ce="retired", ce_job_id="retired/1")
    before = utcnow()
    with caplog.at_level(logging.ERROR, logger="act.poller"):
        run_once(ctx)
    row = row_of(db, job_id)
    assert row["state"] == "running" and row["lease_owner"] is None
    assert (row["next_check_at"] - before).total_seconds() > 3000
    assert any("ce=retired: not configured" in m for m in caplog.messages)
    assert script.calls("status") == []
