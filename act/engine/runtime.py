"""What engine daemons keep between cycles: the configured CEs and one back end of each kind."""

from __future__ import annotations

import logging

from act.common.db import Database
from act.engine.backend import CE, Backend, make_backend
from act.engine.config import Context, EngineConfig
from act.engine.measured import MeasuredBackend


class UnknownCE(LookupError):
    """A job names a CE that is not (or no longer) in ``engine.ces``."""


class EnginePool:
    """The CEs of the config and their back ends, created on first use and kept."""

    def __init__(self, settings: EngineConfig, db: Database | None, log: logging.Logger) -> None:
        self.settings = settings
        self.db = db
        self.log = log
        self._backends: dict[str, Backend] = {}

    def ce(self, name: str) -> CE:
        found = self.settings.engine.ces.get(name)
        if found is None:
            raise UnknownCE(f"ce={name}: not configured under engine.ces")
        return CE(name, found)

    def ces(self) -> list[CE]:
        return [CE(name, ce) for name, ce in sorted(self.settings.engine.ces.items())]

    def backend(self, ce: CE) -> Backend:
        kind = ce.settings.backend
        if kind not in self._backends:
            made = make_backend(kind, settings=self.settings, db=self.db, log=self.log)
            self._backends[kind] = MeasuredBackend(made, kind)  # every CE call timed and counted
        return self._backends[kind]

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()


def pool(ctx: Context) -> EnginePool:
    """The daemon's pool, made at its first cycle."""
    found = ctx.cache.get("engine_pool")
    if not isinstance(found, EnginePool):
        found = EnginePool(ctx.settings, ctx.db, ctx.log)
        ctx.cache["engine_pool"] = found
    return found
