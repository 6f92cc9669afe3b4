"""The built-in daemons, by the name used under ``daemons:`` in the config.

Each daemon lives in the package whose layer it works on; this table, naming modules of every
package, is why it lives here, above them. ``entry: module:attribute`` runs a site's own daemon
(:func:`act.common.registry.resolve`).
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from act.common import registry
from act.common.config import CommonSettings, describe
from act.common.daemon import DaemonSpec

#: Daemons shipped with act.
BUILTIN: dict[str, str] = {
    "janitor": "act.engine.janitor:DAEMON",
    "metrics": "act.service.metrics_daemon:DAEMON",
    "propagator": "act.atlas.propagator:DAEMON",
    "panda_fetcher": "act.atlas.fetcher:DAEMON",
    "translator": "act.atlas.translator:DAEMON",
    "app_status": "act.atlas.app_status:DAEMON",
    "validator": "act.atlas.validator:DAEMON",
    "weblogs": "act.atlas.weblogs:DAEMON",
    "retention": "act.atlas.retention:DAEMON",
    "poller": "act.engine.poller:DAEMON",
    "ce_fetcher": "act.engine.fetcher:DAEMON",
    "canceller": "act.engine.canceller:DAEMON",
    "cleaner": "act.engine.cleaner:DAEMON",
    "submitter": "act.engine.submitter:DAEMON",
}


def resolve(name: str, entry: str | None = None) -> DaemonSpec[Any]:
    """The DaemonSpec of daemon ``name``: its ``entry``, else the built-in of that name."""
    return registry.resolve(name, entry, BUILTIN)


def daemon_problems(settings: CommonSettings) -> list[str]:
    """Each configured daemon that does not resolve, or whose options are invalid."""
    problems = []
    for name, daemon in settings.daemons.items():
        try:
            spec = resolve(name, daemon.entry)
        except registry.RegistryError as error:
            problems.append(f"daemons.{name}: {error}")
            continue
        try:
            spec.options.model_validate(daemon.options)
        except ValidationError as error:
            problems.extend(f"daemons.{name}.options.{p}" for p in describe(error, spec.options))
    return problems
