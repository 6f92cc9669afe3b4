"""act's configuration: one YAML file, validated completely before anything starts.

Where it comes from, first match wins:

1. the ``--config`` option of ``actd``/``actctl``/``act-daemon``;
2. the ``ACT_CONFIG`` environment variable;
3. ``/etc/act/act.yaml`` if it exists;
4. nothing: the built-in defaults, the embedded setup (SQLite, state and logs under one
   root).

``ACT_ROOT`` and ``ACT_DB_URL`` override ``root`` and ``db.url``. Every key is typed: an unknown
key, a value of the wrong type or an out-of-range value is an error naming the key's path (with a
suggestion for a likely typo), and so is a key given twice in the file. ``etc/act.yaml`` documents
every key.

This module is the base layer's part: the keys every process reads (:class:`CommonSettings`)
and the reading, validating and error reporting, for any model built on it. Each package adds
its own sections by extending the model of the packages below it (``act.engine.settings.
EngineConfig`` adds ``engine:``, ``act.atlas.config.AtlasConfig`` the PanDA-side sections), and
:class:`act.service.settings.Settings`, above every package, composes the whole file. The
packages see their sections as typed attributes (``settings.engine.ces``) and act/common imports
none of them.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from sqlalchemy.engine import URL, make_url

from act.common.section import Section

ENV_CONFIG = "ACT_CONFIG"
ENV_DB_URL = "ACT_DB_URL"
ENV_ROOT = "ACT_ROOT"
SYSTEM_CONFIG = Path("/etc/act/act.yaml")
BUILTIN = "built-in defaults"
__all__ = [
    "CommonSettings",
    "ConfigError",
    "DaemonSettings",
    "Section",
    "read_settings",
    "settings_from_snapshot",
]
DAEMON_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,39}")


class ConfigError(ValueError):
    """The configuration is invalid; ``problems`` lists each one as 'key.path: what is wrong'."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid configuration ({source}):\n  " + "\n  ".join(problems))


def default_root() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(state, "act")


class DbSettings(Section):
    url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite under root")
    password_file: str | None = None
    pool_size: int = Field(5, ge=1, le=100)
    connect_timeout: float = Field(10.0, gt=0)
    busy_timeout: float = Field(30.0, gt=0)
    echo: bool = False


