"""Leases: claim, expiry, renewal, release and sharding, on every backend."""

from __future__ import annotations

import threading
from datetime import timedelta

import sqlalchemy as sa

from act.common.claims import claim, release, renew
from act.common.db import Database
from act.common.liveness import Shard
from act.common.schema import ce_jobs
from act.common.states import Layer
from act.common.timeutil import utcnow
from tests.support.jobs import make_jobs


def _claim(
    db: Database,
    owner: str,
    limit: int = 100,
    lease: float = 60,
    shard: Shard | None = None,
    states: tuple[str, ...] = ("tosubmit",),
) -> list[int]:
    return db.run(
        lambda c: claim(c, Layer.CE, states, owner=owner, lease=lease, limit=limit, shard=shard)
    )


def test_claims_take_free_rows_in_the_states_asked_up_to_the_limit(db: Database) -> None:
    wanted = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 5))
    db.run(lambda c: make_jobs(c, Layer.CE, "submitted", 3))
    first = _claim(db, "a", limit=3)
    second = _claim(db, "b", limit=3)
    assert first == wanted[:3] and second == wanted[3:]
    assert _claim(db, "c") == []
    with db.read() as conn:
        owners = dict(conn.execute(sa.select(ce_jobs.c.id, ce_jobs.c.lease_owner)).all())
    assert {owners[i] for i in first} == {"a"} and {owners[i] for i in second} == {"b"}


def test_an_expired_lease_is_taken_over_and_renewal_keeps_it(db: Database) -> None:
    ids = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 4))
    assert _claim(db, "dead", limit=2) == ids[:2]
    assert _claim(db, "alive", limit=2) == ids[2:]
    past = utcnow() - timedelta(seconds=1)
    db.run(lambda c: c.execute(sa.update(ce_jobs).values(lease_expires=past)))
    assert db.run(lambda c: renew(c, Layer.CE, "alive", 60)) == 2
    assert _claim(db, "successor") == ids[:2]  # only the lease nobody renewed
    assert db.run(lambda c: renew(c, Layer.CE, "dead", 60)) == 0  # lost for good


def test_release_hands_rows_back_and_only_the_owners(db: Database) -> None:
    ids = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 4))
    _claim(db, "a", limit=2)
    _claim(db, "b", limit=2)
    assert db.run(lambda c: release(c, Layer.CE, "a", ids[:1])) == 1
    assert db.run(lambda c: release(c, Layer.CE, "a", ids[2:])) == 0  # b's rows
    assert db.run(lambda c: release(c, Layer.CE, "a")) == 1
    assert _claim(db, "c") == ids[:2]


def test_shards_split_rows_by_id_modulo_the_live_count(db: Database) -> None:
    ids = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 9))
    zero = _claim(db, "a", shard=Shard(0, 3))
    one = _claim(db, "b", shard=Shard(1, 3))
    assert zero == [i for i in ids if i % 3 == 0]
    assert one == [i for i in ids if i % 3 == 1]
    assert _claim(db, "c", shard=Shard(0, 1)) == [i for i in ids if i % 3 == 2]


def _interleaved(db: Database, count: int) -> dict[int, str]:
    """``count`` CE jobs whose states alternate tosubmit/submitted by id; id -> state."""
    made: dict[int, str] = {}
    for n in range(count):
        state = "tosubmit" if n % 2 else "submitted"
        (job,) = db.run(lambda c: make_jobs(c, Layer.CE, state, 1))
        made[job] = state
    return made


def test_a_claim_over_several_states_takes_the_oldest_of_all(db: Database) -> None:
    # On MariaDB this takes the per-state path (an unlocked UNION ALL of per-state ranges, then
    # a locking read by primary key): the order must still be global.
    made = _interleaved(db, 10)
    both = ("tosubmit", "submitted")
    assert _claim(db, "a", limit=3, states=both) == sorted(made)[:3]
    # ordered by another column: the earliest next_check_at first, whatever the state
    ids = sorted(made)[3:]
    at = utcnow()
    for rank, job in enumerate(reversed(ids)):
        db.run(
            lambda c: c.execute(
                sa.update(ce_jobs)
                .where(ce_jobs.c.id == job)
                .values(next_check_at=at + timedelta(seconds=rank))
            )
        )
    taken = db.run(
        lambda c: claim(
            c,
            Layer.CE,
            both,
            owner="b",
            lease=60,
            limit=4,
            order_by=[ce_jobs.c.next_check_at, ce_jobs.c.id],
        )
    )
    assert taken == sorted(list(reversed(ids))[:4])
    assert _claim(db, "c", states=both) == sorted(set(ids) - set(taken))


def test_concurrent_claims_over_several_states_never_share_a_row(db: Database) -> None:
    made = _interleaved(db, 60)
    both = ("tosubmit", "submitted")
    taken: dict[str, list[int]] = {}
    errors: list[BaseException] = []

    def claimer(owner: str) -> None:
        try:
            mine: list[int] = []
            while batch := _claim(db, owner, limit=7, states=both):
                mine.extend(batch)
            taken[owner] = mine
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=claimer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    every = [job for mine in taken.values() for job in mine]
    assert sorted(every) == sorted(made)  # each row claimed exactly once
