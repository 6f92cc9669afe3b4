"""Typed rows (act.common.rows) and claim_and_load: every row type's fields name real columns,
and a claim loads exactly the rows it took, as the row type, in the claim's order."""

from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass

import pytest
import sqlalchemy as sa

import act.atlas.queries as atlas_queries
import act.engine.queries as engine_queries
from act.atlas import job_pairs, retention
from act.common.claims import claim, claim_and_load
from act.common.db import Database
from act.common.rows import REGISTERED, columns_of, row_type
from act.common.schema import ce_jobs, panda_jobs
from act.common.states import Layer
from act.ctl import job_selection, queue_queries, report_queries
from act.engine.queries import ToSubmit
from tests.support.jobs import make_jobs


def test_every_row_type_reads_columns_that_exist() -> None:
    declared = {
        atlas_queries.DueReport,
        atlas_queries.ToValidate,
        atlas_queries.ToTranslate,
        atlas_queries.QueueLimits,
        job_pairs.JobPair,
        job_pairs.KilledJob,
        job_selection.SelectedJob,
        job_selection.JobNow,
        job_selection.RunningCEJob,
        engine_queries.ToSubmit,
        engine_queries.ToPoll,
        engine_queries.ToFetch,
        engine_queries.ToCancel,
        engine_queries.ToClean,
        engine_queries.CERow,
        engine_queries.CEShown,
        report_queries.OldestPandaJob,
        report_queries.OldestCEJob,
        queue_queries.QueueShown,
        retention.ToArchive,
        retention.ArchivedCEJob,
    }
    assert declared <= set(REGISTERED)
    for module in (atlas_queries, job_pairs, job_selection, engine_queries, queue_queries):
        # every dataclass declared there is a checked row type
        found = {
            v
            for v in vars(module).values()
            if isinstance(v, type) and is_dataclass(v) and v.__module__ == module.__name__
        }
        assert found <= set(REGISTERED), module.__name__
    for cls, (table, labelled) in REGISTERED.items():
        names = [f.name for f in fields(cls)]
        assert set(labelled) <= set(names), cls
        missing = [name for name in names if name not in labelled and name not in table.c]
        assert not missing, f"{cls.__name__}: no column(s) {missing} in {table.name}"


def test_the_validators_joined_fields_are_ce_job_columns() -> None:
    _, labelled = atlas_queries.to_validate_source()
    assert set(labelled) == set(atlas_queries.CE_JOB_FIELDS)
    columns = columns_of(atlas_queries.ToValidate, panda_jobs, labelled)
    assert [c.name for c in columns] == [f.name for f in fields(atlas_queries.ToValidate)]


def test_a_misspelt_field_or_a_mutable_row_type_is_refused() -> None:
    @dataclass(frozen=True)
    class Misspelt:
        id: int
        ce_endpiont: str | None

    with pytest.raises(KeyError, match="ce_endpiont"):
        columns_of(Misspelt, ce_jobs)
    with pytest.raises(KeyError, match="nothing"):
        columns_of(Misspelt, ce_jobs, {"nothing": ce_jobs.c.id})

    @dataclass
    class Mutable:
        id: int

    with pytest.raises(TypeError, match="frozen"):
        row_type(ce_jobs)(Mutable)


@pytest.mark.parametrize("states", [("tosubmit",), ("tosubmit", "submitting")])
def test_claim_and_load_returns_the_claimed_rows_typed_in_claim_order(
    db: Database, states: tuple[str, ...]
) -> None:
    first = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 3))
    second = db.run(lambda c: make_jobs(c, Layer.CE, "submitting", 3))
    rows = db.run(
        lambda c: claim_and_load(c, Layer.CE, states, ToSubmit, owner="a", lease=60, limit=4)
    )
    assert all(isinstance(row, ToSubmit) for row in rows)
    expected = sorted([*first, *second])[:4] if len(states) > 1 else first
    assert [row.id for row in rows] == expected
    # the same lease as claim's: the rest is still free, these are not
    rest = db.run(lambda c: claim(c, Layer.CE, states, owner="b", lease=60, limit=10))
    assert not set(rest) & {row.id for row in rows}
    with db.read() as conn:
        owners = dict(conn.execute(sa.select(ce_jobs.c.id, ce_jobs.c.lease_owner)).all())
    assert {owners[row.id] for row in rows} == {"a"}


def test_claim_and_load_keeps_the_claims_order_by(db: Database) -> None:
    ids = db.run(lambda c: make_jobs(c, Layer.CE, "tosubmit", 4))
    order = [ce_jobs.c.id.desc()]
    rows = db.run(
        lambda c: claim_and_load(
            c, Layer.CE, ["tosubmit"], ToSubmit, owner="a", lease=60, limit=3, order_by=order
        )
    )
    assert [row.id for row in rows] == sorted(ids, reverse=True)[:3]
    assert (
        db.run(
            lambda c: claim_and_load(
                c, Layer.CE, ["running"], ToSubmit, owner="a", lease=60, limit=3
            )
        )
        == []
    )
