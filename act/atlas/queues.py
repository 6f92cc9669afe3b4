"""The PanDA queues act serves: CRIC's description of each, overridden by the YAML config.

Sources, per queue, later wins:

1. built-in defaults (below, and ``queues.defaults`` in the config);
2. the queue's entry in a CRIC ``pandaqueues`` JSON document (``queues.cric_file`` or
   ``queues.cric_url``), if one is configured;
3. the queue's own entry under ``queues.serve``.

Only the queues named under ``queues.serve`` are loaded: CRIC lists thousands. A queue that is
not in CRIC must give its CEs in the config. Every problem is a :class:`QueueConfigError` naming
the queue and the field. A CRIC URL that cannot be fetched falls back to the last good copy
(the cache file), and says so in :attr:`LoadResult.warnings`.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import ssl
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from act.common.atomic import atomic_write
from act.common.section import Section

log = logging.getLogger(__name__)

#: Longest walltime act asks for when neither CRIC nor the config says (7 days).
DEFAULT_MAX_WALLTIME_MINUTES = 7 * 24 * 60
DEFAULT_PILOT_WRAPPER = "https://cern.ch/atlas-panda-pilot/runpilot2-wrapper.sh"
DEFAULT_PILOT_TARBALL = "https://cern.ch/atlas-panda-pilot/pilot3.tar.gz"
DEFAULT_PANDA_SERVER = "https://pandaserver.cern.ch:25443"

#: CRIC ``status`` values of a queue that takes new jobs (``state`` must be ACTIVE too).
ONLINE_STATUSES = frozenset({"online", "test"})
_FLAVOURS: dict[str, Literal["arc", "condor"]] = {"ARC-CE": "arc", "HTCONDOR-CE": "condor"}


class QueueConfigError(ValueError):
    """A queue's description is unusable; the message names the queue and the field."""

    def __init__(self, queue: str, field_name: str, problem: str) -> None:
        self.queue = queue
        self.field = field_name
        super().__init__(f"queue {queue}: {field_name}: {problem}")


class QueueCESettings(Section):
    """One CE of a queue, as given in the config."""

    flavour: Literal["arc", "condor"]
    endpoint: str = Field(min_length=1)
    ce_queue: str | None = None
    state: str = "ACTIVE"


class QueueSettings(Section):
    """Per-queue settings; every key is optional and, when given, overrides CRIC."""

    state: str | None = None
    status: str | None = None
    cores: int | None = Field(None, ge=1, le=1024)
    max_walltime_minutes: int | None = Field(None, ge=1)
    min_walltime_minutes: int | None = Field(None, ge=1)
    walltime_margin: float | None = Field(None, ge=1.0, le=10.0)
    max_memory_mb: int | None = Field(None, ge=1)
    ces: list[QueueCESettings] | None = None
    truepilot: bool | None = None
    heartbeat_less: bool | None = None
    prod_source_label: str | None = None
    pilot_args: str | None = None
    pilot_tarball: str | None = None
    pilot_wrapper: str | None = None
    panda_server: str | None = None
    max_queued: int | None = Field(None, ge=0)
    max_jobs: int | None = Field(None, ge=0)
    jobs_per_cycle: int | None = Field(None, ge=0)
    log_url_prefix: str | None = None
    queuedata: dict[str, Any] | None = None


class QueuesSettings(Section):
    """The top-level ``queues:`` section."""

    cric_file: str | None = None
    cric_url: str | None = None
    cric_refresh: float = Field(600.0, gt=0)
    cric_cache: str | None = None
    cric_timeout: float = Field(60.0, gt=0)
    ca: str | None = None
    defaults: QueueSettings = QueueSettings()
    serve: dict[str, QueueSettings] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_cric(self) -> QueuesSettings:
        if self.cric_file and self.cric_url:
            raise ValueError("give cric_file or cric_url, not both")
        return self

    @field_validator("cric_url")
    @classmethod
    def _https_only(cls, url: str | None) -> str | None:
        if url is not None and not url.startswith(("https://", "file://")):
            raise ValueError("must be an https:// (or file://) URL")
        return url


@dataclass(frozen=True)
class QueueCE:
    flavour: Literal["arc", "condor"]
    endpoint: str
    ce_queue: str | None
    state: str


