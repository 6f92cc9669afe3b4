"""The PanDA job fetcher (daemon ``panda_fetcher``): takes jobs from PanDA for the served queues.

Each cycle, for every served queue that is online (CRIC/config) and not disabled by the operator
(``queues.enabled``), it asks ``acquire_jobs`` for

    min(jobs_per_cycle, max_queued - jobs received/queued, max_jobs - active jobs)

jobs (the operator's ``queues.max_queued``/``max_jobs`` override the config's). "Active" is every
job not yet over: all but finished/failed/cancelled (only a report left) and the final states.

**Crash safety.** Once PanDA has answered, it thinks the jobs are ours: losing them would leave
them "sent" at PanDA until its own timeout. So the reply is written to the spool
(``<root>/spool/panda/``, write + fsync + rename, see :mod:`act.atlas.spool`) *before it is
parsed*; the jobs are inserted from the spool file (spec verbatim, state ``received``, report due
now) and the file is deleted only after the commit. Every cycle, the first one included, starts by
ingesting leftover spool files; that is idempotent (``panda_id`` is unique, a job already stored
is skipped), so a crash at any point after the spool write loses nothing and stores nothing
twice. A malformed reply, or a job without a valid PandaID, is logged as one error naming the
queue, the call and an excerpt, and kept in ``spool/panda/rejected/`` (never silently dropped).

A fetcher killed while it wrote the spool file (between the last byte received and the rename,
e.g. in a long fsync) leaves a temporary file: the next cycle makes a complete one the spool file
it should have become, and puts an incomplete one aside in ``rejected/``
(:func:`act.atlas.spool.recover`). What remains uncovered: a reply lost before it reached the
spool (in the socket, or a machine crash before the fsync). The client never repeats
``acquire_jobs`` when PanDA may have acted, so such jobs are not taken twice; they stay "sent" at
PanDA, which re-brokers them after its own timeout. Run one instance of this daemon per spool
directory.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Connection

from act.atlas import spool
from act.atlas.config import Context
from act.atlas.panda_errors import PandaError, PandaReplyError
from act.atlas.panda_id import spec_int
from act.atlas.queues import Queue
from act.atlas.runtime import panda_client
from act.atlas.served import served_queues
from act.common.daemon import DaemonSpec
from act.common.faults import maybe_crash
from act.common.logs import job_log
from act.common.schema import panda_jobs
from act.common.schema import queues as queues_table
from act.common.section import Section
from act.common.states import P_OVER, P_WAITING, Actor, Layer, PandaJobState, in_table_order
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs

#: PanDA states of a job not yet running at a CE (the max_queued limit).
NOT_RUNNING = P_WAITING
#: PanDA states of a job that is over, or has only its report left (not counted by max_jobs).
OVER = P_OVER
CRASH_POINT = "panda_fetcher:after-spool"


class FetcherOptions(Section):
    node: str | None = Field(None, min_length=1)  # sent as ``node``; default: the host name


def run_once(ctx: Context) -> bool:
    directory = spool.spool_dir(ctx.settings.root)
    queues = served_queues(ctx)
    for path in ctx.until_stopped(spool.pending(directory), "spooled PanDA replies"):
        ingest(ctx, path, queues)
    wanted = ctx.db.run(lambda conn: jobs_wanted(conn, queues))
    node = ctx.options.node or socket.gethostname()
    for name, count in ctx.until_stopped(list(wanted.items()), "queue(s) to ask PanDA for jobs"):
        if count > 0:
            fetch_queue(ctx, queues[name], count, node=node, directory=directory)
    return False


def jobs_wanted(conn: Connection, queues: Mapping[str, Queue]) -> dict[str, int]:
    """How many jobs to ask for, per served queue (0 for offline or disabled ones)."""
    counts: dict[tuple[str, str], int] = {}
    if queues:
        rows = conn.execute(
            sa.select(panda_jobs.c.queue, panda_jobs.c.state, sa.func.count())
            .where(
                panda_jobs.c.queue.in_(list(queues)),
                panda_jobs.c.state.not_in(in_table_order(Layer.PANDA, OVER)),
            )
            .group_by(panda_jobs.c.queue, panda_jobs.c.state)
        ).all()
        counts = {(row[0], row[1]): int(row[2]) for row in rows}
    overrides = {
        row.name: row
        for row in conn.execute(
            sa.select(
                queues_table.c.name,
                queues_table.c.enabled,
                queues_table.c.max_jobs,
                queues_table.c.max_queued,
            ).where(queues_table.c.name.in_(list(queues)))
        )
    }
    wanted = {}
    for name, queue in queues.items():
        row = overrides.get(name)
        if not queue.online or (row is not None and not row.enabled):
            wanted[name] = 0
            continue
        max_queued = row.max_queued if row is not None and row.max_queued is not None else None
        max_jobs = row.max_jobs if row is not None and row.max_jobs is not None else None
        waiting = sum(counts.get((name, state), 0) for state in NOT_RUNNING)
        active = sum(n for (q, _), n in counts.items() if q == name)
        wanted[name] = max(
            0,
            min(
                queue.jobs_per_cycle,
                (queue.max_queued if max_queued is None else max_queued) - waiting,
                (queue.max_jobs if max_jobs is None else max_jobs) - active,
            ),
        )
    return wanted


def fetch_queue(ctx: Context, queue: Queue, count: int, *, node: str, directory: Path) -> None:
    """Ask PanDA for ``count`` jobs of ``queue``; store what it hands out (through the spool)."""
    client = panda_client(ctx)
    api = ctx.settings.panda.api
    spooled: list[Path] = []

    def keep(text: str) -> None:
        spooled.append(
            spool.write_reply(
                directory, queue=queue.name, api=api, label=queue.prod_source_label, reply=text
            )
        )
        maybe_crash(CRASH_POINT)

    try:
        client.acquire_jobs(
            queue=queue.name,
            prod_source_label=queue.prod_source_label,
            n_jobs=count,
            node=node,
            on_reply=keep,
        )
    except PandaReplyError as error:
        if not spooled:  # otherwise reading the spooled reply says what was wrong, job by job
            ctx.log.error("queue %s: %s", queue.name, error)
    except PandaError as error:
        ctx.log.error("queue %s: acquire_jobs (%d jobs): %s", queue.name, count, error)
    for path in spooled:
        ingest(ctx, path, {queue.name: queue})


def ingest(ctx: Context, path: Path, queues: Mapping[str, Queue]) -> list[int]:
    """Store the jobs of one spooled reply, then delete it; returns the PandaIDs stored now."""
    reply = spool.read_reply(path)
    if reply.error is not None:
        ctx.log.error(
            "queue %s: %s: malformed reply, kept in %s/rejected: %s",
            reply.queue,
            reply.call,
            path.parent,
            reply.error,
        )
        spool.remove(path)
        return []
    for reason, _raw in reply.rejected:
        ctx.log.error(
            "queue %s: %s: job rejected, kept in %s/rejected: %s",
            reply.queue,
            reply.call,
            path.parent,
            reason,
        )
    queue = queues.get(reply.queue)
    now = utcnow()
    rows = [_row(job, reply, queue, now) for job in reply.jobs]
    stored: list[int] = ctx.db.run(lambda conn: insert_new(conn, rows))
    spool.remove(path)
    for row in rows:
        log = job_log(ctx.log, panda_id=row["panda_id"])
        if row["panda_id"] in stored:
            log.info("received from PanDA for queue %s", reply.queue)
        else:
            log.info("already stored: skipped (spool %s)", path.name)
    return stored


def insert_new(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> list[int]:
    """Insert the rows whose ``panda_id`` is not stored yet; their PandaIDs."""
    if not rows:
        return []
    ids = [row["panda_id"] for row in rows]
    known = set(
        conn.execute(sa.select(panda_jobs.c.panda_id).where(panda_jobs.c.panda_id.in_(ids)))
        .scalars()
        .all()
    )
    fresh, seen = [], set(known)
    for row in rows:
        if row["panda_id"] not in seen:
            seen.add(row["panda_id"])
            fresh.append(row)
    create_jobs(
        conn,
        Layer.PANDA,
        fresh,
        PandaJobState.RECEIVED,
        actor=Actor.PANDA_FETCHER,
        reason="fetched",
    )
    return [row["panda_id"] for row in fresh]


def log_url(queue: Queue | None, panda_id: int, now: datetime) -> str | None:
    """GTAG: ``<log_url_prefix>/<date>/<queue>/<panda_id>.out`` (aCT's layout), if configured."""
    if queue is None or not queue.log_url_prefix:
        return None
    prefix = queue.log_url_prefix.rstrip("/")
    return f"{prefix}/{now:%Y-%m-%d}/{queue.name}/{panda_id}.out"


def _row(
    job: spool.SpooledJob, reply: spool.SpooledReply, queue: Queue | None, now: datetime
) -> dict[str, Any]:
    label = job.spec.get("prodSourceLabel")
    if not isinstance(label, str) or not label.isprintable():
        label = None  # PanDA's own value is text; anything else (a NUL: PostgreSQL refuses it)
    return {
        "panda_id": job.panda_id,
        "queue": reply.queue,
        "attempt": spec_int(job.spec.get("attemptNr")) or 0,
        "prod_source_label": label[:32] if label else reply.prod_source_label,
        "spec": job.raw,
        "spec_format": job.spec_format,
        "heartbeat_less": bool(queue and queue.heartbeat_less),
        "log_url": log_url(queue, job.panda_id, now),
        "next_report_at": now,
    }


DAEMON = DaemonSpec(run_once=run_once, options=FetcherOptions, doc=__doc__ or "")
