"""Which code runs a daemon: a name from a table of built-in daemons, or ``entry:
module:attribute`` for a site's own.

The table itself names modules of every package, so it lives above them
(:data:`act.service.daemons.BUILTIN`); this module only follows a name to its
:class:`~act.common.daemon.DaemonSpec`.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from act.common.daemon import DaemonSpec


class RegistryError(LookupError):
    """A daemon name or entry point that does not lead to a DaemonSpec."""


def resolve(name: str, entry: str | None, builtin: Mapping[str, str]) -> DaemonSpec[Any]:
    """The DaemonSpec of a configured daemon: its ``entry``, else ``builtin[name]``."""
    target = entry or builtin.get(name)
    if target is None:
        known = ", ".join(sorted(builtin))
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
