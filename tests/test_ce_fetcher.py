"""The CE fetcher: outputs into the per-job directory, caps, errors retried, lost outputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from act.common.db import Database
from act.engine.config import Context
from act.engine.fetcher import LOST_NOTE, job_dir, measure, run_once
from tests.support.follow import context, history, put_job, row_of, settings, submit_at_ce
from tests.support.scripted_backend import Script


def ended(db: Database, ctx: Context, state: str, token: str, **values: Any) -> tuple[int, str]:
    ce_job_id = submit_at_ce(ctx, "ce1", token)
    return put_job(db, state, ce_job_id=ce_job_id, token=token, **values), ce_job_id


def test_outputs_are_fetched_into_the_jobs_own_directory(
    db: Database, script: Script, tmp_path: Path
) -> None:
    ctx = context(db, settings(tmp_path), "ce_fetcher")
    job_id, ce_job_id = ended(db, ctx, "finished", "t1")
    script.fetch({"heartbeat.json": "{}", "log/pilot.txt": "hello"}, ce_job_id=ce_job_id)
    dest = tmp_path / "root" / "ce-jobs" / "ce1" / str(job_id)
    dest.mkdir(parents=True)
    (dest / "stale").write_text("from an earlier, partial fetch")
    assert run_once(ctx) is False
    row = row_of(db, job_id)
    assert row["state"] == "done" and row["output_dir"] == str(dest)
    assert sorted(p.name for p in dest.rglob("*") if p.is_file()) == ["heartbeat.json", "pilot.txt"]
    assert (dest / "log" / "pilot.txt").read_text() == "hello"
    assert history(db, job_id)[-1][:3] == ("finished", "done", "ce_fetcher")
    assert [c["ids"] for c in script.calls("fetch")] == [[ce_job_id]]


def test_a_configured_directory_and_diagnostics_of_a_failed_job(
    db: Database, script: Script, tmp_path: Path
) -> None:
    base = tmp_path / "outputs"
    ctx = context(db, settings(tmp_path, fetch={"dir": str(base)}), "ce_fetcher")
    job_id, ce_job_id = ended(db, ctx, "failed", "t1", error_text="LRMS error: (1)")
    script.fetch({"errors": "x"}, diagnostics="exit code 1 on wn7", ce_job_id=ce_job_id)
    run_once(ctx)
    row = row_of(db, job_id)
    assert row["state"] == "donefailed"
    assert row["output_dir"] == str(base / "ce1" / str(job_id))
    assert row["error_text"] == "LRMS error: (1)\nexit code 1 on wn7"


def test_a_fetch_error_leaves_the_job_for_a_later_cycle(
    db: Database, script: Script, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = context(db, settings(tmp_path), "ce_fetcher")
    job_id, ce_job_id = ended(db, ctx, "finished", "t1")
    script.fetch(error="read timed out", ce_job_id=ce_job_id)
    with caplog.at_level(logging.WARNING, logger="act.ce_fetcher"):
        run_once(ctx)
    row = row_of(db, job_id)
    assert row["state"] == "finished" and row["lease_owner"] is None
    assert any(
        "panda_id=1000 ce=ce1: fetch failed" in r.getMessage()
        and "read timed out" in r.getMessage()
        for r in caplog.records
    )
    script.fetch({"heartbeat.json": "{}"}, ce_job_id=ce_job_id)
    run_once(ctx)
    assert row_of(db, job_id)["state"] == "done"
    assert len(script.calls("fetch")) == 2


def test_an_unavailable_ce_leaves_its_jobs(
    db: Database, script: Script, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = context(db, settings(tmp_path), "ce_fetcher")
    jobs = [ended(db, ctx, "finished", f"t{i}")[0] for i in range(3)]
    script.ce_unavailable("ce1")
    with caplog.at_level(logging.WARNING, logger="act.ce_fetcher"):
        run_once(ctx)
    assert [row_of(db, j)["state"] for j in jobs] == ["finished"] * 3
    assert all(row_of(db, j)["lease_owner"] is None for j in jobs)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["ce=ce1: unavailable (connection refused); 3 job(s) fetched later"]


def test_outputs_gone_at_the_ce(db: Database, script: Script, tmp_path: Path) -> None:
    ctx = context(db, settings(tmp_path), "ce_fetcher")
    ok, ok_id = ended(db, ctx, "finished", "t1")
    bad, bad_id = ended(db, ctx, "failed", "t2")
    script.fetch(gone=True, ce_job_id=ok_id)
    script.fetch(gone=True, ce_job_id=bad_id)
    run_once(ctx)
    assert row_of(db, ok)["state"] == "done" and LOST_NOTE in row_of(db, ok)["error_text"]
    assert row_of(db, bad)["state"] == "donefailed"
    assert history(db, ok)[-1][3] == LOST_NOTE
    assert row_of(db, ok)["output_dir"] is None


@pytest.mark.parametrize(
    ("caps", "files", "cap"),
    [
        ({"max_files": 2}, {"a": "1", "b": "2", "c/d": "3"}, "max_files"),
        ({"max_bytes": 10}, {"a": "x" * 11}, "max_bytes"),
    ],
)
def test_outputs_over_the_caps_are_not_kept(
    db: Database,
    script: Script,
    tmp_path: Path,
    caps: dict[str, int],
    files: dict[str, str],
    cap: str,
) -> None:
    ctx = context(db, settings(tmp_path, fetch=caps), "ce_fetcher")
    job_id, ce_job_id = ended(db, ctx, "finished", "t1")
    script.fetch(files, ce_job_id=ce_job_id)
    run_once(ctx)
    row = row_of(db, job_id)
    assert row["state"] == "donefailed" and row["output_dir"] is None
    assert f"engine.fetch.{cap}" in row["error_text"]
    assert not (tmp_path / "root" / "ce-jobs" / "ce1" / str(job_id)).exists()


def test_measure_counts_links_without_following_them(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"12345")
    (tmp_path / "link").symlink_to("/etc")
    files, size = measure(tmp_path)
    assert files == 2 and size == 5 + len("/etc")


def test_a_ce_name_cannot_leave_the_base_directory(tmp_path: Path) -> None:
    assert job_dir(tmp_path, "ce1", 7) == tmp_path / "ce1" / "7"
    for bad in ("..", "a/b", ""):
        with pytest.raises(ValueError):
            job_dir(tmp_path, bad, 7)
