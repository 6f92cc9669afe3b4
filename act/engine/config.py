"""The configuration as the engine layer sees it, and the context its daemons get.

:class:`EngineConfig` is the keys every process reads (:class:`act.common.config.CommonSettings`)
plus ``engine:`` (:class:`act.engine.settings.EngineSettings`). The whole file,
:class:`act.service.settings.Settings`, is one, so the engine's daemons and back ends read
``settings.engine.ces`` with its type known while act/common knows nothing of the engine.
"""

from __future__ import annotations

from typing import TypeAlias

from act.common import daemon
from act.common.config import CommonSettings
from act.engine.settings import EngineSettings


class EngineConfig(CommonSettings):
    """The common keys and ``engine:``."""

    engine: EngineSettings = EngineSettings()

    def call_timeouts(self) -> dict[str, float]:
        """The common ones and each CE's ``timeout`` (every call to that CE)."""
        found = super().call_timeouts()
        for name, ce in self.engine.ces.items():
            found[f"engine.ces.{name}.timeout"] = ce.timeout
        return found


#: What an engine daemon's ``run_once`` gets.
Context: TypeAlias = daemon.Context[EngineConfig]
