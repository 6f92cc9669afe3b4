"""The cycle mark a daemon keeps for actd's watchdog (act.common.liveness.CycleMark): there while
a cycle runs, changed by its progress, gone after it; harmless when it cannot be written.
tests/test_supervisor.py shows actd killing and restarting a daemon whose mark stands still."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from act.common import liveness
from act.common.daemon import Context, DaemonSpec, run_daemon
from act.common.db import Database
from act.common.liveness import CycleMark, cycle_progress, cycle_started
from act.service.settings import Settings


def test_a_cycle_is_marked_from_start_to_end_and_its_progress_changes_the_mark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "worker.0"
    mark = CycleMark(path)
    assert cycle_progress(path) is None
    mark.progress()  # no cycle yet: nothing to mark
    assert cycle_progress(path) is None
    before = time.time()
    mark.start()
    first = cycle_progress(path)
    started = cycle_started(path)
    assert first is not None and started is not None
    assert before - 0.01 <= started <= time.time()
    monkeypatch.setattr(liveness, "PROGRESS_EVERY", 3600.0)
    mark.progress()  # within PROGRESS_EVERY of the start: not written again
    assert cycle_progress(path) == first
    monkeypatch.setattr(liveness, "PROGRESS_EVERY", 0.0)
    time.sleep(0.05)  # past the file system's clock granularity
    mark.progress()
    assert cycle_progress(path) not in (None, first)
    assert cycle_started(path) == started  # progress keeps the start time
    mark.end()
    assert cycle_progress(path) is None and cycle_started(path) is None
    mark.end()  # twice is harmless


def test_a_mark_that_cannot_be_written_never_fails_the_cycle(tmp_path: Path) -> None:
    mark = CycleMark(tmp_path / "missing-dir" / "worker.0")
    mark.start()
    mark.progress()
    mark.end()
    idle = CycleMark(None)  # not under actd
    idle.start()
    idle.progress()
    idle.end()


def test_the_daemon_loop_marks_each_cycle_in_the_file_actd_names(
    sqlite_db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "marked.0"
    monkeypatch.setenv(liveness.ENV_CYCLE_FILE, str(path))
    seen: list[Any] = []

    def run_once(ctx: Context[Settings]) -> bool:
        seen.append(cycle_progress(path))
        time.sleep(liveness.PROGRESS_EVERY + 0.05)
        for _ in ctx.until_stopped([1]):  # each job of a batch is progress
            seen.append(cycle_progress(path))
        return False

    settings = Settings.model_validate({"root": str(tmp_path)})
    code = run_daemon(DaemonSpec(run_once=run_once), settings, "marked", once=True, db=sqlite_db)
    assert code == 0
    assert len(seen) == 2 and None not in seen and seen[0] != seen[1]
    assert not path.exists()  # the cycle ended
