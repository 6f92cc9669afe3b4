"""The whole configuration file: every package's sections, composed.

Each package declares the sections it owns in a model extending the models of the packages it
reads (:class:`act.engine.config.EngineConfig` adds ``engine:`` to the common keys,
:class:`act.atlas.config.AtlasConfig` adds ``queues:``, ``panda:``, ``storage:`` and ``weblogs:``);
:class:`Settings` inherits from the top of each such line, so that:

* the file is validated as one strict model: an unknown key anywhere is an error with its path and
  a suggestion (:func:`act.common.config.read_settings`), exactly as before the split;
* a package reads its sections as typed attributes (``ctx.settings.engine.ces``), checked by
  mypy, without importing anything above itself;
* adding a package's section is one model in that package and one base class here.

A registry of sections filled at import time (``register("engine", EngineSettings)``) was the
alternative; it would build the model at run time, which mypy cannot see through, and make the
file's validity depend on which modules happened to be imported.
"""

from __future__ import annotations

import os

from act.atlas.config import AtlasConfig
from act.common.config import read_settings, settings_from_snapshot
from act.service.daemons import daemon_problems


class Settings(AtlasConfig):
    """act's whole configuration (``etc/act.yaml`` documents every key)."""


def load_settings(explicit: str | os.PathLike[str] | None = None) -> Settings:
    """Read, override from the environment and validate the whole configuration, including
    that every configured daemon resolves and its options are valid; raise ConfigError."""
    return read_settings(Settings, explicit, checks=[daemon_problems])


def from_snapshot(text: str) -> Settings:
    """The settings actd handed to its daemons (:meth:`Settings.snapshot`)."""
    return settings_from_snapshot(Settings, text)
