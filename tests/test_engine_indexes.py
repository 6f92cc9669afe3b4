"""The statements of the poller, cleaner and stuck janitor are served by indexes."""

from __future__ import annotations

from pathlib import Path

import pytest

from act.common.db import Database
from act.common.states import Layer
from act.engine import cleaner, poller, stuck
from act.engine.settings import StuckRule
from tests.support.follow import ago, context, settings
from tests.support.jobs import make_jobs
from tests.support.plans import analyze, capture, full_scans
from tests.support.scripted_backend import install

TABLES = {"ce_jobs", "transitions"}
CE = "https://ce.example.org/arex"  # the CE of tests.support.jobs.ce_row


@pytest.mark.slow
def test_follow_up_daemons_use_indexes(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(monkeypatch, tmp_path / "scripted.json")
    db.run(lambda c: make_jobs(c, Layer.CE, "cleaned", 6000))
    db.run(lambda c: make_jobs(c, Layer.CE, "running", 300))
    db.run(lambda c: make_jobs(c, Layer.CE, "toclean", 50))
    db.run(lambda c: make_jobs(c, Layer.CE, "submitted", 50))
    analyze(db, sorted(TABLES))
    config = settings(tmp_path, ces=(CE,))
    rules = [StuckRule(layer="ce", state="submitted", after=60, action="tocancel")]
    with capture(db) as statements:
        poller.run_once(context(db, config, "poller"))
        cleaner.run_once(context(db, config, "cleaner", batch=20))
        stuck.apply(db, rules, owner="janitor@x", limit=20, now=ago(-3600))
    # An executemany (the poller's per-row values) is planned with its first parameter set.
    single = [(sql, p[0] if isinstance(p, list) else p) for sql, p in statements]
    assert len(single) >= 8
    bad = full_scans(db, single, TABLES)
    assert bad == []
