"""The ARC CE back end: :class:`act.engine.backend.Backend` over the ARC REST interface.

Per CE (``engine.ces.<name>`` with ``backend: arc``): ``url`` is the A-REX URL
(``https://host:443/arex``), ``credential`` the X509 proxy used as client certificate and for
delegations, ``ca`` the CA file or directory the CE's certificate is checked against, ``queue``
the batch queue. ``options`` takes the keys of :class:`ArcOptions`.

What the back end adds to the REST calls:

* the request's token goes into the job name (``jobname``), ``queue`` and ``delegationid`` are
  set, and input files the client ships (xRSL ``inputfiles`` with an empty or local source) are
  uploaded from the request's ``input_dir`` right after the job is created;
* a bulk submission that A-REX refuses as a whole (it does that when one description is bad)
  is retried one job at a time, after checking by token that none of them was created;
* a submission that fails for a delegation reason gets a new delegation and is retried once;
* states come from the ``info`` document (``arcrest:`` state, exit code, errors, resources);
  a job the CE answers 404 for is ``None``; a job whose reply cannot be understood (no state, an
  unknown state, missing from the reply) is left out of the result and logged as a warning.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError

from act.arc import adl, xrsl
from act.arc.delegation import Delegations
from act.arc.download import FetchError, download_tree
from act.arc.jobstate import activity_of, job_status
from act.arc.proxy import ProxyError
from act.arc.rest import (
    ArcRest,
    JobResult,
    RestError,
    SubmitRejected,
    ensure_private,
)
from act.common.logs import job_log
from act.common.section import Section
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


class ArcOptions(Section):
    """``engine.ces.<name>.options`` of an ARC CE."""

    rest_version: Literal["auto", "1.0", "1.1"] = "auto"  # auto: ask the CE (GET /arex/rest)
    delegation_lifetime: float = Field(4 * 86400.0, gt=0)  # capped by the credential's own
    delegation_renew_margin: float = Field(86400.0, ge=0)  # renew when less is left
    delegation_verify_interval: float = Field(600.0, gt=0)  # check the CE still has it
    submit_batch: int = Field(50, ge=1, le=1000)
    status_batch: int = Field(500, ge=1, le=10000)
    refresh_seconds: float = Field(60.0, gt=0)  # the CE's info provider period
    can_restart: bool = True
    # How long A-REX may take to list a job it accepted (see Limits.find_lag): a job whose
    # submission reply was lost is not sent again before this.
    find_lag: float = Field(300.0, ge=0)


_DELEGATION_ERROR = re.compile(r"(?i)delegat")


class ArcBackend:
    """One per daemon process; keeps one REST client (one keep-alive session) per CE."""

    def __init__(self, *, settings: EngineConfig, db: Database | None, log: logging.Logger) -> None:
        self.settings = settings
        self.db = db
        self.log = log
        self._clients: dict[str, tuple[tuple[Any, ...], ArcRest]] = {}
        self._delegations: dict[tuple[float, float, float], Delegations] = {}

    # ----------------------------------------------------------------- plumbing ---
    def options(self, ce: CE) -> ArcOptions:
        try:
            return ArcOptions.model_validate(ce.settings.options)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
            )
            raise ValueError(f"engine.ces.{ce.name}.options: {problems}") from None

    def client(self, ce: CE) -> ArcRest:
        s = ce.settings
        opts = self.options(ce)
        key = (s.url, s.credential, s.ca, s.timeout, opts.rest_version)
        found = self._clients.get(ce.name)
        if found is not None and found[0] == key:
            return found[1]
        if found is not None:
            found[1].close()
        if not s.url:
            raise CEUnavailable(ce.name, "no url configured", maybe_sent=False)
        if s.credential:
            try:
                ensure_private(s.credential)
            except OSError as error:
                raise CEUnavailable(ce.name, f"credential: {error}", maybe_sent=False) from None
        client = ArcRest(
            s.url,
            name=ce.name,
            credential=s.credential,
            ca=s.ca,
            timeout=s.timeout,
            version=None if opts.rest_version == "auto" else opts.rest_version,
        )
        self._clients[ce.name] = (key, client)
        return client

    def delegations(self, ce: CE) -> Delegations:
        opts = self.options(ce)
        key = (
            opts.delegation_lifetime,
            opts.delegation_renew_margin,
            opts.delegation_verify_interval,
        )
        if key not in self._delegations:
            self._delegations[key] = Delegations(
                self.db,
                self.log,
                lifetime=key[0],
                renew_margin=key[1],
                verify_interval=key[2],
            )
        return self._delegations[key]

    def delegation(self, ce: CE, *, replace: str | None = None) -> str:
        credential = ce.settings.credential
        if not credential:
            raise CEUnavailable(
                ce.name,
                "no credential configured (engine.ces.<name>.credential)",
                maybe_sent=False,
            )
        store = self.delegations(ce)
        try:
            if replace is not None:
                return store.recreate(self.client(ce), ce.name, credential, replace)
            return store.get(self.client(ce), ce.name, credential)
        except (ProxyError, RestError, OSError) as error:
            raise CEUnavailable(ce.name, f"delegation failed: {error}", maybe_sent=False) from None
        except CEUnavailable as error:  # no job was sent while delegating
            raise CEUnavailable(
                ce.name, f"delegation failed: {error.cause}", maybe_sent=False
            ) from None

    def limits(self, ce: CE) -> Limits:
        opts = self.options(ce)
        return Limits(
            submit_batch=opts.submit_batch,
            status_batch=opts.status_batch,
            refresh_seconds=opts.refresh_seconds,
            can_restart=opts.can_restart,
            find_lag=opts.find_lag,
        )

    def close(self) -> None:
        for _, client in self._clients.values():
            client.close()
        self._clients.clear()

    # -------------------------------------------------------------------- submit ---
    def submit(self, ce: CE, jobs: Sequence[SubmitRequest]) -> list[Submitted]:
        if not jobs:
            return []
        client = self.client(ce)
        accepted_before = client.created_calls
        try:
            return self._submit_with_delegation(ce, client, jobs)
        except CEUnavailable as error:
            if client.created_calls == accepted_before:
                raise
            # An earlier call of this batch created jobs: the caller must ask the CE which
            # exist before sending any elsewhere, even if this failure sent nothing.
            raise error.after_jobs_made() from None

    def _submit_with_delegation(
        self, ce: CE, client: ArcRest, jobs: Sequence[SubmitRequest]
    ) -> list[Submitted]:
        delegation_id = self.delegation(ce)
        results = self._submit(ce, client, list(jobs), delegation_id)
        retry = [
            i
            for i, r in enumerate(results)
            if r.ce_job_id is None and r.error and _DELEGATION_ERROR.search(r.error)
        ]
        if retry:
            self.log.warning(
                "ce=%s: %d submissions refused for a delegation reason: new delegation, retry once",
                ce.name,
                len(retry),
            )
            delegation_id = self.delegation(ce, replace=delegation_id)
            again = self._submit(ce, client, [jobs[i] for i in retry], delegation_id)
            for i, result in zip(retry, again, strict=True):
                results[i] = result
        return results

    def _submit(
        self, ce: CE, client: ArcRest, jobs: list[SubmitRequest], delegation_id: str
    ) -> list[Submitted]:
        results: list[Submitted | None] = [None] * len(jobs)
        prepared: list[tuple[int, xrsl.Prepared, list[tuple[str, Path]]]] = []
        for i, job in enumerate(jobs):
            try:
                prepare = adl.prepare if job.description.lstrip().startswith("<") else xrsl.prepare
                ready = prepare(
                    job.description,
                    token=job.token,
                    queue=ce.settings.queue,
                    delegation_id=delegation_id,
                )
                uploads = [_local_input(job, name, source) for name, source in ready.uploads]
            except (xrsl.XrslError, InputError) as error:
                results[i] = Submitted(job.job_id, None, f"bad description: {error}", True)
                continue
            prepared.append((i, ready, uploads))
        # One call per kind of description (A-REX takes a bulk of xRSL or of ADL, not both).
        for is_adl in (False, True):
            group = [p for p in prepared if p[1].description.startswith("<") == is_adl]
            if not group:
                continue
            replies = self._create(ce, client, [jobs[i] for i, _, _ in group], group)
            for (i, _, uploads), reply in zip(group, replies, strict=True):
                results[i] = self._after_create(ce, client, jobs[i], reply, uploads)
        return [r for r in results if r is not None]

    def _create(
        self,
        ce: CE,
        client: ArcRest,
        jobs: list[SubmitRequest],
        prepared: list[tuple[int, xrsl.Prepared, list[tuple[str, Path]]]],
    ) -> list[JobResult]:
        descriptions = [p.description for _, p, _ in prepared]
        try:
            return client.submit(descriptions)
        except SubmitRejected:
            if len(descriptions) == 1:
                raise
        # A-REX refused the whole batch (one bad description does that). None of it should
        # exist; make sure by token, then submit the others one by one.
        self.log.warning(
            "ce=%s: bulk submission of %d refused as a whole; one by one", ce.name, len(jobs)
        )
        existing = self.find(ce, [job.token for job in jobs])
        replies: list[JobResult] = []
        for job, description in zip(jobs, descriptions, strict=True):
            if job.token in existing:
                replies.append(JobResult(id=existing[job.token], code=201, reason="found"))
                continue
            try:
                replies.extend(client.submit([description]))
            except SubmitRejected as error:
                replies.append(JobResult(id="", code=500, reason=error.cause))
        return replies

    def _after_create(
        self,
        ce: CE,
        client: ArcRest,
        job: SubmitRequest,
        reply: JobResult,
        uploads: list[tuple[str, Path]],
    ) -> Submitted:
        log = job_log(self.log, panda_id=job.panda_id, ce=ce.name)
        if not reply.ok or not reply.id:
            reason = reply.reason.strip().replace("\n", " ") or f"status {reply.code}"
            # A-REX answers 500 per job for a description it cannot parse or accept.
            permanent = reply.code in (400, 500) and "pars" in reason.lower()
            log.warning("submission refused (%s): %s", reply.code, reason)
            return Submitted(job.job_id, None, f"CE refused the job: {reason}", permanent)
        for name, path in uploads:
            try:
                client.upload(reply.id, name, path)
            except (RestError, CEUnavailable, OSError) as error:
                log.warning(
                    "upload of %s to %s failed (%s): cleaning the job", name, reply.id, error
                )
                try:
                    client.kill([reply.id])
                    client.clean([reply.id])
                except (RestError, CEUnavailable):
                    log.warning("could not clean %s after the failed upload", reply.id)
                return Submitted(job.job_id, None, f"input upload of {name} failed: {error}")
        log.info("submitted as %s (%d input files uploaded)", reply.id, len(uploads))
        return Submitted(job.job_id, reply.id)

    # -------------------------------------------------------------------- status ---
    def status(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, JobStatus | None]:
        client = self.client(ce)
        out: dict[str, JobStatus | None] = {}
        size = self.options(ce).status_batch
        ids = list(dict.fromkeys(ce_job_ids))
        for start in range(0, len(ids), size):
            batch = ids[start : start + size]
            replies = client.info(batch)
            for job_id in batch:
                reply = replies.get(job_id)
                if reply is None:
                    self.log.warning("ce=%s: no status for %s in the CE's reply", ce.name, job_id)
                    continue
                if reply.gone:
                    out[job_id] = None
                    continue
                try:
                    out[job_id] = job_status(reply)
                except ValueError as error:
                    self.log.warning("ce=%s: job %s: %s", ce.name, job_id, error)
        return out

    def find(self, ce: CE, tokens: Sequence[str]) -> dict[str, str]:
        wanted = set(tokens)
        if not wanted:
            return {}
        client = self.client(ce)
        ids = client.jobs()
        found: dict[str, str] = {}
        size = self.options(ce).status_batch
        unnamed: list[str] = []
        for start in range(0, len(ids), size):
            for job_id, reply in client.info(ids[start : start + size]).items():
                name = activity_of(reply).get("Name")
                token = xrsl.token_of(name if isinstance(name, str) else None)
                if token in wanted:
                    found[token] = job_id
                elif not name and not reply.gone:
                    unnamed.append(job_id)
        # A job just accepted may have no name in its info document yet: read its description.
        for job_id in unnamed:
            if len(found) == len(wanted):
                break
            try:
                text = client.diagnose(job_id, "description") or ""
            except RestError:
                continue
            for token in wanted - set(found):
                if re.search(rf"{re.escape(xrsl.TOKEN_MARK + token)}(?![A-Za-z0-9._-])", text):
                    found[token] = job_id
        return found

    # --------------------------------------------------------------------- fetch ---
    def fetch(self, ce: CE, ce_job_id: str, dest: Path, *, failed: bool) -> Fetched:
        client = self.client(ce)
        limits = self.settings.engine.fetch
        diagnostics = None
        if failed:
            try:
                reason = client.diagnose(ce_job_id, "failed") or ""
                errors = client.diagnose(ce_job_id, "errors") or ""
            except RestError as error:
                reason, errors = "", f"(diagnostics not available: {error})"
            tail = errors[-8192:]
            diagnostics = (reason.strip() + "\n--- errors (end) ---\n" + tail).strip() or None
        try:
            files, size = download_tree(client, ce_job_id, dest, limits.max_bytes, limits.max_files)
        except RestError as error:
            if error.status == 404:
                return Fetched(ce_job_id, gone=True, diagnostics=diagnostics, error=str(error))
            return Fetched(ce_job_id, diagnostics=diagnostics, error=str(error))
        except FetchError as error:
            return Fetched(ce_job_id, diagnostics=diagnostics, error=str(error))
        return Fetched(ce_job_id, tuple(files), size, diagnostics)

    # ------------------------------------------------------ kill, clean, restart ---
    def _outcomes(self, ce: CE, action: str, ids: Sequence[str]) -> dict[str, Outcome]:
        client = self.client(ce)
        replies = client.action(action, list(dict.fromkeys(ids)))
        out: dict[str, Outcome] = {}
        for job_id in ids:
            reply = replies.get(job_id)
            if reply is None:
                out[job_id] = Outcome(job_id, False, error="not in the CE's reply")
            elif reply.ok:
                out[job_id] = Outcome(job_id, True)
            elif reply.gone:
                out[job_id] = Outcome(job_id, action != "restart", gone=True, error=reply.reason)
            else:
                out[job_id] = Outcome(job_id, False, error=f"{reply.code} {reply.reason}")
        return out

    def kill(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        return self._outcomes(ce, "kill", ce_job_ids)

    def clean(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        return self._outcomes(ce, "clean", ce_job_ids)

    def restart(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        if not self.options(ce).can_restart:
            return {i: Outcome(i, False, error="restart disabled for this CE") for i in ce_job_ids}
        # The restarted job needs a valid delegation, as a new one would.
        self.delegation(ce)
        return self._outcomes(ce, "restart", ce_job_ids)


#: What make_backend builds this back end with (BACKENDS names ArcBackend), declared so that mypy
#: checks it (make check): built with the engine's keywords, it is a Backend. A method missing or
#: of another signature fails the type check, not the first daemon that calls it.
backend_factory: BackendFactory = ArcBackend


# ------------------------------------------------------------------------ helpers ---
class InputError(ValueError):
    """A local input file that cannot be shipped."""


def _local_input(job: SubmitRequest, name: str, source: str) -> tuple[str, Path]:
    """The local file to upload as ``name``: ``input_dir/<source or name>``, never outside it."""
    if job.input_dir is None:
        raise InputError(
            f"input file {name!r} is shipped from the client but there is no input_dir"
        )
    base = job.input_dir.resolve()
    candidate = Path(source) if source else Path(name)
    path = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if path != base and base not in path.parents:
        raise InputError(f"input file {name!r}: {source or name!r} is outside the input directory")
    if not path.is_file():
        raise InputError(f"input file {name!r}: {path} does not exist")
    return name, path
