"""The one transition function, on every backend: allowed edges work, everything else is refused."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
import sqlalchemy as sa

from act.common.claims import claim
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs
from act.common.schema import transitions as history
from act.common.states import EDGES, STATES, Actor, IllegalTransition, Layer
from act.common.timeutil import utcnow
from act.common.transitions import CHUNK, TABLES, create_jobs, transition
from tests.support.jobs import ce_row, make_jobs, panda_row


def _state(db: Database, layer: Layer, job_id: int) -> str:
    table = TABLES[layer]
    with db.read() as conn:
        return str(conn.execute(sa.select(table.c.state).where(table.c.id == job_id)).scalar_one())


def _history(db: Database, layer: Layer, job_id: int) -> list[tuple[str | None, str, str]]:
    with db.read() as conn:
        rows = conn.execute(
            sa.select(history.c.from_state, history.c.to_state, history.c.actor)
            .where(history.c.layer == layer.value, history.c.job_id == job_id)
            .order_by(history.c.id)
        )
        return [tuple(row) for row in rows]


def test_every_allowed_transition_works_for_each_of_its_actors(db: Database) -> None:
    panda_ids = itertools.count(1)
    for (layer, source, target), edge in EDGES.items():
        for actor in sorted(edge.actors):
            if source is None:
                row = panda_row(next(panda_ids)) if layer is Layer.PANDA else ce_row()
                ids = db.run(lambda c: create_jobs(c, layer, [row], target, actor=actor))
                assert _history(db, layer, ids[0]) == [(None, target, actor.value)]
            else:
                (job,) = db.run(lambda c: make_jobs(c, layer, source, 1, next(panda_ids)))
                moved = db.run(
                    lambda c: transition(
                        c, layer, [job], source, target, actor=actor, reason="test"
                    )
                )
                assert moved == [job], f"{layer.value}: {source}->{target} by {actor.value}"
                assert _history(db, layer, job)[-1] == (source, target, actor.value)
            assert _state(db, layer, ids[0] if source is None else job) == target


def test_every_other_transition_is_refused_and_changes_nothing(db: Database) -> None:
    panda_ids = itertools.count(1)
    refused = 0
    for layer, states in STATES.items():
        for source in states:
            (job,) = db.run(lambda c: make_jobs(c, layer, source, 1, next(panda_ids)))
            before = _history(db, layer, job)
            for target in states:
                edge = EDGES.get((layer, source, target))
                actors = set(Actor) - (edge.actors if edge else set())
                for actor in actors:
                    with pytest.raises(IllegalTransition):
                        db.run(lambda c: transition(c, layer, [job], source, target, actor=actor))
                    refused += 1
            assert _state(db, layer, job) == source
            assert _history(db, layer, job) == before
        for target in states:  # creating a job is an edge too
            edge = EDGES.get((layer, None, target))
            for actor in set(Actor) - (edge.actors if edge else set()):
                row = panda_row(10**6) if layer is Layer.PANDA else ce_row()
                with pytest.raises(IllegalTransition):
                    db.run(lambda c: create_jobs(c, layer, [row], target, actor=actor))
                refused += 1
    assert refused > 5000
    with db.read() as conn:  # the refused creations left nothing behind
        assert (
            conn.execute(
                sa.select(sa.func.count())
                .where(panda_jobs.c.panda_id == 10**6)
                .select_from(panda_jobs)
            ).scalar_one()
            == 0
        )


def test_compare_and_set_moves_only_rows_in_the_from_state(db: Database) -> None:
    waiting = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 5))
    elsewhere = db.run(lambda c: make_jobs(c, Layer.CE, "submitted", 3))
    moved = db.run(
        lambda c: transition(
            c,
            Layer.CE,
            waiting + elsewhere + [10**9],
            "tosubmit",
            "submitting",
            actor=Actor.SUBMITTER,
        )
    )
    assert moved == sorted(waiting)
    again = db.run(
        lambda c: transition(c, Layer.CE, waiting, "tosubmit", "submitting", actor=Actor.SUBMITTER)
    )
    assert again == []
    for job in elsewhere:
        assert _state(db, Layer.CE, job) == "submitted"
        assert [h[1] for h in _history(db, Layer.CE, job)][-1] == "submitted"
    for job in waiting:
        assert _history(db, Layer.CE, job)[-1] == ("tosubmit", "submitting", "submitter")


def test_transition_sets_values_times_and_reason_in_one_statement(db: Database) -> None:
    (job,) = db.run(lambda c: make_jobs(c, Layer.CE, "submitting"))
    before = utcnow()
    db.run(
        lambda c: transition(
            c,
            Layer.CE,
            [job],
            "submitting",
            "submitted",
            actor=Actor.SUBMITTER,
            reason="accepted by ce1",
            values={"ce_job_id": "abc123", "submitted_at": before},
        )
    )
    with db.read() as conn:
        row = conn.execute(sa.select(ce_jobs).where(ce_jobs.c.id == job)).mappings().one()
        last = (
            conn.execute(
                sa.select(history)
                .where(history.c.job_id == job)
                .order_by(history.c.id.desc())
                .limit(1)
            )
            .mappings()
            .one()
        )
    assert row["ce_job_id"] == "abc123"
    assert row["submitted_at"] == before
    assert row["state_changed_at"] >= before and row["state_changed_at"].utcoffset() == timedelta(0)
    assert row["state_changed_at"] - utcnow() < timedelta(seconds=5)
    assert last["reason"] == "accepted by ce1" and last["at"] == row["state_changed_at"]


def test_values_may_not_write_a_state_column(db: Database) -> None:
    (job,) = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit"))
    with pytest.raises(ValueError, match="state"):
        db.run(
            lambda c: transition(
                c,
                Layer.CE,
                [job],
                "tosubmit",
                "submitting",
                actor=Actor.SUBMITTER,
                values={"state": "running"},
            )
        )
    with pytest.raises(ValueError, match="state"):
        db.run(
            lambda c: create_jobs(
                c, Layer.CE, [{**ce_row(), "state": "running"}], "tosubmit", actor=Actor.TRANSLATOR
            )
        )
    assert _state(db, Layer.CE, job) == "tosubmit"


def test_owner_only_moves_rows_it_still_holds(db: Database) -> None:
    ids = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 4))
    mine = db.run(lambda c: claim(c, Layer.CE, ["tosubmit"], owner="a", lease=60, limit=2))
    assert mine == ids[:2]
    moved = db.run(
        lambda c: transition(
            c, Layer.CE, ids, "tosubmit", "submitting", actor=Actor.SUBMITTER, owner="a"
        )
    )
    assert moved == mine
    with db.read() as conn:  # moved rows are released, the others were never claimed
        leases = conn.execute(
            sa.select(ce_jobs.c.id, ce_jobs.c.lease_owner).order_by(ce_jobs.c.id)
        ).all()
    assert [owner for _, owner in leases] == [None] * 4


def test_many_ids_are_chunked_and_returned_sorted(db: Database) -> None:
    count = CHUNK * 2 + 17
    ids = db.run(lambda c: make_jobs(c, Layer.PANDA, "received", count))
    moved = db.run(
        lambda c: transition(
            c, Layer.PANDA, list(reversed(ids)), "received", "queued", actor=Actor.TRANSLATOR
        )
    )
    assert moved == sorted(ids) and len(moved) == count
    with db.read() as conn:
        rows = conn.execute(
            sa.select(sa.func.count()).select_from(history).where(history.c.to_state == "queued")
        ).scalar_one()
    assert rows == count


def test_a_failed_transaction_leaves_no_state_change_and_no_history(db: Database) -> None:
    (job,) = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit"))

    def move_then_fail(conn: sa.Connection) -> None:
        transition(conn, Layer.CE, [job], "tosubmit", "submitting", actor=Actor.SUBMITTER)
        raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        db.run(move_then_fail)
    assert _state(db, Layer.CE, job) == "tosubmit"
    assert len(_history(db, Layer.CE, job)) == 1
