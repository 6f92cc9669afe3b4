"""The cleaner: cleaned only when the CE confirms; errors retried; giving up after the time."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from act.common.db import Database
from act.engine.cleaner import run_once
from tests.support.follow import (
    ago,
    context,
    history,
    put_job,
    row_of,
    set_columns,
    settings,
    submit_at_ce,
)
from tests.support.scripted_backend import Script


def test_cleaned_when_the_ce_confirms_or_no_longer_knows_the_job(
    db: Database, script: Script, tmp_path: Path
) -> None:
    ctx = context(db, settings(tmp_path), "cleaner")
    ok_id = submit_at_ce(ctx, "ce1", "ok")
    gone_id = submit_at_ce(ctx, "ce1", "gone")
    out = tmp_path / "outputs"
    out.mkdir()
    ok = put_job(db, "toclean", ce_job_id=ok_id, output_dir=str(out))
    gone = put_job(db, "toclean", ce_job_id=gone_id)
    never = put_job(db, "toclean", ce=None)  # never reached a CE
    script.outcome("clean", "gone", ce_job_id=gone_id)
    run_once(ctx)
    for job in (ok, gone, never):
        assert row_of(db, job)["state"] == "cleaned"
        assert history(db, job)[-1][:3] == ("toclean", "cleaned", "cleaner")
    assert script.jobs()[ok_id]["cleaned"]
    assert [c["ids"] for c in script.calls("clean")] == [[ok_id, gone_id]]
    assert out.is_dir()  # local files are the application's to remove


def test_an_error_is_retried_then_given_up_with_a_warning(
    db: Database, script: Script, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = context(db, settings(tmp_path, clean={"give_up_after": 3600}), "cleaner")
    ce_job_id = submit_at_ce(ctx, "ce1", "t")
    job = put_job(db, "toclean", ce_job_id=ce_job_id)
    down = put_job(db, "toclean", ce="ce2", ce_job_id=submit_at_ce(ctx, "ce2", "d"))
    script.outcome("clean", "error", error="session dir busy", ce_job_id=ce_job_id)
    script.ce_unavailable("ce2", "TLS handshake failed")
    run_once(ctx)
    for job_id in (job, down):
        row = row_of(db, job_id)
        assert row["state"] == "toclean" and row["lease_owner"] is None
    # It entered toclean longer ago than give_up_after: cleaned, with the reason and a warning.
    set_columns(db, job, state_changed_at=ago(3700))
    set_columns(db, down, state_changed_at=ago(3700))
    with caplog.at_level(logging.WARNING, logger="act.cleaner"):
        run_once(ctx)
    assert row_of(db, job)["state"] == row_of(db, down)["state"] == "cleaned"
    assert history(db, job)[-1][3] == "gave up: session dir busy"
    assert history(db, down)[-1][3] == "gave up: CE unavailable: TLS handshake failed"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        w.startswith("panda_id=1000 ce=ce1: job ")
        and f"ce_job_id {ce_job_id}" in w
        and "gave up: session dir busy" in w
        for w in warnings
    )
    assert not script.jobs()[ce_job_id]["cleaned"]
