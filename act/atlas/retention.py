"""The retention daemon: final PanDA jobs move to the archive, and what they leave is removed.

Each cycle is one batch of at most the daemon's ``batch`` jobs, in ONE transaction
(:func:`archive_batch`): PanDA jobs that

* are final (:data:`~act.common.states.P_FINAL`: ``done``, ``donefailed``, ``donecancelled``,
  which the propagator sets only once PanDA accepted the final report or wanted none; a report
  not yet sent, or sent with its answer lost (``final_sent_at``, still ``finished``/``failed``/
  ``cancelled``), is never final), with no report due (``next_report_at`` NULL);
* became final longer ago than ``options.final_after`` seconds (``state_changed_at``);
* are claimed by no one (no live lease), and whose CE jobs are all cleaned (the CE has none
  left to clean)

get one ``archived_jobs`` row each (:class:`act.common.schema.archived_jobs`), and their
``transitions`` rows (both layers), their ``ce_jobs`` and their ``panda_jobs`` rows are deleted.
A SIGKILL at any point loses nothing and archives nothing twice: before the commit nothing
happened; after it, the job is archived and gone, and ``archived_jobs.panda_id`` is unique.

After the commit, the jobs' directories under the state root go: the translator's
``<root>/jobs/<panda_id>`` and each CE job's ``output_dir`` if it lies under the root (the
cleaner has normally removed it already), without following any symbolic link
(:func:`remove_below`). A kill between the commit and the removal leaves a directory behind: the
first cycle of each process, and one a day after, removes the ``<root>/jobs/<panda_id>``
directories of archived jobs that no longer exist (:func:`sweep_orphans`).

Then ``operator_actions`` rows older than ``options.operator_actions_after`` seconds are deleted
(at most ``batch`` per cycle, by primary key), and on SQLite a cycle that deleted rows ends with
``PRAGMA wal_checkpoint(TRUNCATE)`` so the WAL file does not grow. The cycle returns "more
work" while a batch was full, so a backlog is worked through batch after batch, each a short
transaction. ``actctl db prune [--dry-run]`` runs (or counts) the same pass (:func:`plan`).
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Connection

from act.atlas.config import Context
from act.common import safe_paths
from act.common.config import Section
from act.common.daemon import DaemonSpec
from act.common.db import Database
from act.common.faults import maybe_crash
from act.common.rows import fetch, row_type, select_of
from act.common.schema import archived_jobs, ce_jobs, operator_actions, panda_jobs, transitions
from act.common.states import C_GONE, P_FINAL, Layer
from act.common.timeutil import utcnow

#: Seconds between two sweeps for directories left by a kill (the first cycle sweeps too).
SWEEP_EVERY = 86400.0
#: Names per query when the sweep asks which jobs exist.
CHUNK = 500


class RetentionOptions(Section):
    #: Final PanDA jobs are archived this many seconds after they became final (7 days).
    final_after: float = Field(7 * 86400.0, gt=0)
    #: operator_actions rows older than this many seconds are deleted (180 days).
    operator_actions_after: float = Field(180 * 86400.0, gt=0)


@row_type(panda_jobs)
@dataclass(frozen=True)
class ToArchive:
    """A PanDA job retention archives: what its archive row keeps."""

    id: int
    panda_id: int
    queue: str
    state: str
    panda_status: str | None
    error_code: int | None
    error_text: str | None
    attempt: int
    log_url: str | None
    created_at: datetime
    state_changed_at: datetime
    panda_reported_at: datetime | None


@row_type(ce_jobs)
@dataclass(frozen=True)
class ArchivedCEJob:
    """A CE job of an archived PanDA job: its CE, end and files."""

    id: int
    panda_job_id: int | None
    ce_name: str | None
    submissions: int
    ended_at: datetime | None
    output_dir: str | None


@dataclass
class Archived:
    """What one batch archived: the PanDA ids, and the directories to remove after the commit."""

    panda_ids: list[int] = field(default_factory=list)
    ce_jobs: int = 0
    transitions: int = 0
    output_dirs: list[str] = field(default_factory=list)


def archivable(now: datetime, final_after: float) -> sa.ColumnElement[bool]:
    """The PanDA jobs retention may archive now (see the module docstring)."""
    t, c = panda_jobs, ce_jobs
    not_cleaned = sa.exists().where(c.c.panda_job_id == t.c.id, c.c.state.not_in(list(C_GONE)))
    return sa.and_(
        t.c.state.in_(list(P_FINAL)),
        t.c.next_report_at.is_(None),
        t.c.state_changed_at < now - timedelta(seconds=final_after),
        sa.or_(t.c.lease_owner.is_(None), t.c.lease_expires < now),
        ~not_cleaned,
    )


def archive_row(job: ToArchive, ces: list[ArchivedCEJob], now: datetime) -> dict[str, Any]:
    names: list[str] = []
    for ce in sorted(ces, key=lambda ce: ce.id):
        if ce.ce_name and ce.ce_name not in names:
            names.append(ce.ce_name)
    ends = [ce.ended_at for ce in ces if ce.ended_at is not None]
    return {
        "panda_id": job.panda_id,
        "queue": job.queue,
        "ce_names": " ".join(names) or None,
        "state": job.state,
        "panda_status": job.panda_status,
        "error_code": job.error_code,
        "error_text": job.error_text,
        "attempt": job.attempt,
        "ce_submissions": sum(ce.submissions for ce in ces),
        "log_url": job.log_url,
        "created_at": job.created_at,
        "ended_at": max(ends) if ends else None,
        "reported_at": job.panda_reported_at,
        "state_changed_at": job.state_changed_at,
        "archived_at": now,
    }


def archive_batch(conn: Connection, *, now: datetime, final_after: float, limit: int) -> Archived:
    """Archive at most ``limit`` jobs in the caller's transaction (the whole batch or nothing)."""
    t = panda_jobs
    condition = archivable(now, final_after)
    stmt = select_of(ToArchive, t).where(condition).order_by(t.c.id).limit(limit)
    jobs = fetch(conn, ToArchive, stmt.with_for_update(skip_locked=True))
    done = Archived()
    if not jobs:
        return done
    ids = [job.id for job in jobs]
    ces = fetch(
        conn,
        ArchivedCEJob,
        select_of(ArchivedCEJob, ce_jobs).where(ce_jobs.c.panda_job_id.in_(ids)),
    )
    by_job: dict[int, list[ArchivedCEJob]] = {}
    for ce in ces:
        assert ce.panda_job_id is not None
        by_job.setdefault(ce.panda_job_id, []).append(ce)
    conn.execute(
        sa.insert(archived_jobs), [archive_row(job, by_job.get(job.id, []), now) for job in jobs]
    )
    ce_ids = [ce.id for ce in ces]
    h = transitions
    for layer, job_ids in ((Layer.CE, ce_ids), (Layer.PANDA, ids)):
        if job_ids:
            done.transitions += conn.execute(
                sa.delete(h).where(h.c.layer == layer.value, h.c.job_id.in_(job_ids))
            ).rowcount
    if ce_ids:
        done.ce_jobs = conn.execute(sa.delete(ce_jobs).where(ce_jobs.c.id.in_(ce_ids))).rowcount
    deleted = conn.execute(sa.delete(t).where(t.c.id.in_(ids), condition)).rowcount
    if deleted != len(ids):  # one changed since it was read: roll the batch back, retry later
        raise RuntimeError(f"{len(ids) - deleted} job(s) changed while being archived")
    done.panda_ids = [job.panda_id for job in jobs]
    done.output_dirs = [ce.output_dir for ce in ces if ce.output_dir]
    maybe_crash("retention:before-commit")
    return done


