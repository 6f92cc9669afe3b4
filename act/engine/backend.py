"""The interface every CE back end implements (ARC REST, HTCondor, local processes).

The engine daemons (submitter, poller, fetcher, canceller, cleaner) are written once against
:class:`Backend`; a back end only translates these calls into its client's. Rules every back end
keeps:

* **Batches.** Every call takes a batch for one CE; :class:`Limits` says how large a batch may be.
* **Whole-CE failures raise** :class:`CEUnavailable` (connection refused, TLS failure, timeout,
  HTTP 5xx on the whole request): nothing is known to have changed, the circuit breaker counts it.
  **Per-job outcomes are returned**, never raised: one bad job must not fail its batch.
* **Idempotence and reconciliation.** ``submit`` names each CE job after its request's ``token``
  so that :meth:`Backend.find` can tell, after a crash between the CE's reply and the database
  commit, which requests the CE already has. Nothing is ever submitted twice.
* **Untrusted input.** Everything a CE returns (states, file names, sizes) is checked; a reply
  that cannot be understood is a per-job error naming the job, or :class:`CEUnavailable`.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from act.common.states import CEJobState
from act.engine.settings import CESettings

if TYPE_CHECKING:
    from act.common.db import Database
    from act.engine.config import EngineConfig


@dataclass(frozen=True)
class CE:
    """A configured CE as the back ends see it: its name (``ce_jobs.ce_name``) and settings."""

    name: str
    settings: CESettings


class CEReportedState(str, Enum):
    """What a back end reports of a CE job, mapped from the CE's own states; each value is the
    ``ce_jobs.state`` (:class:`~act.common.states.CEJobState`) the poller moves the job to."""

    SUBMITTED = CEJobState.SUBMITTED.value  # accepted, waiting or being prepared (staging in)
    RUNNING = CEJobState.RUNNING.value
    FINISHING = CEJobState.FINISHING.value  # payload ended, staging out
    FINISHED = CEJobState.FINISHED.value  # ended, exit code 0 (as far as the CE knows)
    FAILED = CEJobState.FAILED.value  # ended with an error (payload exit ≠ 0, LRMS or staging)
    CANCELLED = CEJobState.CANCELLED.value  # killed (by us or outside act)


TERMINAL = frozenset({CEReportedState.FINISHED, CEReportedState.FAILED, CEReportedState.CANCELLED})


@dataclass(frozen=True)
class SubmitRequest:
    job_id: int  # ce_jobs.id
    token: str  # unique; becomes (part of) the CE job's name
    description: str  # xRSL/ADL, submit description, or the local back end's command spec
    input_dir: Path | None = None  # local input files the description refers to
    panda_id: int | None = None  # for log lines


@dataclass(frozen=True)
class Submitted:
    job_id: int
    ce_job_id: str | None  # set when the CE accepted the job
    error: str | None = None
    permanent: bool = False  # the CE rejected this description; another CE would too


@dataclass(frozen=True)
class JobStatus:
    ce_job_id: str
    state: CEReportedState
    raw_state: str  # the CE's own words, for operators
    exit_code: int | None = None
    errors: tuple[str, ...] = ()  # the CE's and LRMS's error messages
    worker_node: str | None = None
    cpu_seconds: int | None = None
    wall_seconds: int | None = None
    max_rss_kb: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    restartable: bool = False  # failed in a phase the CE can restart (e.g. staging)
    #: FAILED because the CE lost the job for the site's fault (e.g. the local CE's runner died
    #: before the payload's exit was recorded), not because of the payload: resubmitted within
    #: the job's retry budget whatever ``engine.resubmit`` says (:mod:`act.engine.resubmit`).
    lost: bool = False


@dataclass(frozen=True)
class Outcome:
    """The result of kill, clean or restart for one CE job."""

    ce_job_id: str
    ok: bool
    gone: bool = False  # the CE does not know the job (any more)
    error: str | None = None


@dataclass(frozen=True)
class Fetched:
    ce_job_id: str
    files: tuple[str, ...] = ()  # relative paths written under the destination directory
    size: int = 0  # bytes written
    diagnostics: str | None = None  # the CE's error/diagnose text, if any
    error: str | None = None  # set when the fetch failed (the job stays to be fetched again)
    gone: bool = False  # the CE does not know the job


@dataclass(frozen=True)
class Limits:
    submit_batch: int = 50  # requests per submit call
    status_batch: int = 500  # ids per status call
    refresh_seconds: float = 60.0  # how stale the CE's states may be (ARC: its info provider)
    can_restart: bool = False
    #: How long after accepting a job the CE's ``find`` may still miss it (ARC: A-REX lists a
    #: job only once it has written it). A ``submitting`` job the CE does not show is sent
    #: again only after this long; 0 means ``find`` is authoritative at once.
    find_lag: float = 0.0
    extras: Mapping[str, Any] = field(default_factory=dict)


class CEUnavailable(RuntimeError):
    """The CE did not answer as a whole (transport, TLS, timeout, overload); retry later.

    ``maybe_sent`` says whether the request may have reached the CE. It is False only when the
    call certainly failed before anything was sent (connection refused, name not resolved, TLS
    handshake, a local check): then a submission can go to another CE at once. Otherwise (a
    timeout or a broken connection while waiting for the reply, a server error, a reply that
    cannot be read) the CE may have taken the jobs, and they must not be sent anywhere else until
    the CE has been asked.
    """

    def __init__(self, ce: str, cause: str, *, maybe_sent: bool = True) -> None:
        super().__init__(f"ce={ce}: {cause}")
        self.ce = ce
        self.cause = cause
        self.maybe_sent = maybe_sent

    def after_jobs_made(self) -> CEUnavailable:
        """This failure as seen by the caller of a submission one of whose earlier calls
        already created jobs: whatever this call did, the CE may hold jobs of the batch."""
        return self if self.maybe_sent else CEUnavailable(self.ce, self.cause)


class Backend(Protocol):
    """What the engine daemons call. One instance per daemon process, used from one thread."""

    def limits(self, ce: CE) -> Limits: ...

    def submit(self, ce: CE, jobs: Sequence[SubmitRequest]) -> list[Submitted]:
        """Submit a batch; one result per request, in order."""
        ...

    def status(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, JobStatus | None]:
        """States of a batch; ``None`` for a job the CE does not know."""
        ...

    def find(self, ce: CE, tokens: Sequence[str]) -> dict[str, str]:
        """``token -> ce_job_id`` for the requests the CE already has (after a crash)."""
        ...

    def fetch(self, ce: CE, ce_job_id: str, dest: Path, *, failed: bool) -> Fetched:
        """Download outputs (or, for a failed job, what there is plus diagnostics) into ``dest``."""
        ...

    def kill(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]: ...

    def clean(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]: ...

    def restart(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]: ...

    def close(self) -> None: ...


class BackendNotAvailable(LookupError):
    """A CE back end act knows by name whose code is missing here (not written or installed yet,
    or a library it needs is not installed)."""


class BackendFactory(Protocol):
    def __call__(
        self, *, settings: EngineConfig, db: Database | None, log: logging.Logger
    ) -> Backend: ...


#: Back ends shipped with act, by the name used in ``engine.ces.<name>.backend``. Loaded by name,
#: they are out of a type checker's sight here: each module declares ``backend_factory:
#: BackendFactory = <its class>``, which mypy checks against :class:`Backend` (make check).
BACKENDS: dict[str, str] = {
    "local": "act.local.backend:LocalBackend",
    "arc": "act.arc.backend:ArcBackend",
    "condor": "act.condor.backend:CondorBackend",
}


def make_backend(
    name: str, *, settings: EngineConfig, db: Database | None, log: logging.Logger
) -> Backend:
    """Instantiate the back end called ``name`` (a key of :data:`BACKENDS`)."""
    target = BACKENDS.get(name)
    if target is None:
        raise LookupError(f"unknown CE back end {name!r} (known: {', '.join(sorted(BACKENDS))})")
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or "?"
        if module_name == missing or module_name.startswith(missing + "."):
            raise BackendNotAvailable(
                f"CE back end {name!r} is not available in this installation "
                f"(module {module_name} is missing)"
            ) from error
        raise BackendNotAvailable(
            f"CE back end {name!r} is not available: its module {module_name} needs "
            f"{missing}, which is not installed"
        ) from error
    factory: BackendFactory | None = getattr(module, attribute, None)
    if factory is None:
        raise BackendNotAvailable(
            f"CE back end {name!r} is not available: {module_name} has no {attribute}"
        )
    return factory(settings=settings, db=db, log=log)