@dataclass(frozen=True)
class Queue:
    name: str
    state: str
    online: bool
    cores: int
    max_walltime_minutes: int | None
    max_memory_mb: int | None
    ces: tuple[QueueCE, ...]
    truepilot: bool
    heartbeat_less: bool
    prod_source_label: str
    pilot_args: str
    pilot_tarball: str | None
    pilot_wrapper: str
    max_queued: int
    max_jobs: int
    jobs_per_cycle: int
    log_url_prefix: str | None
    queuedata: dict[str, Any] = field(default_factory=dict)
    #: The PanDA server truepilot jobs talk to (``--url``/``-p`` of the wrapper).
    panda_server: str = DEFAULT_PANDA_SERVER
    #: Shortest walltime act asks for (CRIC ``mintime``); never below an hour (sizing.py).
    min_walltime_minutes: int | None = None
    #: Factor on the job's expected walltime (default 1.5, see act/atlas/translate/sizing.py).
    walltime_margin: float | None = None

    @property
    def analysis(self) -> bool:
        return self.prod_source_label in ("user", "panda")

    def active_ces(self) -> tuple[QueueCE, ...]:
        return tuple(ce for ce in self.ces if ce.state.upper() == "ACTIVE")


_BUILTIN: dict[str, Any] = {
    "state": "ACTIVE",
    "status": "online",
    "cores": 1,
    "max_walltime_minutes": DEFAULT_MAX_WALLTIME_MINUTES,
    "min_walltime_minutes": None,
    "walltime_margin": None,
    "max_memory_mb": None,
    "truepilot": True,
    "heartbeat_less": False,
    "prod_source_label": "managed",
    "pilot_args": "",
    "pilot_tarball": DEFAULT_PILOT_TARBALL,
    "pilot_wrapper": DEFAULT_PILOT_WRAPPER,
    "panda_server": DEFAULT_PANDA_SERVER,
    "max_queued": 100,
    "max_jobs": 5000,
    "jobs_per_cycle": 50,
    "log_url_prefix": None,
    "queuedata": None,
}


def load_queues(
    settings: QueuesSettings,
    *,
    fetch: Callable[[str], bytes] | None = None,
    warnings: list[str] | None = None,
) -> dict[str, Queue]:
    """The queues to serve, by name. Raises QueueConfigError.

    ``fetch`` reads ``cric_url`` (default: urllib with ``ca`` as the only trust anchors when
    given). When it fails and ``cric_cache`` holds an earlier copy, that copy is used and a line
    saying so is logged and appended to ``warnings``. Call it again every ``cric_refresh``
    seconds to follow CRIC.
    """
    cric = _read_cric(settings, fetch or _https_fetcher(settings), warnings)
    queues = {}
    for name, override in settings.serve.items():
        entry = cric.get(name) if cric is not None else None
        if cric is not None and entry is None and override.ces is None:
            raise QueueConfigError(name, "ces", "not in CRIC and no ces given in the config")
        if entry is not None and not isinstance(entry, dict):
            raise QueueConfigError(name, "(CRIC entry)", "must be a JSON object")
        queues[name] = _build(name, entry, settings.defaults, override)
    return queues


