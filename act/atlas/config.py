"""The configuration as the PanDA layer sees it, and the context its daemons get.

:class:`AtlasConfig` is the engine's view (:class:`act.engine.config.EngineConfig`: the common keys
and ``engine:``, which the translator and validator read too) plus the PanDA-side sections
``queues:``, ``panda:``, ``storage:`` and ``weblogs:``. The whole file,
:class:`act.service.settings.Settings`, is one.
"""

from __future__ import annotations

from typing import TypeAlias

from act.atlas.panda_settings import PandaSettings
from act.atlas.queues import QueuesSettings
from act.atlas.storage.settings import StorageSettings
from act.atlas.weblog_settings import WebLogSettings
from act.common import daemon
from act.engine.config import EngineConfig


class AtlasConfig(EngineConfig):
    """The common keys, ``engine:`` and the PanDA layer's sections."""

    queues: QueuesSettings = QueuesSettings()
    panda: PandaSettings = PandaSettings()
    storage: StorageSettings = StorageSettings()
    weblogs: WebLogSettings = WebLogSettings()

    def call_timeouts(self) -> dict[str, float]:
        """The engine's, and one PanDA call (connect + read), a credential renewal command, one
        file check on storage and one CRIC download."""
        found = super().call_timeouts()
        timeout = self.panda.timeout
        found["panda.timeout (connect + read)"] = timeout.connect + timeout.read
        for role, credentials in self.panda.roles.items():
            if credentials.renew_command:
                found[f"panda.roles.{role}.renew_timeout"] = credentials.renew_timeout
        found["storage.timeout"] = self.storage.timeout
        if self.queues.cric_url:
            found["queues.cric_timeout"] = self.queues.cric_timeout
        return found


#: What a PanDA-layer daemon's ``run_once`` gets.
Context: TypeAlias = daemon.Context[AtlasConfig]
