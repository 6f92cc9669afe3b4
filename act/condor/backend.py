"""The HTCondor back end: :class:`act.engine.backend.Backend` over a schedd (Condor-G).

Per CE (``engine.ces.<name>`` with ``backend: condor``): jobs go through a schedd (the local one,
or ``options.schedd`` located through ``options.collector``) into the grid universe, to the
HTCondor-CE or ARC CE their description's ``grid_resource`` names (made from ``url`` when the
description has none: ``host[:port]`` → ``condor host host:port``, ``https://…`` → ``arc …``).
``credential`` becomes ``x509userproxy`` and ``options.token_file`` ``scitokens_file`` when the
description names none. ``options`` takes the keys of :class:`CondorOptions`.

* **Submit**: each description is parsed by the real ``htcondor2.Submit`` and gets
  ``+ActToken`` (the request's token), ``+ActCE`` and its own ``initialdir`` under
  ``options.iwd_dir`` (``<root>/condor-iwd``)/``<ce>/<token>``, where the schedd brings the
  transferred outputs back. A batch is one ``Schedd.submit`` call (one transaction, one cluster)
  per set of keys (see :mod:`act.condor.submission`); ce_job_id is ``"<cluster>.<proc>"``.
* **Status**: ``query`` of the queue with a projection, then ``history`` (``match`` bounded by
  the jobs still missing) for the jobs gone from it; JobStatus is mapped by
  :func:`act.condor.ads.job_status`. A held job is FAILED, restartable, with the error
  ``held: <HoldReason> (code N, subcode M)`` so that ``engine.resubmit`` decides (``restart`` =
  release, ``resubmit`` = remove and submit again).
* **find**: the queue, then history, by ``ActToken``: a submitter that died between the schedd's
  reply and its commit never submits twice.
* **fetch** copies the regular files of the job's ``initialdir`` into ``dest`` (symlinks and
  special files skipped, never followed; caps of ``engine.fetch``); the output, error and user
  log files stay where the description put them (the web area).
* **kill** removes jobs from the queue, **restart** releases held ones, **clean** removes a job
  still in the queue and deletes its ``initialdir``.

A schedd that cannot be located or answers with an error for the whole call raises
:class:`CEUnavailable`; per-job results are returned.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from act.common.logs import job_log
from act.condor import ads as job_ads
from act.condor import schedd as schedd_access
from act.condor.options import CondorOptions
from act.condor.outputs import FetchError, copy_tree, remove_tree
from act.condor.schedd import ScheddLike, ScheddUnavailable
from act.condor.submission import (
    TOKEN,
    Batch,
    DescriptionError,
    combine,
    grid_resource_for,
    prepare,
)
from act.engine.backend import (
    CE,
    BackendFactory,
    CEUnavailable,
    Fetched,
    JobStatus,
    Limits,
    Outcome,
    SubmitRequest,
    Submitted,
)

if TYPE_CHECKING:
    from act.common.db import Database
    from act.engine.config import EngineConfig


#: Words of the bindings' errors when the schedd could not be reached at all: nothing was sent.
NOT_CONNECTED = ("Failed to connect to schedd", "Unable to locate", "cannot locate")


class CondorBackend:
    """One per daemon process; keeps one schedd handle per CE."""

    def __init__(self, *, settings: EngineConfig, db: Database | None, log: logging.Logger) -> None:
        self.settings = settings
        self.db = db
        self.log = log
        self._schedds: dict[str, tuple[CondorOptions, ScheddLike]] = {}
        self.clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)

    # ----------------------------------------------------------------- plumbing ---
    def options(self, ce: CE) -> CondorOptions:
        try:
            return CondorOptions.model_validate(ce.settings.options)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise ValueError(f"engine.ces.{ce.name}.options: {problems}") from None

    def schedd(self, ce: CE) -> ScheddLike:
        opts = self.options(ce)
        found = self._schedds.get(ce.name)
        if found is not None and found[0] == opts:
            return found[1]
        try:
            handle = schedd_access.open_schedd(opts)
        except ScheddUnavailable as error:
            raise CEUnavailable(ce.name, str(error), maybe_sent=False) from None
        self._schedds[ce.name] = (opts, handle)
        return handle

    def iwd_base(self, ce: CE) -> Path:
        configured = self.options(ce).iwd_dir
        base = Path(configured) if configured else Path(self.settings.root) / "condor-iwd"
        if not ce.name or ce.name in (".", "..") or "/" in ce.name or "\0" in ce.name:
            raise ValueError(f"CE name {ce.name!r} cannot name a directory")
        return base / ce.name

    def limits(self, ce: CE) -> Limits:
        opts = self.options(ce)
        return Limits(
            submit_batch=opts.submit_batch,
            status_batch=opts.status_batch,
            refresh_seconds=opts.refresh_seconds,
            can_restart=opts.can_restart,
        )

    def close(self) -> None:
        self._schedds.clear()

    def _call(self, ce: CE, what: str, call: Callable[[], Any]) -> Any:
        """A schedd call; any error of the bindings is the schedd's as a whole."""
        try:
            return call()
        except CEUnavailable:
            raise
        except Exception as error:  # HTCondorException, HTCondorIOError, OSError, ...
            self._schedds.pop(ce.name, None)  # reconnect next time
            text = str(error)
            raise CEUnavailable(
                ce.name,
                f"schedd {what} failed: {text}",
                maybe_sent=not any(marker in text for marker in NOT_CONNECTED),
            ) from None

    # -------------------------------------------------------------------- submit ---
    def _credential(self, ce: CE) -> str | None:
        proxy = ce.settings.credential
        if not proxy:
            return None
        try:
            mode = os.stat(proxy).st_mode
        except OSError as error:
            raise CEUnavailable(ce.name, f"credential: {error}", maybe_sent=False) from None
        if mode & 0o077:
            raise CEUnavailable(
                ce.name,
                f"credential {proxy} is readable by group/others: chmod 600 it",
                maybe_sent=False,
            )
        return proxy

    def submit(self, ce: CE, jobs: Sequence[SubmitRequest]) -> list[Submitted]:
        if not jobs:
            return []
        opts = self.options(ce)
        proxy = self._credential(ce)
        base = self.iwd_base(ce)
        default_resource = grid_resource_for(ce.settings.url) if ce.settings.url else None
        results: list[Submitted | None] = [None] * len(jobs)
        prepared: list[dict[str, str]] = []
        positions: list[int] = []
        for i, job in enumerate(jobs):
            try:
                keys = prepare(
                    job.description,
                    token=job.token,
                    ce_name=ce.name,
                    iwd=str(base / job.token),
                    default_grid_resource=default_resource,
                    proxy=proxy,
                    token_file=opts.token_file,
                )
            except DescriptionError as error:
                job_log(self.log, panda_id=job.panda_id, ce=ce.name).warning(
                    "description refused: %s", error
                )
                results[i] = Submitted(job.job_id, None, f"bad description: {error}", True)
                continue
            prepared.append(keys)
            positions.append(i)
        schedd = self.schedd(ce)
        try:
            self._submit_batches(
                ce, jobs, prepared=prepared, positions=positions, results=results, schedd=schedd
            )
        except CEUnavailable as error:
            if not any(r is not None and r.ce_job_id for r in results):
                raise
            # an earlier transaction of this call made jobs: the caller must ask for them
            raise error.after_jobs_made() from None
        return [r for r in results if r is not None]

    def _submit_batches(
        self,
        ce: CE,
        jobs: Sequence[SubmitRequest],
        *,
        prepared: list[dict[str, str]],
        positions: list[int],
        results: list[Submitted | None],
        schedd: ScheddLike,
    ) -> None:
        base = self.iwd_base(ce)
        for batch in combine(prepared):
            members = [jobs[positions[k]] for k in batch.indices]
            try:
                for job in members:
                    (base / job.token).mkdir(parents=True, mode=0o750, exist_ok=True)
            except OSError as error:
                raise CEUnavailable(
                    ce.name, f"cannot make the initialdir: {error}", maybe_sent=False
                ) from None
            try:
                result = self._call(ce, "submit", partial(_submit_call, schedd, batch))
            except CEUnavailable as error:
                if len(members) == 1 and _looks_per_job(error.cause):
                    # The schedd answered and refused this job: its transaction made nothing.
                    job = members[0]
                    remove_tree(base / job.token)
                    job_log(self.log, panda_id=job.panda_id, ce=ce.name).warning(
                        "schedd refused the job: %s", error.cause
                    )
                    results[positions[batch.indices[0]]] = Submitted(
                        job.job_id, None, f"schedd refused the job: {error.cause}"
                    )
                    continue
                # Unknown outcome: the initialdirs stay (a job may exist); find() will tell.
                if len(members) == 1 or self._down(ce, members):
                    raise
                self.log.warning(
                    "ce=%s: submission of %d jobs refused as a whole (%s); one by one",
                    ce.name,
                    len(members),
                    error.cause,
                )
                for k, job in zip(batch.indices, members, strict=True):
                    results[positions[k]] = self.submit(ce, [job])[0]
                continue
            cluster, first, count = _submit_result(result)
            for n, (k, job) in enumerate(zip(batch.indices, members, strict=True)):
                log = job_log(self.log, panda_id=job.panda_id, ce=ce.name)
                if n >= count:
                    log.warning("schedd made %d of %d jobs: not this one", count, len(members))
                    results[positions[k]] = Submitted(job.job_id, None, "schedd made no job")
                    continue
                ce_job_id = f"{cluster}.{first + n}"
                log.info("submitted as %s", ce_job_id)
                results[positions[k]] = Submitted(job.job_id, ce_job_id)

    def _down(self, ce: CE, members: Sequence[SubmitRequest]) -> bool:
        """After a failed multi-job submit: is the schedd down (True), or did it refuse the
        batch (False, and none of its jobs exists: checked by token)?"""
        try:
            existing = self.find(ce, [job.token for job in members])
        except CEUnavailable:
            return True
        if existing:  # a failed transaction made jobs: do not guess, let find() reconcile
            raise CEUnavailable(ce.name, f"submit failed but {len(existing)} job(s) exist")
        return False

    # -------------------------------------------------------------------- status ---
    def _ads(
        self, ce: CE, constraint: str, *, history: int = 0, projection: list[str] | None = None
    ) -> list[Any]:
        schedd = self.schedd(ce)
        wanted = projection or job_ads.PROJECTION
        if history:
            return list(
                self._call(
                    ce,
                    "history",
                    lambda: schedd.history(constraint, projection=wanted, match=history),
                )
            )
        return list(self._call(ce, "query", lambda: schedd.query(constraint, projection=wanted)))

    def _lookup(self, ce: CE, ids: Sequence[str]) -> dict[str, Any]:
        """``ce_job_id -> ad`` from the queue, then history, for the ids that parse."""
        found: dict[str, Any] = {}
        size = self.options(ce).status_batch
        valid = [i for i in dict.fromkeys(ids) if job_ads.JOB_ID.fullmatch(i)]
        for start in range(0, len(valid), size):
            batch = valid[start : start + size]
            for ad in self._ads(ce, job_ads.ids_constraint(batch)):
                job_ads.keep(found, ad, batch)
            missing = [i for i in batch if i not in found]
            bound = min(len(missing), self.options(ce).history_match)
            if missing:
                for ad in self._ads(ce, job_ads.ids_constraint(missing), history=bound):
                    job_ads.keep(found, ad, missing)
        return found

    def status(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, JobStatus | None]:
        ads = self._lookup(ce, ce_job_ids)
        opts = self.options(ce)
        out: dict[str, JobStatus | None] = {}
        for job_id in dict.fromkeys(ce_job_ids):
            if not job_ads.JOB_ID.fullmatch(job_id):
                self.log.warning("ce=%s: %r is not a <cluster>.<proc> job id", ce.name, job_id)
                continue
            ad = ads.get(job_id)
            if ad is None:
                out[job_id] = None
                continue
            try:
                out[job_id] = job_ads.job_status(
                    job_id,
                    ad,
                    now=self.clock(),
                    stale=opts.unavailable_after,
                    max_holds=opts.max_holds,
                )
            except ValueError as error:
                self.log.warning("ce=%s: job %s: %s", ce.name, job_id, error)
        return out

    def find(self, ce: CE, tokens: Sequence[str]) -> dict[str, str]:
        wanted = [t for t in dict.fromkeys(tokens) if TOKEN.fullmatch(t)]
        found: dict[str, str] = {}
        size = self.options(ce).status_batch
        projection = ["ClusterId", "ProcId", "ActToken"]
        for start in range(0, len(wanted), size):
            batch = wanted[start : start + size]
            constraint = job_ads.tokens_constraint(batch)
            for ad in self._ads(ce, constraint, projection=projection):
                job_ads.found_token(found, ad, batch)
            missing = [t for t in batch if t not in found]
            if missing:
                bound = min(len(missing), self.options(ce).history_match)
                for ad in self._ads(
                    ce, job_ads.tokens_constraint(missing), history=bound, projection=projection
                ):
                    job_ads.found_token(found, ad, missing)
        return found

    # --------------------------------------------------------------------- fetch ---
    def _iwd(self, ce: CE, job_id: str, ad: Any) -> Path | None:
        """The job's initialdir, only if it is the one this back end made for its token."""
        token = job_ads.text(job_ads.ad_value(ad, "ActToken"))
        iwd = job_ads.text(job_ads.ad_value(ad, "Iwd"))
        if token is None or not TOKEN.fullmatch(token) or iwd is None:
            return None
        mine = self.iwd_base(ce) / token
        if os.path.normpath(iwd) != str(mine):
            self.log.warning("ce=%s: job %s: Iwd %s is not act's own", ce.name, job_id, iwd)
            return None
        return mine

    def fetch(self, ce: CE, ce_job_id: str, dest: Path, *, failed: bool) -> Fetched:
        if not job_ads.JOB_ID.fullmatch(ce_job_id):
            return Fetched(ce_job_id, error=f"{ce_job_id!r} is not a <cluster>.<proc> job id")
        ad = self._lookup(ce, [ce_job_id]).get(ce_job_id)
        if ad is None:
            return Fetched(ce_job_id, gone=True)
        diagnostics = job_ads.diagnostics(ad) if failed else None
        iwd = self._iwd(ce, ce_job_id, ad)
        if iwd is None:
            return Fetched(ce_job_id, diagnostics=diagnostics, error="no initialdir of act's own")
        limits = self.settings.engine.fetch
        try:
            files, size = copy_tree(iwd, dest, limits.max_bytes, limits.max_files)
        except FileNotFoundError:
            return Fetched(ce_job_id, diagnostics=diagnostics, gone=True)
        except (FetchError, OSError) as error:
            return Fetched(ce_job_id, diagnostics=diagnostics, error=str(error))
        return Fetched(ce_job_id, tuple(files), size, diagnostics)

    # ------------------------------------------------------ kill, clean, restart ---
    def _act(self, ce: CE, action: str, ids: list[str], reason: str) -> None:
        import htcondor2

        if not ids:
            return
        schedd = self.schedd(ce)
        kind = getattr(htcondor2.JobAction, action)
        self._call(ce, action.lower(), lambda: schedd.act(kind, ids, reason=reason))

    def _queued(self, ce: CE, ids: Sequence[str]) -> dict[str, int]:
        """``ce_job_id -> JobStatus`` of the jobs still in the queue."""
        out: dict[str, int] = {}
        valid = [i for i in dict.fromkeys(ids) if job_ads.JOB_ID.fullmatch(i)]
        size = self.options(ce).status_batch
        projection = ["ClusterId", "ProcId", "JobStatus"]
        for start in range(0, len(valid), size):
            batch = valid[start : start + size]
            for ad in self._ads(ce, job_ads.ids_constraint(batch), projection=projection):
                job_id = job_ads.job_id_of(ad)
                if job_id in batch:
                    out[job_id] = job_ads.integer(ad.get("JobStatus")) or 0
        return out

    def kill(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        before = self._queued(ce, ce_job_ids)
        self._act(
            ce, "Remove", [i for i, s in before.items() if s != job_ads.REMOVED], "killed by act"
        )
        after = self._queued(ce, list(before))
        out: dict[str, Outcome] = {}
        for job_id in ce_job_ids:
            if job_id not in before:
                out[job_id] = Outcome(job_id, True, gone=True, error="not in the queue")
            elif job_id not in after or after[job_id] == job_ads.REMOVED:
                out[job_id] = Outcome(job_id, True)
            else:
                name = job_ads.STATUS_NAMES.get(after[job_id], str(after[job_id]))
                out[job_id] = Outcome(job_id, False, error=f"still {name} after the remove")
        return out

    def clean(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        before = self._queued(ce, ce_job_ids)
        self._act(
            ce, "Remove", [i for i, s in before.items() if s != job_ads.REMOVED], "cleaned by act"
        )
        after = self._queued(ce, list(before))
        gone = [i for i in ce_job_ids if i not in before]
        ads = self._lookup(
            ce, [i for i in ce_job_ids if i not in after or after[i] == job_ads.REMOVED]
        )
        out: dict[str, Outcome] = {}
        for job_id in ce_job_ids:
            if job_id in after and after[job_id] != job_ads.REMOVED:
                name = job_ads.STATUS_NAMES.get(after[job_id], str(after[job_id]))
                out[job_id] = Outcome(job_id, False, error=f"still {name} after the remove")
                continue
            ad = ads.get(job_id)
            iwd = self._iwd(ce, job_id, ad) if ad is not None else None
            if iwd is not None:
                try:
                    remove_tree(iwd)
                except OSError as error:
                    out[job_id] = Outcome(job_id, False, error=f"initialdir not removed: {error}")
                    continue
            out[job_id] = Outcome(job_id, True, gone=job_id in gone)
        return out

    def restart(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        if not self.options(ce).can_restart:
            return {i: Outcome(i, False, error="restart disabled for this CE") for i in ce_job_ids}
        before = self._queued(ce, ce_job_ids)
        self._act(
            ce, "Release", [i for i, s in before.items() if s == job_ads.HELD], "released by act"
        )
        after = self._queued(ce, [i for i, s in before.items() if s == job_ads.HELD])
        out: dict[str, Outcome] = {}
        for job_id in ce_job_ids:
            if job_id not in before:
                out[job_id] = Outcome(job_id, False, gone=True, error="not in the queue")
            elif before[job_id] != job_ads.HELD:
                name = job_ads.STATUS_NAMES.get(before[job_id], str(before[job_id]))
                out[job_id] = Outcome(job_id, False, error=f"not held ({name})")
            elif after.get(job_id) == job_ads.HELD:
                out[job_id] = Outcome(job_id, False, error="still held after the release")
            elif job_id not in after:
                out[job_id] = Outcome(job_id, False, gone=True, error="left the queue")
            else:
                out[job_id] = Outcome(job_id, True)
        return out


#: What make_backend builds this back end with (BACKENDS names CondorBackend), declared so that mypy
#: checks it (make check): built with the engine's keywords, it is a Backend. A method missing or
#: of another signature fails the type check, not the first daemon that calls it.
backend_factory: BackendFactory = CondorBackend


def _looks_per_job(cause: str) -> bool:
    """A submit error about the job rather than the schedd (the schedd answered and refused)."""
    down = ("connect", "locate", "timed out", "timeout", "refused", "unreachable", "network")
    return not any(word in cause.lower() for word in down)


def _submit_call(schedd: ScheddLike, batch: Batch) -> Any:
    """One ``Schedd.submit``: one transaction, one cluster (one proc per item)."""
    import htcondor2

    description = htcondor2.Submit(batch.text)
    if batch.items:
        return schedd.submit(description, itemdata=iter(batch.items))
    return schedd.submit(description, count=1)


def _submit_result(result: Any) -> tuple[int, int, int]:
    return int(result.cluster()), int(result.first_proc()), int(result.num_procs())
