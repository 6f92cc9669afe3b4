"""Access to an HTCondor schedd: the few ``htcondor2.Schedd`` methods the back end uses.

:class:`ScheddLike` is what :mod:`act.condor.backend` calls; :func:`open_schedd` returns the real
``htcondor2.Schedd`` (the local one, or one located by name through a collector), and
:class:`act.condor.fake_schedd.FakeSchedd` is the in-memory test double for machines without
HTCondor daemons. Every error the bindings raise for the schedd as a whole (it cannot be located or
reached, it refuses the connection, a call times out) becomes :class:`ScheddUnavailable`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from act.condor.options import CondorOptions


class ScheddUnavailable(RuntimeError):
    """The schedd cannot be located or reached; nothing is known to have changed."""


class ScheddLike(Protocol):
    """The subset of ``htcondor2.Schedd`` the back end uses (same names, same arguments)."""

    def submit(
        self,
        description: Any,
        count: int = 0,
        spool: bool = False,
        itemdata: Iterator[dict[str, str]] | None = ...,
    ) -> Any:
        """One transaction: one cluster, one proc per item; returns a ``SubmitResult``."""
        ...

    def query(
        self, constraint: str = "True", projection: list[str] = ..., limit: int = -1
    ) -> list[Any]:
        """The ads of the queue's jobs matching ``constraint``."""
        ...

    def history(
        self, constraint: str | None = None, projection: list[str] = ..., match: int = -1
    ) -> list[Any]:
        """The ads of jobs gone from the queue, newest first, at most ``match``."""
        ...

    def act(self, action: Any, job_spec: list[str] | str, reason: str | None = None) -> Any:
        """Hold, release, remove ... ``job_spec`` (ids or a constraint); an ad of totals."""
        ...


def open_schedd(options: CondorOptions) -> ScheddLike:
    """The real schedd of ``options``: the local one when no ``schedd`` name is given, else the
    one of that name, located through ``collector`` (or the configured ``COLLECTOR_HOST``)."""
    import htcondor2

    try:
        if options.schedd is None:
            schedd: ScheddLike = htcondor2.Schedd()
            return schedd
        collector = htcondor2.Collector(options.collector) if options.collector else None
        collector = collector or htcondor2.Collector()
        ad = collector.locate(htcondor2.DaemonType.Schedd, options.schedd)
        located: ScheddLike = htcondor2.Schedd(ad)
        return located
    except (htcondor2.HTCondorException, OSError, RuntimeError, ValueError) as error:
        where = options.schedd or "the local schedd"
        raise ScheddUnavailable(f"cannot locate {where}: {error}") from None
