"""What the engine daemons that follow CE jobs share: claiming rows (typed: each daemon's row
type is in :mod:`act.engine.queries`), grouping them by CE, writing the columns that are not
states, and spreading the next look at a job over time."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common.claims import claim, release, renew
from act.common.rows import R, fetch, select_of
from act.common.schema import ce_jobs
from act.common.states import Layer, in_table_order
from act.common.transitions import chunked
from act.engine.backend import CE, Backend
from act.engine.config import Context
from act.engine.queries import held_by
from act.engine.runtime import EnginePool, UnknownCE

T = TypeVar("T")


class Job(Protocol):
    """A claimed CE job row: any row type with an ``id`` (read-only, as in a frozen dataclass)."""

    @property
    def id(self) -> int: ...


class JobAtCE(Job, Protocol):
    """A claimed CE job row that names its CE."""

    @property
    def ce_name(self) -> str | None: ...


J = TypeVar("J", bound=Job)
C = TypeVar("C", bound=JobAtCE)

#: A ``next_check_at`` (and similar) is set this fraction either side of its nominal delay.
JITTER = 0.1


def claim_jobs(
    ctx: Context,
    states: Collection[str],
    row_type: type[R],
    *,
    where: Sequence[sa.ColumnElement[bool]] = (),
    limit: int | None = None,
) -> list[R]:
    """Claim up to ``limit`` (default: the daemon's batch) CE jobs in ``states``, taken state by
    state in the order of the state table, oldest first; their rows as ``row_type`` (a row type
    of ``ce_jobs``, see :mod:`act.engine.queries`)."""

    def take(conn: Connection) -> list[R]:
        # One claim per state: each is then served in id order by the (state, id) index, where
        # "state IN (...) ORDER BY id" led PostgreSQL to walk the primary key over every row.
        ids: list[int] = []
        for state in in_table_order(Layer.CE, states):
            left = (limit or ctx.daemon.batch) - len(ids)
            if left <= 0:
                break
            ids += claim(
                conn,
                Layer.CE,
                [state],
                owner=ctx.owner,
                lease=ctx.daemon.lease,
                limit=left,
                shard=ctx.shard,
                where=where,
            )
        rows: list[R] = []
        load = select_of(row_type, ce_jobs)
        for chunk in chunked(ids):
            rows.extend(
                fetch(conn, row_type, load.where(ce_jobs.c.id.in_(chunk)).order_by(ce_jobs.c.id))
            )
        return rows

    return ctx.db.run(take)


def by_ce(rows: Iterable[C]) -> dict[str | None, list[C]]:
    """Rows grouped by their CE (``ce_name``), in row order."""
    groups: dict[str | None, list[C]] = {}
    for row in rows:
        groups.setdefault(row.ce_name, []).append(row)
    return groups


def batches(items: Sequence[T], size: int) -> Iterator[list[T]]:
    size = max(1, size)
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def resolve_ce(ctx: Context, engines: EnginePool, name: str | None) -> tuple[CE, Backend] | None:
    """The configured CE called ``name`` and its back end; None (with an error logged) if there
    is no such CE or its back end cannot be made (e.g. invalid options)."""
    if name is None:
        return None
    try:
        ce = engines.ce(name)
        return ce, engines.backend(ce)
    except UnknownCE as error:
        ctx.log.error("%s: its jobs are left as they are", error)
    except Exception as error:
        ctx.log.error(
            "ce=%s: cannot make its back end (%s): its jobs are left as they are", name, error
        )
    return None


def update_mine(
    conn: Connection,
    ctx: Context,
    ids: Sequence[int],
    values: dict[str, Any],
    *,
    keep: bool = False,
) -> int:
    """Set non-state ``values`` on the rows this daemon still claims; releases them unless keep."""
    changes = dict(values)
    if not keep:
        changes.update(lease_owner=None, lease_expires=None)
    updated = 0
    for chunk in chunked(sorted(set(ids))):
        result = conn.execute(
            sa.update(ce_jobs)
            .where(ce_jobs.c.id.in_(chunk), ce_jobs.c.lease_owner == ctx.owner)
            .values(changes)
        )
        updated += int(result.rowcount)
    return updated


def set_each(conn: Connection, ctx: Context, values: Mapping[int, Mapping[str, Any]]) -> None:
    """Per-row non-state values on rows this daemon still claims, one executemany per column set.

    The claims are kept (a transition or :func:`give_back` releases them).
    """
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for job_id, row in values.items():
        if row:
            params = {f"v_{key}": value for key, value in row.items()}
            by_columns[tuple(sorted(row))].append({"v_id": job_id, **params})
    for columns, params_list in by_columns.items():
        stmt = (
            sa.update(ce_jobs)
            .where(ce_jobs.c.id == sa.bindparam("v_id"), ce_jobs.c.lease_owner == ctx.owner)
            .values({column: sa.bindparam(f"v_{column}") for column in columns})
        )
        conn.execute(stmt, params_list)


def keep(ctx: Context, jobs: Sequence[J]) -> list[J]:
    """Renew this daemon's claims on ``jobs`` before a (slow) CE call; the jobs still held.

    A claim that expired meanwhile may have been taken by another instance: that job is skipped.
    """
    if not jobs:
        return []

    def renew_and_read(conn: Connection) -> set[int]:
        ids = [job.id for job in jobs]
        renew(conn, Layer.CE, ctx.owner, ctx.daemon.lease, ids)
        return held_by(conn, ctx.owner, ids)

    held = ctx.db.run(renew_and_read)
    return [job for job in jobs if job.id in held]


def give_back(ctx: Context, ids: Sequence[int]) -> None:
    """Release the claims on ``ids`` so that a later cycle takes them again."""
    if ids:
        ctx.db.run(lambda conn: release(conn, Layer.CE, ctx.owner, list(ids)))


def jittered(delay: float) -> float:
    """``delay`` seconds, ± :data:`JITTER`, so that jobs checked together spread out."""
    return delay * random.uniform(1 - JITTER, 1 + JITTER)
