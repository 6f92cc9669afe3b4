"""The submitter daemon against the scripted back-end double, on every backend.

Each test runs one real cycle (``run_daemon(..., once=True)``) and reads back the database and
the double's call log.
"""

from __future__ import annotations

import itertools
import logging
import threading
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from act.common import exitcodes
from act.common.daemon import run_daemon
from act.common.db import Database
from act.common.schema import ce_jobs, ces
from act.common.schema import transitions as history
from act.common.states import Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs, transition
from act.engine.backend import BACKENDS, CE, SubmitRequest
from act.engine.settings import CESettings
from act.engine.submitter import DAEMON
from act.service.settings import Settings
from tests.support.scripted_backend import Script, ScriptedBackend

LOG = logging.getLogger("act.test")


def make_settings(
    url: URL,
    tmp_path: Path,
    ces_config: dict[str, dict[str, Any]] | None = None,
    *,
    daemon: dict[str, Any] | None = None,
    **engine: Any,
) -> Settings:
    config = ces_config or {"ce1": {}, "ce2": {}}
    return Settings.model_validate(
        {
            "root": str(tmp_path),
            "db": {"url": url.render_as_string(hide_password=False)},
            "daemons": {"submitter": {"lease": 60, **(daemon or {})}},
            "engine": {
                "strategy": "round_robin",
                "ces": {
                    name: {"backend": "scripted", "min_spacing": 0, "timeout": 5, **values}
                    for name, values in config.items()
                },
                **engine,
            },
        }
    )


def add_jobs(db: Database, count: int, candidates: str = "ce1 ce2", **extra: Any) -> list[int]:
    rows = [
        {
            "backend": "scripted",
            "description": f"job {i}",
            "candidates": candidates,
            "attempts_left": 3,
            "panda_id": 1000 + i,
            **extra,
        }
        for i in range(count)
    ]
    return db.run(lambda c: create_jobs(c, Layer.CE, rows, "tosubmit", actor=Actor.TRANSLATOR))


def run(db: Database, settings: Settings) -> None:
    assert run_daemon(DAEMON, settings, "submitter", once=True, db=db) == exitcodes.OK


