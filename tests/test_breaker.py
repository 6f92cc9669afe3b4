"""The per-CE circuit breaker in the ces table, on every backend."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa

from act.common.db import Database
from act.common.schema import ces
from act.engine import breaker, queries
from act.engine.breaker import CLOSED, HALF_OPEN, OPEN
from act.engine.queries import CERow
from act.engine.settings import BreakerSettings, CESettings

T0 = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)
SETTINGS = BreakerSettings(failures=3, cooldown=600.0)
CONFIG = {"ce1": CESettings(backend="arc"), "ce2": CESettings(backend="local")}


def at(offset: float) -> datetime:
    return T0 + timedelta(seconds=offset)


def row(db: Database, ce: str = "ce1") -> dict[str, Any]:
    """The whole ``ces`` row, with the columns the breaker writes but does not read."""
    with db.read() as conn:
        return dict(conn.execute(sa.select(ces).where(ces.c.name == ce)).mappings().one())


def ce_row(db: Database, ce: str = "ce1") -> CERow:
    """The row as the submitter reads it and hands it to :func:`breaker.admits`."""
    with db.read() as conn:
        (found,) = queries.ce_rows(conn, [ce])
    return found


def fail(db: Database, when: float, error: str = "connection refused") -> str:
    return db.run(
        lambda c: breaker.record_failure(c, "ce1", error=error, now=at(when), settings=SETTINGS)
    )


def admits(db: Database, when: float) -> breaker.Admission:
    return breaker.admits(ce_row(db), now=at(when), settings=SETTINGS)


@pytest.fixture
def synced(db: Database) -> Database:
    db.run(lambda c: breaker.sync_ces(c, CONFIG, now=at(0)))
    return db


def test_sync_inserts_missing_rows_once_and_fixes_the_backend(db: Database) -> None:
    db.run(lambda c: breaker.sync_ces(c, CONFIG, now=at(0)))
    db.run(lambda c: breaker.sync_ces(c, CONFIG, now=at(1)))
    changed = {**CONFIG, "ce2": CESettings(backend="condor")}
    db.run(lambda c: breaker.sync_ces(c, changed, now=at(2)))
    with db.read() as conn:
        rows = conn.execute(sa.select(ces.c.name, ces.c.backend, ces.c.breaker)).all()
    assert sorted(tuple(r) for r in rows) == [("ce1", "arc", CLOSED), ("ce2", "condor", CLOSED)]


def test_opens_after_n_consecutive_failures_and_a_success_resets_the_count(
    synced: Database, caplog: pytest.LogCaptureFixture
) -> None:
    db = synced
    assert [fail(db, 1), fail(db, 2)] == [CLOSED, CLOSED]
    assert db.run(lambda c: breaker.record_success(c, "ce1", now=at(3))) == CLOSED
    assert row(db)["failures"] == 0
    with caplog.at_level(logging.WARNING, logger="act.engine.breaker"):
        assert [fail(db, 4), fail(db, 5), fail(db, 6, "TLS handshake failed")] == [
            CLOSED,
            CLOSED,
            OPEN,
        ]
    state = row(db)
    assert state["breaker"] == OPEN and state["failures"] == 3
    assert state["opened_at"] == at(6)
    assert state["last_error"] == "TLS handshake failed" and state["last_error_at"] == at(6)
    assert any("ce=ce1: breaker closed -> open" in r.getMessage() for r in caplog.records)
    assert row(db, "ce2")["breaker"] == CLOSED  # other CEs are untouched


def test_cooldown_then_a_single_probe_whose_success_closes(synced: Database) -> None:
    db = synced
    for when in (1, 2, 3):
        fail(db, when)
    closed_for = admits(db, 3 + 599)
    assert not closed_for.ok and "open until" in closed_for.reason
    after = admits(db, 3 + 600)
    assert after.ok and after.probe
    db.run(lambda c: breaker.start_probe(c, "ce1", 42, now=at(700)))
    assert row(db)["breaker"] == HALF_OPEN and row(db)["probe_job_id"] == 42
    blocked = admits(db, 701)
    assert not blocked.ok and "probe job 42" in blocked.reason  # only one probe at a time
    assert db.run(lambda c: breaker.record_success(c, "ce1", now=at(710))) == CLOSED
    state = row(db)
    assert state["breaker"] == CLOSED and state["probe_job_id"] is None
    assert state["opened_at"] is None and state["failures"] == 0
    assert admits(db, 711).ok and not admits(db, 711).probe


def test_probe_failure_reopens_with_a_new_cooldown(synced: Database) -> None:
    db = synced
    for when in (1, 2, 3):
        fail(db, when)
    db.run(lambda c: breaker.start_probe(c, "ce1", 7, now=at(700)))
    assert fail(db, 705, "probe rejected") == OPEN
    state = row(db)
    assert state["opened_at"] == at(705) and state["probe_job_id"] is None
    assert not admits(db, 705 + 599).ok
    assert admits(db, 705 + 600).probe


def test_a_probe_that_never_comes_back_is_replaced_after_a_cooldown(synced: Database) -> None:
    db = synced
    for when in (1, 2, 3):
        fail(db, when)
    db.run(lambda c: breaker.start_probe(c, "ce1", 7, now=at(700)))
    assert not admits(db, 700 + 599).ok
    assert admits(db, 700 + 600).probe


def test_success_while_open_does_not_close(synced: Database) -> None:
    db = synced
    for when in (1, 2, 3):
        fail(db, when)
    assert db.run(lambda c: breaker.record_success(c, "ce1", now=at(4))) == OPEN


def test_success_score_is_an_ewma(synced: Database) -> None:
    db = synced
    fail(db, 1)
    assert row(db)["success_score"] == pytest.approx(0.8)
    db.run(lambda c: breaker.record_success(c, "ce1", now=at(2)))
    assert row(db)["success_score"] == pytest.approx(0.84)


def test_operator_force_and_auto(synced: Database) -> None:
    db = synced
    db.run(lambda c: breaker.force(c, "ce1", "open", who="alice", why="downtime", now=at(1)))
    state = row(db)
    assert (state["breaker_forced"], state["updated_by"], state["reason"]) == (
        "open",
        "alice",
        "downtime",
    )
    assert not admits(db, 2).ok and "forced open" in admits(db, 2).reason
    for when in (3, 4, 5):
        fail(db, when)
    db.run(lambda c: breaker.force(c, "ce1", "closed", who="bob", why="it works", now=at(6)))
    assert admits(db, 7).ok  # forced closed wins over the automatic open state
    assert row(db)["breaker"] == OPEN
    db.run(lambda c: breaker.force(c, "ce1", None, who="bob", why="back to normal", now=at(8)))
    state = row(db)
    assert state["breaker_forced"] is None and state["breaker"] == CLOSED
    assert state["failures"] == 0 and admits(db, 9).ok


def test_drain_and_enable(synced: Database) -> None:
    db = synced
    db.run(lambda c: breaker.set_enabled(c, "ce1", False, who="carol", why="retiring", now=at(1)))
    drained = admits(db, 2)
    assert not drained.ok and "drained" in drained.reason
    assert row(db)["updated_by"] == "carol" and row(db)["updated_at"] == at(1)
    db.run(lambda c: breaker.set_enabled(c, "ce1", True, who="carol", why="back", now=at(3)))
    assert admits(db, 4).ok


def test_failure_on_an_unknown_ce_creates_its_row(db: Database) -> None:
    assert fail(db, 1) == CLOSED
    assert row(db)["failures"] == 1


def test_the_typed_row_reads_what_was_written(synced: Database) -> None:
    db = synced
    for when in (1, 2, 3):
        fail(db, when)
    db.run(lambda c: breaker.start_probe(c, "ce1", 42, now=at(700)))
    found = ce_row(db)
    assert (found.endpoint, found.enabled, found.breaker, found.breaker_forced) == (
        "ce1",
        True,
        HALF_OPEN,
        None,
    )
    assert (found.failures, found.opened_at, found.probe_job_id, found.probe_at) == (
        3,
        at(3),
        42,
        at(700),
    )
    assert found.success_score == pytest.approx(0.512)
    assert (found.max_queued, found.max_running, found.last_submit_at) == (None, None, None)
