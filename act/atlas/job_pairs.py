"""The PanDA job / CE job pairs app_status follows, typed: one query per kind of change.

Each function reads at most ``limit`` rows, in ``panda_jobs.id`` order, of this instance's
``shard``; app_status decides and moves them (act.atlas.app_status). Fields are column names
(``labelled`` ones come from the joined table); tests/test_rows.py checks them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.atlas.latest_ce import is_latest_ce_job, latest_ce_name
from act.common.liveness import Shard
from act.common.rows import fetch, row_type, select_of
from act.common.schema import ce_jobs, panda_jobs
from act.common.states import (
    C_KILLABLE_ALL,
    C_OVER,
    C_UNSETTLED,
    P_NEEDS_CE_FILES,
    Layer,
    PandaJobState,
    in_table_order,
)

#: :class:`JobPair`'s fields that are not ``ce_jobs`` columns: the PanDA job's, or renamed.
PAIR_LABELLED = ("ce_state", "panda_id", "panda_state", "event_ranges")


@row_type(ce_jobs, labelled=PAIR_LABELLED)
@dataclass(frozen=True)
class JobPair:
    """A CE job (``id``, ``ce_state``, ...) with its PanDA job (``panda_job_id``, ``panda_id``,
    ``panda_state``, ``event_ranges``)."""

    id: int
    ce_state: str  # the CE job's state
    ce_name: str | None
    output_dir: str | None
    panda_job_id: int
    panda_id: int
    panda_state: str
    event_ranges: str | None


@row_type(panda_jobs, labelled=("ce",))
@dataclass(frozen=True)
class KilledJob:
    """A ``tobekilled`` PanDA job none of whose CE jobs may still change."""

    id: int
    panda_id: int
    ce: str | None  # labelled: the newest CE job's CE (act.atlas.latest_ce)


def latest_pairs(
    conn: Connection,
    panda_states: Collection[str],
    ce_states: Collection[str],
    *,
    shard: Shard,
    limit: int,
) -> list[JobPair]:
    """PanDA jobs in ``panda_states`` whose newest CE job is in ``ce_states``."""
    return _pairs(conn, ce_states, shard, limit, [_panda_in(panda_states), is_latest_ce_job()])


def killable_pairs(conn: Connection, *, shard: Shard, limit: int) -> list[JobPair]:
    """``tobekilled`` PanDA jobs with each of their CE jobs that may still run (not only the
    newest)."""
    return _pairs(conn, C_KILLABLE_ALL, shard, limit, [_panda_in({PandaJobState.TOBEKILLED})])


def ended_pairs_not_needed(conn: Connection, *, shard: Shard, limit: int) -> list[JobPair]:
    """Ended CE jobs whose files their PanDA job no longer needs: it is past the states that
    read them, or the CE job is no longer its newest."""
    no_longer_needed = sa.or_(
        ~is_latest_ce_job(),
        panda_jobs.c.state.not_in(in_table_order(Layer.PANDA, P_NEEDS_CE_FILES)),
    )
    return _pairs(conn, C_OVER, shard, limit, [no_longer_needed])


def killed_and_settled(conn: Connection, *, shard: Shard, limit: int) -> list[KilledJob]:
    """``tobekilled`` PanDA jobs with no CE job left that may still change."""
    unsettled = sa.exists().where(
        ce_jobs.c.panda_job_id == panda_jobs.c.id,
        ce_jobs.c.state.in_(in_table_order(Layer.CE, C_UNSETTLED)),
    )
    conditions = [panda_jobs.c.state == PandaJobState.TOBEKILLED, ~unsettled, *_of(shard)]
    stmt = select_of(KilledJob, panda_jobs, {"ce": latest_ce_name()})
    return fetch(conn, KilledJob, stmt.where(*conditions).order_by(panda_jobs.c.id).limit(limit))


def _panda_in(states: Collection[str]) -> sa.ColumnElement[bool]:
    return panda_jobs.c.state.in_(in_table_order(Layer.PANDA, states))


def _of(shard: Shard) -> list[sa.ColumnElement[bool]]:
    return [panda_jobs.c.id % shard.count == shard.index] if shard.count > 1 else []


def _pairs(
    conn: Connection,
    ce_states: Collection[str],
    shard: Shard,
    limit: int,
    conditions: Sequence[sa.ColumnElement[bool]],
) -> list[JobPair]:
    """(CE job, PanDA job) pairs with the CE job in ``ce_states``; one query."""
    labelled: dict[str, sa.ColumnElement[Any]] = {
        "ce_state": ce_jobs.c.state,
        "panda_id": panda_jobs.c.panda_id,
        "panda_state": panda_jobs.c.state,
        "event_ranges": panda_jobs.c.event_ranges,
    }
    stmt = (
        select_of(JobPair, ce_jobs, labelled)
        .select_from(panda_jobs.join(ce_jobs, ce_jobs.c.panda_job_id == panda_jobs.c.id))
        .where(ce_jobs.c.state.in_(in_table_order(Layer.CE, ce_states)), *conditions, *_of(shard))
        .order_by(panda_jobs.c.id)
        .limit(limit)
    )
    return fetch(conn, JobPair, stmt)
