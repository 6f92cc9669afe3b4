"""Which code runs a daemon: built-in names, or ``entry: module:attribute`` for a site's own."""

from __future__ import annotations

import importlib

from act.common.daemon import DaemonSpec

#: Daemons shipped with act, by the name used under ``daemons:`` in the config.
BUILTIN: dict[str, str] = {
    "janitor": "act.common.janitor:DAEMON",
    "metrics": "act.common.metrics_daemon:DAEMON",
    "propagator": "act.atlas.propagator:DAEMON",
    "panda_fetcher": "act.atlas.fetcher:DAEMON",
    "translator": "act.atlas.translator:DAEMON",
    "app_status": "act.atlas.app_status:DAEMON",
    "validator": "act.atlas.validator:DAEMON",
    "weblogs": "act.atlas.weblog_cleaner:DAEMON",
    "poller": "act.engine.poller:DAEMON",
    "ce_fetcher": "act.engine.fetcher:DAEMON",
    "canceller": "act.engine.canceller:DAEMON",
    "cleaner": "act.engine.cleaner:DAEMON",
    "submitter": "act.engine.submitter:DAEMON",
}


class RegistryError(LookupError):
    """A daemon name or entry point that does not lead to a DaemonSpec."""


def resolve(name: str, entry: str | None = None) -> DaemonSpec:
    """The DaemonSpec for a configured daemon."""
    target = entry or BUILTIN.get(name)
    if target is None:
        known = ", ".join(sorted(BUILTIN))
        raise RegistryError(
            f"unknown daemon (built-in: {known}); give `entry: module:attribute` for your own"
        )
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise RegistryError(f"cannot import {module_name!r}: {error}") from None
    spec = getattr(module, attribute, None)
    if not isinstance(spec, DaemonSpec):
        raise RegistryError(f"{target} is not a DaemonSpec")
    return spec
