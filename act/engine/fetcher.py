"""The CE fetcher (``ce_fetcher``): downloads what ended CE jobs left behind.

Each cycle it claims ``finished`` and ``failed`` CE jobs and asks their back end to fetch the
outputs (for a failed job: what there is, plus the CE's diagnostics) into the job's own directory
``<engine.fetch.dir or <root>/ce-jobs>/<ce>/<ce_jobs.id>``, emptied first and recorded in
``output_dir``. Then:

* fetched within the caps (``engine.fetch.max_bytes``, ``max_files``, counted on disk, not taken
  from the back end's word): ``finished`` → ``done``, ``failed`` → ``donefailed`` with the
  diagnostics added to ``error_text``;
* the CE does not know the job any more: the same moves, with the note "outputs lost at the CE";
* more than the caps allow: the files are removed and the job moves on as ``donefailed``, with
  a note saying which cap it exceeded (fetching again would only exceed it again);
* a fetch error (a full disk where the outputs go among them: ENOSPC or EDQUOT, from the back
  end or from making the job's directory), or a CE that does not answer: the job stays and is
  fetched again in a later cycle; the error is logged with ``panda_id=… ce=…`` and its cause,
  one line per job and try (a traceback only for an error that is not the system's).
"""

from __future__ import annotations

import os
import shutil
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from act.common.daemon import DaemonSpec
from act.common.logs import job_log
from act.common.states import C_TO_FETCH, Actor, CEJobState, Layer
from act.common.transitions import transition
from act.engine.backend import CE, Backend, CEUnavailable, Fetched
from act.engine.config import Context
from act.engine.queries import ToFetch
from act.engine.runtime import pool
from act.engine.work import by_ce, claim_jobs, give_back, keep, resolve_ce

FETCHED = C_TO_FETCH
LOST_NOTE = "outputs lost at the CE"
#: ``error_text`` is cut to this many characters.
ERROR_LEN = 16000


def base_dir(ctx: Context) -> Path:
    """Where the per-job directories are made."""
    configured = ctx.settings.engine.fetch.dir
    return Path(configured) if configured else Path(ctx.settings.root) / "ce-jobs"


def job_dir(base: Path, ce: str, job_id: int) -> Path:
    """``base/<ce>/<job_id>``; refuses a CE name that would leave ``base``."""
    if not ce or ce in (".", "..") or "/" in ce or "\0" in ce:
        raise ValueError(f"CE name {ce!r} cannot name a directory")
    return base / ce / str(int(job_id))


def measure(root: Path) -> tuple[int, int]:
    """(files, bytes) under ``root``, symbolic links counted as files and never followed."""
    files = size = 0
    for here, dirs, names in os.walk(root, followlinks=False):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(here, d))]:
            files += 1
            size += os.lstat(os.path.join(here, name)).st_size
    return files, size


def run_once(ctx: Context) -> bool:
    rows = claim_jobs(ctx, FETCHED, ToFetch)
    engines = pool(ctx)
    base = base_dir(ctx)
    for name, jobs in ctx.until_stopped(list(by_ce(rows).items()), "CE(s) of claimed jobs"):
        found = resolve_ce(ctx, engines, name)
        if found is None:
            give_back(ctx, [job.id for job in jobs])
            continue
        ce, backend = found
        for index, job in enumerate(ctx.until_stopped(jobs)):
            if not keep(ctx, [job]):
                continue  # its claim expired and another instance has it
            try:
                _fetch_one(ctx, backend, ce, job, base)
            except CEUnavailable as error:
                rest = jobs[index:]
                ctx.log.warning(
                    "ce=%s: unavailable (%s); %d job(s) fetched later",
                    ce.name,
                    error.cause,
                    len(rest),
                )
                give_back(ctx, [j.id for j in rest])
                break
    return len(rows) >= ctx.daemon.batch


def _fetch_one(ctx: Context, backend: Backend, ce: CE, job: ToFetch, base: Path) -> None:
    log = job_log(ctx.log, panda_id=job.panda_id, ce=ce.name)
    failed = job.state == CEJobState.FAILED
    dest = job_dir(base, ce.name, job.id)
    if job.ce_job_id is None:
        result = Fetched(ce_job_id="", gone=True)
    else:
        try:
            if dest.exists():
                shutil.rmtree(dest)  # a partial earlier fetch
            dest.mkdir(parents=True, mode=0o750)
            result = backend.fetch(ce, job.ce_job_id, dest, failed=failed)
        except CEUnavailable:
            raise
        except OSError as error:  # e.g. a full disk (ENOSPC) where the outputs go
            log.warning("fetch failed, retried later: %s", error)
            give_back(ctx, [job.id])
            return
        except Exception as error:  # a bug in the back end must not stop the other jobs
            log.exception("fetch failed: %s", error)
            give_back(ctx, [job.id])
            return
    if result.error and not result.gone:
        log.warning("fetch failed, retried later: %s", result.error)
        give_back(ctx, [job.id])
        return
    notes: list[str] = []
    target = CEJobState.DONEFAILED if failed else CEJobState.DONE
    if result.gone:
        notes.append(LOST_NOTE)
        if dest.exists():
            shutil.rmtree(dest)
    elif dest.exists():
        over = _over_caps(ctx, dest)
        if over:
            shutil.rmtree(dest)
            notes.append(f"outputs not kept: {over}")
            target = CEJobState.DONEFAILED
    if failed and result.diagnostics:
        # The CE's errors the poller already stored (e.g. the local CE's state file) are said
        # once: only the diagnostics' other lines are added.
        said = job.error_text or ""
        fresh = [line for line in result.diagnostics.splitlines() if line and line not in said]
        if fresh:
            notes.append("\n".join(fresh))
    values: dict[str, Any] = {"output_dir": str(dest) if dest.exists() else None}
    if notes:
        text = "\n".join([job.error_text, *notes] if job.error_text else notes)
        values["error_text"] = text[:ERROR_LEN]
    reason = "; ".join(notes[:1]) or "fetched"
    moved = ctx.db.run(
        partial(_move, ctx=ctx, job=job, target=target, reason=reason, values=values)
    )
    if moved:
        log.info("%s -> %s (%s)", job.state, target, reason)


def _over_caps(ctx: Context, dest: Path) -> str | None:
    caps = ctx.settings.engine.fetch
    files, size = measure(dest)
    if files > caps.max_files:
        return f"{files} files, more than engine.fetch.max_files ({caps.max_files})"
    if size > caps.max_bytes:
        return f"{size} bytes, more than engine.fetch.max_bytes ({caps.max_bytes})"
    return None


def _move(
    conn: Connection,
    *,
    ctx: Context,
    job: ToFetch,
    target: str,
    reason: str,
    values: dict[str, Any],
) -> list[int]:
    return transition(
        conn,
        Layer.CE,
        [job.id],
        job.state,
        target,
        actor=Actor.CE_FETCHER,
        reason=reason,
        owner=ctx.owner,
        values=values,
    )


DAEMON = DaemonSpec(run_once=run_once, doc=__doc__ or "")