class LoggingSettings(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    dir: str | None = None


class LivenessSettings(Section):
    heartbeat_interval: float = Field(10.0, gt=0)
    dead_after: float = Field(60.0, gt=0)

    @model_validator(mode="after")
    def _margin(self) -> LivenessSettings:
        if self.dead_after < 3 * self.heartbeat_interval:
            raise ValueError("dead_after must be at least 3 times heartbeat_interval")
        return self


#: The default ``supervisor.stop_timeout``: longer than the longest call a daemon may be waiting
#: for with the default timeouts (PanDA: connect 10 s + read 120 s), with time left to finish the
#: job at hand, release the claims and mark the process stopped.
DEFAULT_STOP_TIMEOUT = 180.0


class SupervisorSettings(Section):
    stop_timeout: float = Field(DEFAULT_STOP_TIMEOUT, gt=0)
    restart_delay: float = Field(1.0, gt=0)
    restart_delay_max: float = Field(300.0, gt=0)
    stable_after: float = Field(60.0, gt=0)
    #: A daemon whose cycle shows no progress for this long is killed and restarted; 0: never.
    hung_after: float = Field(3600.0, ge=0)


class DaemonSettings(Section):
    enabled: bool = True
    instances: int = Field(1, ge=1, le=64)
    interval: float = Field(30.0, gt=0)
    jitter: float = Field(0.1, ge=0, le=1)
    lease: float = Field(600.0, gt=0)
    batch: int = Field(100, ge=1, le=100_000)
    entry: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    options: dict[str, Any] = Field(default_factory=dict)


def _default_daemons() -> dict[str, DaemonSettings]:
    return {"janitor": DaemonSettings()}


class CommonSettings(Section):
    """The keys every act process reads; the packages' config models extend it (see above)."""

    root: str = Field(default_factory=default_root)
    db: DbSettings = DbSettings()
    logging: LoggingSettings = LoggingSettings()
    liveness: LivenessSettings = LivenessSettings()
    supervisor: SupervisorSettings = SupervisorSettings()
    daemons: dict[str, DaemonSettings] = Field(default_factory=_default_daemons)

    _source: str = PrivateAttr(default=BUILTIN)

    @field_validator("daemons")
    @classmethod
    def _daemon_names(cls, daemons: dict[str, DaemonSettings]) -> dict[str, DaemonSettings]:
        for name in daemons:
            if not DAEMON_NAME.fullmatch(name):
                raise ValueError(
                    f"daemon name {name!r}: use 1-40 letters, digits, '_' or '-', starting with a "
                    "letter (it names log files and processes)"
                )
        return daemons

    @property
    def source(self) -> str:
        """The file these settings came from, or 'built-in defaults'."""
        return self._source

    @property
    def log_dir(self) -> Path:
        return Path(self.logging.dir) if self.logging.dir else Path(self.root) / "log"

    @property
    def run_dir(self) -> Path:
        return Path(self.root) / "run"

    def db_url(self) -> URL:
        """The database URL; ``db.password_file`` supplies the password if the URL has none."""
        if self.db.url is None:
            url = make_url(f"sqlite:///{Path(self.root) / 'act.db'}")
        else:
            url = make_url(self.db.url)
        if self.db.password_file and url.password is None:
            url = url.set(password=read_secret(self.db.password_file, "db.password_file"))
        return url

    def snapshot(self) -> str:
        """The settings as JSON, for handing validated settings to child processes."""
        return json.dumps({"source": self.source, "settings": self.model_dump(mode="json")})

    def call_timeouts(self) -> dict[str, float]:
        """The longest single call a daemon may be waiting for, per config key that sets it.

        Each package's model adds the timeouts of its own sections (CE calls, PanDA, storage);
        :func:`stop_timeout_warning` holds ``supervisor.stop_timeout`` against them.
        """
        return {"db.busy_timeout": self.db.busy_timeout}


S = TypeVar("S", bound=CommonSettings)


def stop_timeout_warning(settings: CommonSettings) -> str | None:
    """Why ``supervisor.stop_timeout`` is too short for a call a daemon may be in, or None.

    A warning, not an error: the value is honoured (it may have to fit systemd's TimeoutStopSec),
    but a daemon stopped during a longer call is killed (SIGKILL) before it has handed back its
    claims, which then wait for their lease.
    """
    timeouts = settings.call_timeouts()
    if not timeouts:
        return None
    key = max(timeouts, key=lambda name: timeouts[name])
    longest, stop = timeouts[key], settings.supervisor.stop_timeout
    if stop > longest:
        return None
    return (
        f"supervisor.stop_timeout: {stop:g}s is not longer than {key} ({longest:g}s): a daemon "
        "asked to stop during such a call is killed (SIGKILL) before it releases its claims; "
        f"raise stop_timeout above {longest:g}s (and systemd's TimeoutStopSec with it)"
    )


def settings_from_snapshot(model: type[S], text: str) -> S:
    """Settings handed over by :meth:`CommonSettings.snapshot` (already validated once)."""
    data = json.loads(text)
    settings = model.model_validate(data["settings"])
    settings._source = data["source"]
    return settings


def read_secret(path: str, key: str) -> str:
    """Read a credential file, refusing one that others may read."""
    try:
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                path,
                [
                    f"{key}: {path} is accessible by group/others "
                    f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
                ],
            )
        with open(path, encoding="utf-8") as handle:
            return handle.read().strip()
    except OSError as error:
        raise ConfigError(path, [f"{key}: cannot read {path}: {error.strerror}"]) from None


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Which file to read (see the module docstring), or None for the built-in defaults."""
    if explicit:
        return Path(explicit)
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    return SYSTEM_CONFIG if SYSTEM_CONFIG.exists() else None


def read_settings(
    model: type[S],
    explicit: str | os.PathLike[str] | None = None,
    *,
    checks: Sequence[Callable[[S], list[str]]] = (),
) -> S:
    """Read, override from the environment and validate the configuration as ``model`` (the
    whole file: :func:`act.service.settings.load_settings`); ``checks`` add problems a model
    cannot see (daemons that do not resolve). Raises ConfigError listing every problem."""
    path = config_path(explicit)
    source = str(path) if path else BUILTIN
    raw = _read_yaml(path) if path else {}
    if os.environ.get(ENV_ROOT):
        raw["root"] = os.environ[ENV_ROOT]
    if os.environ.get(ENV_DB_URL):
        db = raw.get("db")
        raw["db"] = {**(db if isinstance(db, dict) else {}), "url": os.environ[ENV_DB_URL]}
    try:
        settings = model.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(source, describe(error, model)) from None
    settings._source = source
    problems = [problem for check in checks for problem in check(settings)]
    problems += _check_credentials(settings, path)
    if problems:
        raise ConfigError(source, problems)
    return settings


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice (PyYAML silently keeps the last)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is not a plain value", key_node.start_mark
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} given twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(str(path), [f"cannot read the file: {error.strerror}"]) from None
    except UnicodeDecodeError as error:
        raise ConfigError(str(path), [f"not UTF-8 text (byte {error.start})"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        raise ConfigError(str(path), [f"not valid YAML: {error}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), ["the file must hold a mapping of keys to values"])
    return data


def describe(error: ValidationError, root: type[BaseModel]) -> list[str]:
    """Each validation error as 'key.path: what is wrong', with a suggestion for a typo."""
    problems = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        path = ".".join(loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            known = _known_keys(root, loc[:-1])
            close = difflib.get_close_matches(loc[-1], known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{path}: unknown key{hint}")
        elif item["type"] == "missing":
            problems.append(f"{path}: required key missing")
        elif "input" in item and not isinstance(item["input"], dict):
            problems.append(f"{path}: {item['msg']} (got {item['input']!r})")
        else:
            problems.append(f"{path}: {item['msg']}")
    return problems


def _known_keys(root: type[BaseModel], loc: list[str]) -> list[str]:
    """The keys allowed at a path, following models and dicts of models."""
    model = root
    expect_key = False
    for part in loc:
        if expect_key:
            expect_key = False
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        inner, expect_key = _model_in(field.annotation)
        if inner is None:
            return []
        model = inner
    return list(model.model_fields)


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds, itself or as the values of a dict/list (True: a key follows)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if typing.get_origin(annotation) in (dict, list) and args:
        model, _ = _model_in(args[-1])
        return model, model is not None
    if len(args) == 1:  # X | None
        return _model_in(args[0])
    return None, False


def _check_credentials(settings: CommonSettings, path: Path | None) -> list[str]:
    problems = []
    if settings.db.password_file:
        try:
            read_secret(settings.db.password_file, "db.password_file")
        except ConfigError as error:
            problems.extend(error.problems)
    if settings.db.url and make_url(settings.db.url).password and path is not None:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO) and not os.environ.get(ENV_DB_URL):
            problems.append(
                f"db.url: holds a password but {path} is readable by group/others "
                f"(mode {stat.S_IMODE(mode):04o}): chmod 600 the file, or use db.password_file"
            )
    return problems