def jobs(db: Database) -> dict[int, dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(sa.select(ce_jobs).order_by(ce_jobs.c.id)).mappings()
        return {row["id"]: dict(row) for row in rows}


def ce_row(db: Database, name: str) -> dict[str, Any]:
    with db.read() as conn:
        return dict(conn.execute(sa.select(ces).where(ces.c.name == name)).mappings().one())


def test_submits_crash_safely_with_tokens_and_spreads_round_robin(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    ids = add_jobs(db, 4)
    run(db, make_settings(db_url, tmp_path))
    rows = jobs(db)
    assert {row["state"] for row in rows.values()} == {"submitted"}
    assert [rows[i]["ce_name"] for i in ids] == ["ce1", "ce2", "ce1", "ce2"]
    at_ce = script.jobs()
    for job_id in ids:
        row = rows[job_id]
        assert row["submissions"] == 1 and row["lease_owner"] is None
        assert row["next_check_at"] > row["submitted_at"]
        record = at_ce[row["ce_job_id"]]
        assert (record["token"], record["job_id"], record["ce"]) == (
            row["token"],
            job_id,
            row["ce_name"],
        )
    assert len({row["token"] for row in rows.values()}) == 4
    with db.read() as conn:
        path = conn.execute(
            sa.select(history.c.from_state, history.c.to_state)
            .where(history.c.layer == "ce", history.c.job_id == ids[0])
            .order_by(history.c.id)
        ).all()
    assert [tuple(p) for p in path] == [
        (None, "tosubmit"),
        ("tosubmit", "submitting"),
        ("submitting", "submitted"),
    ]
    assert ce_row(db, "ce1")["last_submit_at"] is not None


def test_max_queued_and_max_running_leave_jobs_waiting_with_one_line_per_reason(
    db: Database, db_url: URL, tmp_path: Path, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(db_url, tmp_path, {"ce1": {"max_queued": 3}})
    add_jobs(db, 1, "ce1")
    run(db, settings)  # one job already queued at ce1
    waiting = add_jobs(db, 6, "ce1")
    with caplog.at_level(logging.INFO, logger="act.submitter"):
        run(db, settings)
    rows = jobs(db)
    assert sum(row["state"] == "submitted" for row in rows.values()) == 3
    assert [rows[i]["state"] for i in waiting] == ["submitted"] * 2 + ["tosubmit"] * 4
    assert all(rows[i]["lease_owner"] is None for i in waiting)  # claims handed back
    lines = [r.getMessage() for r in caplog.records if "stay tosubmit" in r.getMessage()]
    assert lines == ["4 job(s) stay tosubmit: ce1: no room left this cycle"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="act.submitter"):
        run(db, settings)
    lines = [r.getMessage() for r in caplog.records if "stay tosubmit" in r.getMessage()]
    assert lines == ["4 job(s) stay tosubmit: ce1: full (3 queued of 3)"]

    # max_running counts jobs running at the CE.
    with db.read() as conn:
        queued = [
            r.id
            for r in conn.execute(sa.select(ce_jobs.c.id).where(ce_jobs.c.state == "submitted"))
        ]
    db.run(lambda c: transition(c, Layer.CE, queued, "submitted", "running", actor=Actor.POLLER))
    limited = make_settings(db_url, tmp_path, {"ce1": {"max_queued": 10, "max_running": 4}})
    run(db, limited)
    rows = jobs(db)
    assert sum(row["state"] == "submitted" for row in rows.values()) == 1  # 4 - 3 running


def test_batches_per_cycle_and_spacing_from_the_call_log(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    script.limits("ce1", submit_batch=2)
    settings = make_settings(db_url, tmp_path, {"ce1": {"max_per_cycle": 5, "min_spacing": 0.3}})
    ids = add_jobs(db, 12, "ce1")
    run(db, settings)
    calls = script.calls("submit", ce="ce1")
    assert [len(call["job_ids"]) for call in calls] == [2, 2, 1]  # submit_batch, max_per_cycle
    assert [j for call in calls for j in call["job_ids"]] == ids[:5]
    # When each batch was sent: its tosubmit -> submitting rows (written by the submitter).
    with db.read() as conn:
        sent = conn.execute(
            sa.select(history.c.job_id, history.c.at).where(
                history.c.layer == "ce", history.c.to_state == "submitting"
            )
        ).all()
    times = {job_id: at for job_id, at in sent}
    starts = [times[call["job_ids"][0]] for call in calls]
    assert all(
        later - earlier >= timedelta(seconds=0.3) for earlier, later in itertools.pairwise(starts)
    )
    # The next cycle within min_spacing of the last batch sends nothing.
    spaced = make_settings(db_url, tmp_path, {"ce1": {"max_per_cycle": 5, "min_spacing": 3600}})
    run(db, spaced)
    assert len(script.calls("submit", ce="ce1")) == 3
    assert sum(row["state"] == "submitted" for row in jobs(db).values()) == 5


def test_transient_failure_sends_the_job_to_another_ce(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    script.submit_error("queue temporarily full", ce="ce1")
    [job_id] = add_jobs(db, 1)
    settings = make_settings(db_url, tmp_path)
    run(db, settings)  # round robin starts with ce1, which fails it
    row = jobs(db)[job_id]
    assert (row["state"], row["excluded"], row["error_text"]) == (
        "tosubmit",
        "ce1",
        "queue temporarily full",
    )
    assert ce_row(db, "ce1")["failures"] == 1
    run(db, settings)
    row = jobs(db)[job_id]
    assert (row["state"], row["ce_name"], row["submissions"]) == ("submitted", "ce2", 2)
    assert row["error_text"] is None
    assert script.submitted_tokens("ce2") == [row["token"]]
    assert script.submitted_tokens("ce1") == []


def test_ce_unavailable_opens_the_breaker_and_jobs_go_to_the_live_ce(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    script.ce_unavailable("ce1", "connection refused")
    ids = add_jobs(db, 4)
    settings = make_settings(db_url, tmp_path, breaker={"failures": 1, "cooldown": 3600})
    run(db, settings)
    rows = jobs(db)
    assert [rows[i]["state"] for i in ids] == ["tosubmit", "submitted", "tosubmit", "submitted"]
    assert all(rows[i]["excluded"] == "ce1" for i in ids[::2])
    breaker_row = ce_row(db, "ce1")
    assert breaker_row["breaker"] == "open" and breaker_row["last_error"] == "connection refused"
    run(db, settings)
    rows = jobs(db)
    assert {rows[i]["state"] for i in ids} == {"submitted"}
    assert {rows[i]["ce_name"] for i in ids} == {"ce2"}
    # With the breaker open ce1 was not tried again: one submit in the first cycle (a refused
    # connection sent nothing, so the CE is not asked about a lost reply), nothing after.
    assert [c["method"] for c in script.calls(ce="ce1") if c["method"] != "limits"] == ["submit"]
    assert ce_row(db, "ce1")["failures"] == 1
    assert ce_row(db, "ce1")["breaker"] == "open"


def test_permanent_rejection_fails_the_job_with_the_ce_message(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    script.submit_error("xRSL: unknown attribute 'foo'", permanent=True)
    [job_id] = add_jobs(db, 1, "ce1")
    run(db, make_settings(db_url, tmp_path))
    row = jobs(db)[job_id]
    assert (row["state"], row["error_text"]) == ("failed", "xRSL: unknown attribute 'foo'")
    assert ce_row(db, "ce1")["failures"] == 0  # the job's fault, not the CE's


def test_lost_submit_reply_is_reconciled_at_once_never_submitted_twice(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    script.lose_submit_reply("ce1")
    ids = add_jobs(db, 3, "ce1")
    settings = make_settings(db_url, tmp_path)
    run(db, settings)
    rows = jobs(db)
    assert {rows[i]["state"] for i in ids} == {"submitted"}
    assert sorted(script.submitted_tokens("ce1")) == sorted(rows[i]["token"] for i in ids)
    assert {rows[i]["ce_job_id"] for i in ids} == set(script.jobs())


def test_lost_reply_at_a_lagging_ce_keeps_the_jobs_until_the_ce_lists_them(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    # ARC's case: A-REX took the batch, the reply was lost, and its listing does not show the
    # jobs yet. Sending them to ce2 now would run each twice.
    script.limits("ce1", find_lag=300)
    script.lose_submit_reply("ce1")
    script.find_blind("ce1", times=2)  # the lost-reply check and the next cycle's reconcile
    ids = add_jobs(db, 3, "ce1")
    settings = make_settings(db_url, tmp_path)
    run(db, settings)
    rows = jobs(db)
    assert {rows[i]["state"] for i in ids} == {"submitting"}
    assert {rows[i]["lease_owner"] for i in ids} == {None}  # handed back to reconciliation
    script.lose_submit_reply("ce1", None)
    _expire_leases(db)
    run(db, settings)  # still not listed, the lag has not passed: they wait
    rows = jobs(db)
    assert {rows[i]["state"] for i in ids} == {"submitting"}
    _expire_leases(db)
    run(db, settings)  # now listed: reconciled
    rows = jobs(db)
    assert {rows[i]["state"] for i in ids} == {"submitted"}
    assert {rows[i]["ce_name"] for i in ids} == {"ce1"}
    assert {rows[i]["submissions"] for i in ids} == {1}
    assert sorted(script.submitted_tokens()) == sorted(rows[i]["token"] for i in ids)


def test_jobs_a_lagging_ce_never_lists_go_elsewhere_once_the_lag_has_passed(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    script.limits("ce1", find_lag=300)
    script.find_blind("ce1", times=None)
    ids = add_jobs(db, 2, "ce1 ce2")
    tokens = ["d" * 32, "e" * 32]
    _submitting(db, ids, tokens)  # a submitter died after its intent; ce1 never got them
    settings = make_settings(db_url, tmp_path)
    run(db, settings)
    assert {row["state"] for row in jobs(db).values()} == {"submitting"}
    _age_intent(db, ids, seconds=301)
    _expire_leases(db)
    run(db, settings)
    rows = jobs(db)
    # back to tosubmit with ce1 not excluded (nothing failed there), then submitted at once
    assert {rows[i]["state"] for i in ids} == {"submitted"}
    assert {rows[i]["submissions"] for i in ids} == {2}
    assert not set(tokens) & set(script.submitted_tokens())


def test_lost_reply_and_a_ce_that_cannot_be_asked_keep_the_jobs_submitting(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    script.lose_submit_reply("ce1")
    script.find_unavailable("ce1")
    ids = add_jobs(db, 2, "ce1")
    settings = make_settings(db_url, tmp_path)
    run(db, settings)
    rows = jobs(db)
    assert {rows[i]["state"] for i in ids} == {"submitting"}
    assert ce_row(db, "ce1")["failures"] == 1
    script.lose_submit_reply("ce1", None)
    script.find_unavailable("ce1", None)
    _expire_leases(db)
    run(db, settings)  # find_lag 0: the CE's answer is final, and it has them
    rows = jobs(db)
    assert {rows[i]["state"] for i in ids} == {"submitted"}
    assert {rows[i]["submissions"] for i in ids} == {1}
    assert sorted(script.submitted_tokens()) == sorted(rows[i]["token"] for i in ids)


def _expire_leases(db: Database) -> None:
    db.run(
        lambda c: c.execute(
            sa.update(ce_jobs)
            .where(ce_jobs.c.lease_owner.is_not(None))
            .values(lease_expires=utcnow() - timedelta(seconds=1))
        )
    )


def _age_intent(db: Database, ids: list[int], *, seconds: float) -> None:
    db.run(
        lambda c: c.execute(
            sa.update(ce_jobs)
            .where(ce_jobs.c.id.in_(ids))
            .values(state_changed_at=utcnow() - timedelta(seconds=seconds))
        )
    )


def _submitting(db: Database, ids: list[int], tokens: list[str], ce: str = "ce1") -> None:
    """Put jobs where a submitter that died after step (1) leaves them: submitting, lease over."""
    db.run(lambda c: transition(c, Layer.CE, ids, "tosubmit", "submitting", actor=Actor.SUBMITTER))
    for job_id, token in zip(ids, tokens, strict=True):
        db.run(
            lambda c: c.execute(
                sa.update(ce_jobs)
                .where(ce_jobs.c.id == job_id)
                .values(
                    token=token,
                    ce_name=ce,
                    submissions=1,
                    lease_owner="submitter@dead",
                    lease_expires=utcnow() - timedelta(seconds=1),
                )
            )
        )


def test_reconciliation_finds_what_the_ce_has_and_resubmits_the_rest(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    settings = make_settings(db_url, tmp_path)
    ids = add_jobs(db, 3, "ce1")
    tokens = ["a" * 32, "b" * 32, "c" * 32]
    _submitting(db, ids, tokens)
    double = ScriptedBackend(settings=settings, db=None, log=LOG)
    ce1 = CE("ce1", CESettings(backend="scripted"))
    [taken] = double.submit(ce1, [SubmitRequest(ids[0], tokens[0], "job")])  # the CE got one
    script.ce_unavailable("ce1")
    run(db, settings)  # the CE does not answer: they stay submitting
    assert {row["state"] for row in jobs(db).values()} == {"submitting"}
    script.ce_unavailable("ce1", None)
    run(db, settings)
    rows = jobs(db)
    assert (rows[ids[0]]["state"], rows[ids[0]]["ce_job_id"]) == ("submitted", taken.ce_job_id)
    assert rows[ids[0]]["token"] == tokens[0] and rows[ids[0]]["submissions"] == 1
    # The others went back to tosubmit and were submitted in the same cycle, with new tokens.
    for job_id, old in zip(ids[1:], tokens[1:], strict=True):
        assert rows[job_id]["state"] == "submitted"
        assert rows[job_id]["token"] != old and rows[job_id]["submissions"] == 2
    at_ce = script.submitted_tokens("ce1")
    assert sorted(at_ce) == sorted(row["token"] for row in rows.values())  # each exactly once


def test_reconciliation_leaves_live_claims_alone(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    [job_id] = add_jobs(db, 1, "ce1")
    _submitting(db, [job_id], ["d" * 32])
    db.run(
        lambda c: c.execute(
            sa.update(ce_jobs)
            .where(ce_jobs.c.id == job_id)
            .values(lease_expires=utcnow() + timedelta(seconds=600))
        )
    )
    run(db, make_settings(db_url, tmp_path))
    assert jobs(db)[job_id]["state"] == "submitting"
    assert script.calls("find") == []


def _at_ce(db: Database, script: Script, settings: Settings, count: int, state: str) -> list[int]:
    """Jobs submitted to ce1 through the submitter, then moved to ``state`` by the poller."""
    ids = add_jobs(db, count, "ce1")
    run(db, settings)
    db.run(lambda c: transition(c, Layer.CE, ids, "submitted", state, actor=Actor.POLLER))
    return ids


def test_resubmit_cleans_then_requeues_or_fails_without_attempts(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    settings = make_settings(db_url, tmp_path, {"ce1": {}})
    ids = _at_ce(db, script, settings, 4, "toresubmit")
    rows = jobs(db)
    old = {i: rows[i]["ce_job_id"] for i in ids}
    script.outcome("clean", "gone", ce_job_id=old[ids[1]])
    script.outcome("clean", "error", error="busy", ce_job_id=old[ids[2]])
    db.run(
        lambda c: c.execute(
            sa.update(ce_jobs).where(ce_jobs.c.id == ids[3]).values(attempts_left=1)
        )
    )
    run(db, settings)
    rows = jobs(db)
    cleaned = script.calls("clean", ce="ce1")
    assert sorted(cleaned[0]["ids"]) == sorted(old.values())
    for job_id in ids[:2]:  # cleaned, or gone: both count as cleaned; then sent again at once
        row = rows[job_id]  # (ce1 is the only candidate: excluded, yet allowed again)
        assert (row["state"], row["attempts_left"], row["excluded"], row["submissions"]) == (
            "submitted",
            2,
            "ce1",
            2,
        )
        assert row["ce_job_id"] not in (None, old[job_id])
    assert rows[ids[2]]["state"] == "toresubmit" and rows[ids[2]]["lease_owner"] is None
    assert rows[ids[2]]["ce_job_id"] == old[ids[2]]
    assert (rows[ids[3]]["state"], rows[ids[3]]["error_text"]) == (
        "failed",
        "no submission attempts left",
    )
    with db.read() as conn:
        path = conn.execute(
            sa.select(history.c.to_state)
            .where(history.c.layer == "ce", history.c.job_id == ids[0])
            .order_by(history.c.id)
        ).scalars()
        assert list(path)[-4:] == ["toresubmit", "tosubmit", "submitting", "submitted"]


def test_rerun_restarts_or_fails(db: Database, db_url: URL, tmp_path: Path, script: Script) -> None:
    settings = make_settings(db_url, tmp_path, {"ce1": {}})
    ids = _at_ce(db, script, settings, 2, "torerun")
    refused = jobs(db)[ids[1]]["ce_job_id"]
    script.outcome("restart", "error", error="No more restarts allowed", ce_job_id=refused)
    run(db, settings)
    rows = jobs(db)
    assert rows[ids[0]]["state"] == "submitted"
    assert (rows[ids[1]]["state"], rows[ids[1]]["error_text"]) == (
        "failed",
        "No more restarts allowed",
    )
    assert script.jobs()[rows[ids[0]]["ce_job_id"]]["restarts"] == 1
    assert rows[ids[0]]["attempts_left"] == 2  # the restart took one try of the job's budget


def test_drained_ce_gets_no_jobs(db: Database, db_url: URL, tmp_path: Path, script: Script) -> None:
    from act.engine import breaker

    settings = make_settings(db_url, tmp_path)
    db.run(lambda c: breaker.sync_ces(c, settings.engine.ces, now=utcnow()))
    db.run(lambda c: breaker.set_enabled(c, "ce1", False, who="t", why="test", now=utcnow()))
    ids = add_jobs(db, 3)
    run(db, settings)
    assert {jobs(db)[i]["ce_name"] for i in ids} == {"ce2"}
    assert script.calls("submit", ce="ce1") == []


def _breaker_cooled_down(db: Database, db_url: URL, tmp_path: Path) -> tuple[Settings, datetime]:
    """Settings with one CE, ce1, whose breaker opened (one failure) a cool-down (600 s) ago."""
    from act.engine import breaker

    settings = make_settings(
        db_url, tmp_path, {"ce1": {}}, breaker={"failures": 1, "cooldown": 600}
    )
    long_ago = utcnow() - timedelta(seconds=601)
    db.run(lambda c: breaker.sync_ces(c, settings.engine.ces, now=long_ago))
    db.run(
        lambda c: breaker.record_failure(
            c, "ce1", error="down", now=long_ago, settings=settings.engine.breaker
        )
    )
    return settings, long_ago


def test_after_the_cooldown_one_probe_job_goes_and_its_success_closes_the_breaker(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    settings, _ = _breaker_cooled_down(db, db_url, tmp_path)
    ids = add_jobs(db, 4, "ce1")
    run(db, settings)
    rows = jobs(db)
    assert [rows[i]["state"] for i in ids] == ["submitted", "tosubmit", "tosubmit", "tosubmit"]
    assert [len(c["job_ids"]) for c in script.calls("submit")] == [1]  # the probe alone
    state = ce_row(db, "ce1")
    assert (state["breaker"], state["probe_job_id"], state["failures"]) == ("closed", None, 0)
    run(db, settings)
    assert {row["state"] for row in jobs(db).values()} == {"submitted"}


def test_a_failed_probe_reopens_the_breaker(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    settings, long_ago = _breaker_cooled_down(db, db_url, tmp_path)
    script.submit_error("still broken", ce="ce1")
    add_jobs(db, 3, "ce1")
    run(db, settings)
    state = ce_row(db, "ce1")
    assert state["breaker"] == "open" and state["opened_at"] > long_ago
    assert state["last_error"] == "still broken"
    run(db, settings)  # a fresh cool-down: nothing goes
    assert [len(c["job_ids"]) for c in script.calls("submit")] == [1]


def test_concurrent_submitters_keep_the_spacing_of_one_ce(
    db: Database, db_url: URL, tmp_path: Path, script: Script
) -> None:
    """Several instances at once: one batch reaches the CE, the others wait for min_spacing."""
    settings = make_settings(
        db_url, tmp_path, {"ce1": {"min_spacing": 3600, "max_per_cycle": 4}}, daemon={"batch": 4}
    )
    add_jobs(db, 12, "ce1")
    threads = [
        threading.Thread(
            target=run_daemon, args=(DAEMON, settings, "submitter"), kwargs={"once": True}
        )
        for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    calls = script.calls("submit", ce="ce1")
    assert len(calls) == 1  # each instance has its shard of the jobs, only one got the CE
    sent = len(calls[0]["job_ids"])
    assert 1 <= sent <= 4
    rows = jobs(db).values()
    assert sum(row["state"] == "submitted" for row in rows) == sent
    assert (
        sum(row["state"] == "tosubmit" and row["lease_owner"] is None for row in rows) == 12 - sent
    )


def test_a_ce_whose_back_end_is_not_available_gets_no_jobs_and_blocks_no_other(
    db: Database,
    db_url: URL,
    tmp_path: Path,
    script: Script,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A back end act knows by name whose module is missing here: ce0 cannot be used, ce1 (after
    # it) still can.
    monkeypatch.setitem(BACKENDS, "ghost", "act.ghost.backend:GhostBackend")
    settings = make_settings(db_url, tmp_path, {"ce0": {"backend": "ghost"}, "ce1": {}})
    ids = add_jobs(db, 3, "ce0 ce1")
    with caplog.at_level(logging.INFO, logger="act"):
        run(db, settings)
    rows = jobs(db)
    assert [(rows[i]["state"], rows[i]["ce_name"]) for i in ids] == [("submitted", "ce1")] * 3
    assert not [r for r in caplog.records if r.getMessage() == "cycle failed"]
    only_ce0 = add_jobs(db, 1, "ce0")
    with caplog.at_level(logging.INFO, logger="act"):
        run(db, settings)
    assert jobs(db)[only_ce0[0]]["state"] == "tosubmit"
    assert jobs(db)[only_ce0[0]]["lease_owner"] is None  # handed back, not held until the lease
    assert any(
        "stay tosubmit" in r.getMessage() and "'ghost' is not available" in r.getMessage()
        for r in caplog.records
    )
