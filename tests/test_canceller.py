"""The canceller: jobs that never reached a CE, kills sent, gone, errors and unavailable CEs."""

from __future__ import annotations

from pathlib import Path

import pytest

from act.common.db import Database
from act.engine.canceller import run_once
from act.engine.poller import run_once as poll
from tests.support.follow import (
    context,
    history,
    put_job,
    row_of,
    set_columns,
    settings,
    submit_at_ce,
)
from tests.support.scripted_backend import Script, install


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Script:
    return install(monkeypatch, tmp_path / "scripted.json")


def test_a_job_that_never_reached_a_ce_is_cancelled_at_once(
    db: Database, script: Script, tmp_path: Path
) -> None:
    ctx = context(db, settings(tmp_path), "canceller")
    nowhere = put_job(db, "tocancel", ce=None)
    unsent = put_job(db, "tocancel", token="never-sent")  # the CE does not know its token
    run_once(ctx)
    for job_id in (nowhere, unsent):
        assert row_of(db, job_id)["state"] == "cancelled"
        assert history(db, job_id)[-1][2:] == ("canceller", "never reached a CE")
    assert script.calls("kill") == []
    assert [c["tokens"] for c in script.calls("find")] == [["never-sent"]]


def test_a_kill_moves_to_cancelling_and_the_poller_confirms_it(
    db: Database, script: Script, tmp_path: Path
) -> None:
    config = settings(tmp_path)
    ctx = context(db, config, "canceller")
    ce_job_id = submit_at_ce(ctx, "ce1", "t1")
    job_id = put_job(db, "tocancel", ce_job_id=ce_job_id, token="t1")
    # Submitted by a process that died before recording the CE's id: found by its token.
    orphan_id = submit_at_ce(ctx, "ce1", "t2")
    orphan = put_job(db, "tocancel", token="t2")
    run_once(ctx)
    assert [c["ids"] for c in script.calls("kill")] == [[ce_job_id, orphan_id]]
    for job, ce_id in ((job_id, ce_job_id), (orphan, orphan_id)):
        row = row_of(db, job)
        assert row["state"] == "cancelling" and row["ce_job_id"] == ce_id
        assert row["next_check_at"] is not None
    assert script.jobs()[ce_job_id]["killed"]
    poller = context(db, config, "poller")
    set_columns(db, job_id, next_check_at=None)  # due now rather than in poll.cancelling
    poll(poller)
    assert row_of(db, job_id)["state"] == "cancelled"
    assert history(db, job_id)[-1][2:] == ("poller", "CE confirmed the kill")


def test_gone_error_and_unavailable(db: Database, script: Script, tmp_path: Path) -> None:
    ctx = context(db, settings(tmp_path), "canceller")
    gone_id = submit_at_ce(ctx, "ce1", "g")
    error_id = submit_at_ce(ctx, "ce1", "e")
    down_id = submit_at_ce(ctx, "ce2", "d")
    gone = put_job(db, "tocancel", ce_job_id=gone_id, token="g")
    error = put_job(db, "tocancel", ce_job_id=error_id, token="e")
    down = put_job(db, "tocancel", ce="ce2", ce_job_id=down_id, token="d")
    script.outcome("kill", "gone", ce_job_id=gone_id)
    script.outcome("kill", "error", error="permission denied", ce_job_id=error_id)
    script.ce_unavailable("ce2")
    run_once(ctx)
    assert row_of(db, gone)["state"] == "cancelled"
    assert "unknown to the CE" in str(history(db, gone)[-1][3])
    for job in (error, down):
        row = row_of(db, job)
        assert row["state"] == "tocancel" and row["lease_owner"] is None
    # Retried: the error clears, the CE comes back.
    script.outcome("kill", "ok", ce_job_id=error_id)
    script.ce_unavailable("ce2", None)
    run_once(ctx)
    assert row_of(db, error)["state"] == row_of(db, down)["state"] == "cancelling"