def old_actions(now: datetime, after: float) -> sa.ColumnElement[bool]:
    return operator_actions.c.at < now - timedelta(seconds=after)


def prune_actions(conn: Connection, *, now: datetime, after: float, limit: int) -> int:
    """Delete at most ``limit`` operator actions older than ``after`` seconds, by id."""
    a = operator_actions
    ids = list(
        conn.execute(sa.select(a.c.id).where(old_actions(now, after)).order_by(a.c.id).limit(limit))
        .scalars()
        .all()
    )
    if not ids:
        return 0
    return int(conn.execute(sa.delete(a).where(a.c.id.in_(ids))).rowcount)


@dataclass(frozen=True)
class Plan:
    """What a retention pass would archive and delete now, per table (``actctl db prune``)."""

    panda_jobs: int
    ce_jobs: int
    transitions: int
    operator_actions: int

    def counts(self) -> dict[str, int]:
        return {
            "archived_jobs (added)": self.panda_jobs,
            "panda_jobs": self.panda_jobs,
            "ce_jobs": self.ce_jobs,
            "transitions": self.transitions,
            "operator_actions": self.operator_actions,
        }


def plan(conn: Connection, options: RetentionOptions, now: datetime) -> Plan:
    """Count, without changing anything, what retention would archive and delete now."""
    t, c, h = panda_jobs, ce_jobs, transitions
    jobs = sa.select(t.c.id).where(archivable(now, options.final_after))
    ces = sa.select(c.c.id).where(c.c.panda_job_id.in_(jobs))

    def count(stmt: sa.Select[Any]) -> int:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery())).scalar_one()
        )

    history = sa.select(h.c.id).where(
        sa.or_(
            sa.and_(h.c.layer == Layer.PANDA.value, h.c.job_id.in_(jobs)),
            sa.and_(h.c.layer == Layer.CE.value, h.c.job_id.in_(ces)),
        )
    )
    actions = sa.select(operator_actions.c.id).where(
        old_actions(now, options.operator_actions_after)
    )
    return Plan(count(jobs), count(ces), count(history), count(actions))