def parse_cric(text: str | bytes, origin: str) -> dict[str, Any]:
    """A CRIC pandaqueues document: a JSON object of queue name -> queue object."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as error:
        raise QueueConfigError("(all)", origin, f"not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise QueueConfigError("(all)", origin, "must be a JSON object of queue name -> queue")
    return data


def _read_cric(
    settings: QueuesSettings, fetch: Callable[[str], bytes], warnings: list[str] | None
) -> dict[str, Any] | None:
    if settings.cric_file:
        try:
            text = Path(settings.cric_file).read_bytes()
        except OSError as error:
            raise QueueConfigError(
                "(all)", "queues.cric_file", f"cannot read {settings.cric_file}: {error.strerror}"
            ) from None
        return parse_cric(text, settings.cric_file)
    if not settings.cric_url:
        return None
    url = settings.cric_url
    try:
        body = fetch(url)
        data = parse_cric(body, url)
    except (OSError, QueueConfigError) as error:
        cache = Path(settings.cric_cache) if settings.cric_cache else None
        if cache is None or not cache.exists():
            raise QueueConfigError(
                "(all)", "queues.cric_url", f"cannot use {url} and no cached copy: {error}"
            ) from None
        message = f"CRIC {url} unusable ({error}); using the copy in {cache}"
        log.warning("%s", message)
        if warnings is not None:
            warnings.append(message)
        return parse_cric(cache.read_bytes(), str(cache))
    if settings.cric_cache:
        _write_atomically(Path(settings.cric_cache), body)
    return data


def _https_fetcher(settings: QueuesSettings) -> Callable[[str], bytes]:
    def fetch(url: str) -> bytes:
        # urllib with an explicit context: no environment variable can replace the CA.
        if settings.ca is None:
            context = ssl.create_default_context()
        elif os.path.isdir(settings.ca):
            context = ssl.create_default_context(capath=settings.ca)
        elif os.path.isfile(settings.ca):
            context = ssl.create_default_context(cafile=settings.ca)
        else:  # never fall back to the system CAs because of a typo
            raise FileNotFoundError(f"queues.ca: {settings.ca} does not exist")
        request = urllib.request.Request(url, headers={"Accept": "application/json"})
        with urllib.request.urlopen(
            request, timeout=settings.cric_timeout, context=context
        ) as reply:
            data: bytes = reply.read()
            return data

    return fetch


def _write_atomically(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, body)


def _build(
    name: str,
    cric: Mapping[str, Any] | None,
    defaults: QueueSettings,
    override: QueueSettings,
) -> Queue:
    values: dict[str, Any] = dict(_BUILTIN)
    values.update(defaults.model_dump(exclude_none=True))
    if cric is not None:
        values.update(_from_cric(name, cric))
    values.update(override.model_dump(exclude_none=True))

    ce_list = values.get("ces")
    if ce_list is None:
        raise QueueConfigError(name, "ces", "no CEs: give them in CRIC or under queues.serve")
    ces = tuple(
        ce
        if isinstance(ce, QueueCE)
        else QueueCE(
            flavour=ce["flavour"],
            endpoint=ce["endpoint"],
            ce_queue=ce.get("ce_queue"),
            state=ce.get("state", "ACTIVE"),
        )
        for ce in ce_list
    )
    try:
        shlex.split(values["pilot_args"])
    except ValueError as error:
        raise QueueConfigError(name, "pilot_args", f"not valid shell words: {error}") from None
    for key in ("pilot_wrapper", "pilot_tarball"):
        location = values[key]
        if location is not None and not _is_url(location) and not os.path.isabs(location):
            raise QueueConfigError(name, key, f"{location!r}: give a URL or an absolute path")
    queuedata = dict(cric) if cric is not None else {}
    if values.get("queuedata"):
        queuedata.update(values["queuedata"])
    state = str(values["state"])
    status = str(values["status"])
    return Queue(
        name=name,
        state=state,
        online=state.upper() == "ACTIVE" and status.lower() in ONLINE_STATUSES,
        cores=values["cores"],
        max_walltime_minutes=values["max_walltime_minutes"],
        max_memory_mb=values["max_memory_mb"],
        ces=ces,
        truepilot=values["truepilot"],
        heartbeat_less=values["heartbeat_less"],
        prod_source_label=values["prod_source_label"],
        pilot_args=values["pilot_args"],
        pilot_tarball=values["pilot_tarball"],
        pilot_wrapper=values["pilot_wrapper"],
        max_queued=values["max_queued"],
        max_jobs=values["max_jobs"],
        jobs_per_cycle=values["jobs_per_cycle"],
        log_url_prefix=values["log_url_prefix"],
        queuedata=queuedata,
        panda_server=values["panda_server"],
        min_walltime_minutes=values["min_walltime_minutes"],
        walltime_margin=values["walltime_margin"],
    )


def _is_url(location: str) -> bool:
    return "://" in location


def _from_cric(name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a CRIC pandaqueue entry gives, checked field by field."""
    get = _Getter(name, entry)
    values: dict[str, Any] = {
        "state": get.string("state"),
        "status": get.string("status", default="online"),
        "cores": get.integer("corecount", default=1, minimum=1) or 1,
    }
    maxtime = get.integer("maxtime", default=0, minimum=0)  # seconds
    if maxtime:
        values["max_walltime_minutes"] = min(maxtime // 60, DEFAULT_MAX_WALLTIME_MINUTES)
    mintime = get.integer("mintime", default=0, minimum=0)  # seconds
    if mintime:
        values["min_walltime_minutes"] = max(mintime // 60, 1)
    maxrss = get.integer("maxrss", default=0, minimum=0)
    if maxrss:
        values["max_memory_mb"] = maxrss
    kind = get.string("type", default="production")
    values["prod_source_label"] = "user" if kind == "analysis" else "managed"
    values["truepilot"] = _cric_truepilot(get)
    params = get.mapping("params")
    pilot_args = params.get("pilot_args", entry.get("pilot_args"))
    if pilot_args not in (None, ""):
        if not isinstance(pilot_args, str):
            raise QueueConfigError(name, "params.pilot_args", "must be a string")
        values["pilot_args"] = pilot_args
    ces = []
    raw_ces = entry.get("queues", [])
    if not isinstance(raw_ces, list):
        raise QueueConfigError(name, "queues", "must be a list of CE objects")
    for index, raw in enumerate(raw_ces):
        ce = _cric_ce(name, index, raw)
        if ce is not None:
            ces.append(ce)
    # A CE queue called "default" only when nothing better is listed (aCT's rule).
    named = [ce for ce in ces if ce.ce_queue not in (None, "default")]
    values["ces"] = named or ces
    if not maxtime:
        longest = [
            get.integer_in(raw, "ce_queue_maxwctime", f"queues[{i}].ce_queue_maxwctime")
            for i, raw in enumerate(raw_ces)
        ]
        minutes = max((m for m in longest if m), default=0)
        if minutes:
            values["max_walltime_minutes"] = min(minutes, DEFAULT_MAX_WALLTIME_MINUTES)
    return values


def _cric_truepilot(get: _Getter) -> bool:
    """Native (ARC stages the data) when the copytool is `mv` alone or mv is the read tool."""
    if "is_truepilot" in get.entry and get.entry["is_truepilot"] is not None:
        return get.boolean("is_truepilot")
    copytools = get.mapping("copytools")
    if "mv" not in copytools:
        return True
    acopytools = get.mapping("acopytools")
    readers = acopytools.get("pr", [])
    if not isinstance(readers, list):
        raise QueueConfigError(get.queue, "acopytools.pr", "must be a list")
    return not (len(copytools) == 1 or "mv" in readers)


def _cric_ce(queue: str, index: int, raw: Any) -> QueueCE | None:
    where = f"queues[{index}]"
    if not isinstance(raw, dict):
        raise QueueConfigError(queue, where, "must be an object")
    get = _Getter(queue, raw, prefix=f"{where}.")
    flavour = _FLAVOURS.get(get.string("ce_flavour"))
    endpoint = get.string("ce_endpoint")
    if not endpoint:
        raise QueueConfigError(queue, f"{where}.ce_endpoint", "must not be empty")
    ce_queue = get.string("ce_queue_name", default="") or None
    state = get.string("ce_state", default="ACTIVE")
    if flavour is None:  # CREAM and friends: not a CE act can use
        return None
    return QueueCE(flavour=flavour, endpoint=endpoint, ce_queue=ce_queue, state=state)


class _Getter:
    """Typed access to one CRIC object; a missing or mistyped field names queue and field."""

    _MISSING = object()

    def __init__(self, queue: str, entry: Mapping[str, Any], prefix: str = "") -> None:
        self.queue = queue
        self.entry = entry
        self.prefix = prefix

    def _raw(self, key: str, default: Any) -> Any:
        value = self.entry.get(key, default)
        if value is None and default is not self._MISSING:  # CRIC writes null for "not set"
            value = default
        if value is self._MISSING:
            raise QueueConfigError(self.queue, self.prefix + key, "required field missing")
        return value

    def string(self, key: str, default: Any = _MISSING) -> str:
        value = self._raw(key, default)
        if not isinstance(value, str):
            raise QueueConfigError(
                self.queue, self.prefix + key, f"must be a string (got {value!r})"
            )
        return value

    def integer(self, key: str, *, default: Any = _MISSING, minimum: int = 0) -> int:
        return self.integer_in(self.entry, key, self.prefix + key, default=default, minimum=minimum)

    def integer_in(
        self,
        entry: Any,
        key: str,
        where: str,
        *,
        default: Any = 0,
        minimum: int = 0,
    ) -> int:
        value = entry.get(key, default) if isinstance(entry, dict) else default
        if value is self._MISSING:
            raise QueueConfigError(self.queue, where, "required field missing")
        if value is None:
            value = default if default is not self._MISSING else 0
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise QueueConfigError(
                self.queue, where, f"must be an integer >= {minimum} (got {value!r})"
            )
        return value

    def boolean(self, key: str) -> bool:
        value = self._raw(key, self._MISSING)
        if not isinstance(value, bool):
            raise QueueConfigError(self.queue, self.prefix + key, f"must be true/false ({value!r})")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.entry.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise QueueConfigError(self.queue, self.prefix + key, "must be a JSON object")
        return value
