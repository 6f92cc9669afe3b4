"""A back end that times and counts every call the engine makes to the back end it wraps.

:class:`~act.engine.runtime.EnginePool` hands the engine daemons their back ends wrapped in
:class:`MeasuredBackend`, so each CE call is measured in one place
(``act_ce_requests_total``, ``act_ce_request_seconds``; :mod:`act.common.metrics`) whichever
daemon makes it. The outcome is ``ok``, ``unavailable`` (:class:`CEUnavailable`: the CE did not
answer as a whole) or ``error`` (any other exception). Per-job failures a back end returns are
not errors of the call.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from act.common import metrics
from act.engine.backend import (
    CE,
    Backend,
    CEUnavailable,
    Fetched,
    JobStatus,
    Limits,
    Outcome,
    SubmitRequest,
    Submitted,
)


class MeasuredBackend:
    """``inner`` with every CE call measured; ``kind`` is its name (``engine.ces.*.backend``)."""

    def __init__(self, inner: Backend, kind: str) -> None:
        self.inner = inner
        self.kind = kind

    @contextmanager
    def _call(self, ce: CE, operation: str) -> Iterator[None]:
        with metrics.measured(
            metrics.CE_REQUESTS,
            metrics.CE_SECONDS,
            (self.kind, ce.name, operation),
            (self.kind, operation),
        ) as call:
            try:
                yield
            except CEUnavailable:
                call.outcome = "unavailable"
                raise

    def limits(self, ce: CE) -> Limits:
        return self.inner.limits(ce)

    def submit(self, ce: CE, jobs: Sequence[SubmitRequest]) -> list[Submitted]:
        with self._call(ce, "submit"):
            return self.inner.submit(ce, jobs)

    def status(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, JobStatus | None]:
        with self._call(ce, "status"):
            return self.inner.status(ce, ce_job_ids)

    def find(self, ce: CE, tokens: Sequence[str]) -> dict[str, str]:
        with self._call(ce, "find"):
            return self.inner.find(ce, tokens)

    def fetch(self, ce: CE, ce_job_id: str, dest: Path, *, failed: bool) -> Fetched:
        with self._call(ce, "fetch"):
            return self.inner.fetch(ce, ce_job_id, dest, failed=failed)

    def kill(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        with self._call(ce, "kill"):
            return self.inner.kill(ce, ce_job_ids)

    def clean(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        with self._call(ce, "clean"):
            return self.inner.clean(ce, ce_job_ids)

    def restart(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        with self._call(ce, "restart"):
            return self.inner.restart(ce, ce_job_ids)

    def close(self) -> None:
        self.inner.close()