# -- directories -----------------------------------------------------------------------------------


def remove_below(root: Path, path: Path) -> bool:
    """Remove ``path`` (a directory or file) if it lies under ``root``, never following a symbolic
    link below ``root`` (on the way or inside; ``root`` itself is the operator's and may be one);
    False if it is not under ``root`` or is not there; UnsafePath for a link on the way."""
    try:
        relative = path.relative_to(root)
    except ValueError:
        return False
    parts = relative.parts
    if not parts or ".." in parts:
        return False
    try:
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        name = str(Path(*parts[:-1])) if len(parts) > 1 else None
        parent = safe_paths.open_dir(top, name)
    except FileNotFoundError:
        return False
    finally:
        os.close(top)
    try:
        try:
            mode = os.lstat(parts[-1], dir_fd=parent).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(mode):
            rmtree_at(parent, parts[-1])
        else:
            os.unlink(parts[-1], dir_fd=parent)
        return True
    finally:
        os.close(parent)


def rmtree_at(parent: int, name: str) -> None:
    """Remove directory ``name`` below the open directory ``parent`` and all it holds, through
    directory descriptors: a symbolic link inside is unlinked, never followed (Python 3.10's
    :func:`shutil.rmtree` takes no ``dir_fd``)."""
    fd = os.open(name, safe_paths.DIR_FLAGS, dir_fd=parent)
    try:
        with os.scandir(fd) as entries:
            children = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for child, is_dir in children:
            if is_dir:
                rmtree_at(fd, child)
            else:
                os.unlink(child, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)


def jobs_root(root: str) -> Path:
    """Where the translator keeps each PanDA job's inputs (``<root>/jobs/<panda_id>``)."""
    return Path(root) / "jobs"


def remove_job_dirs(ctx: Context, done: Archived) -> int:
    root = Path(ctx.settings.root)
    removed = 0
    for panda_id in done.panda_ids:
        removed += _remove(ctx, root, jobs_root(ctx.settings.root) / str(panda_id))
    for output_dir in done.output_dirs:
        removed += _remove(ctx, root, Path(output_dir))
    return removed


def _remove(ctx: Context, root: Path, path: Path) -> int:
    try:
        return int(remove_below(root, path))
    except (OSError, safe_paths.UnsafePath) as error:
        ctx.log.error("cannot remove %s: %s", path, error)
        return 0


def chunks(items: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def sweep_orphans(ctx: Context) -> int:
    """Remove ``<root>/jobs/<panda_id>`` directories of archived jobs that no longer exist."""
    base = jobs_root(ctx.settings.root)
    try:
        names = [int(name) for name in os.listdir(base) if name.isdigit()]
    except FileNotFoundError:
        return 0
    orphans: list[int] = []
    for chunk in chunks(names):

        def gone(conn: Connection, chunk: list[int] = chunk) -> list[int]:
            a, t = archived_jobs, panda_jobs
            live = set(
                conn.execute(sa.select(t.c.panda_id).where(t.c.panda_id.in_(chunk))).scalars()
            )
            archived = conn.execute(sa.select(a.c.panda_id).where(a.c.panda_id.in_(chunk)))
            return [panda_id for panda_id in archived.scalars() if panda_id not in live]

        with ctx.db.read() as conn:
            orphans.extend(gone(conn))
    removed = 0
    for panda_id in orphans:
        removed += _remove(ctx, Path(ctx.settings.root), base / str(panda_id))
    if removed:
        ctx.log.info("removed %d directory(ies) of archived jobs left by an earlier run", removed)
    return removed


def checkpoint(db: Database) -> None:
    """SQLite: fold the WAL back into the database file and truncate it (best effort: a reader
    holding an old snapshot makes it partial, and the next cycle tries again)."""
    if db.engine.dialect.name != "sqlite":
        return
    with db.engine.connect() as conn:
        dbapi = conn.connection.driver_connection
        assert dbapi is not None
        dbapi.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


# -- the daemon ------------------------------------------------------------------------------------


@dataclass
class PassResult:
    archived: Archived
    actions: int
    dirs: int


def run_pass(ctx: Context, limit: int) -> PassResult:
    """One batch of archiving, its directories, one batch of old operator actions, checkpoint."""
    opts: RetentionOptions = ctx.options
    now = utcnow()
    done = ctx.db.run(
        lambda conn: archive_batch(conn, now=now, final_after=opts.final_after, limit=limit)
    )
    maybe_crash("retention:after-commit")
    dirs = remove_job_dirs(ctx, done)
    actions = ctx.db.run(
        lambda conn: prune_actions(conn, now=now, after=opts.operator_actions_after, limit=limit)
    )
    if done.panda_ids or actions:
        checkpoint(ctx.db)
    return PassResult(done, actions, dirs)


def run_once(ctx: Context) -> bool:
    last = ctx.cache.get("retention_swept_at")
    if last is None or time.monotonic() - last >= SWEEP_EVERY:
        sweep_orphans(ctx)
        ctx.cache["retention_swept_at"] = time.monotonic()
    result = run_pass(ctx, ctx.daemon.batch)
    done = result.archived
    if done.panda_ids:
        ctx.log.info(
            "archived %d job(s) (panda_id %d..%d): %d CE job(s), %d history row(s), "
            "%d directory(ies) removed",
            len(done.panda_ids),
            min(done.panda_ids),
            max(done.panda_ids),
            done.ce_jobs,
            done.transitions,
            result.dirs,
        )
    if result.actions:
        ctx.log.info("deleted %d old operator action(s)", result.actions)
    batch = ctx.daemon.batch
    return len(done.panda_ids) >= batch or result.actions >= batch


DAEMON = DaemonSpec(run_once=run_once, options=RetentionOptions, doc=__doc__ or "")
