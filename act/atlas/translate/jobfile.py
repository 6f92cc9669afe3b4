"""The job file the pilot reads (``pandaJobData.out``), in the format pilot3 reads in the mode act
starts it in, whichever PanDA API act fetched the job with.

pilot3 (``pilot/control/job.py``, ``get_job_definition_from_file``) reads the file in one of two
ways, and :func:`harvester_mode` decides which from the very arguments and environment act gives
the pilot (:func:`act.atlas.translate.common.plan` calls both), so that the file and the pilot's
mode cannot disagree:

* **normal mode**: ``urllib.parse.parse_qsl`` of the text, i.e. the URL-encoded ``key=value``
  form of the legacy ``getJob`` reply. The legacy server made that reply as
  ``urlencode(Response.data)`` (pandaserver ``jobdispatcher/Protocol.py``), so every value is the
  ``str()`` of a Python value. The ``/api/v1`` job (``pilot/acquire_jobs``) *is* ``Response.data``
  serialised as JSON (pandaserver ``api/v1/pilot_api.py``; a datetime as
  ``{"__datetime__": ISO}``, ``server/panda.py``), so :func:`form_text` renders each JSON value
  back as ``str()`` rendered the Python value: ``null`` -> ``None``, ``true`` -> ``True``,
  numbers as Python prints them, lists and objects as Python literals (pilot3 reads its dict
  fields, e.g. ``pilotSecrets``, with ``ast.literal_eval``). Keys keep their order. A spec stored
  as the legacy URL-encoded reply (``spec_format == "form"``) is that text already and is
  shipped as it is.
* **Harvester mode** (``pilot/util/harvester.py``, ``is_harvester_mode``): JSON,
  ``{"<PandaID>": {...job...}}`` (``parse_job_definition_file``; a flat object makes pilot3 fail
  with a TypeError). act starts the pilot so only for truepilot jobs whose Harvester metadata
  gives ``HARVESTER_ID``/``HARVESTER_WORKER_ID`` (``--harvester-submit-mode PUSH`` is always among
  the arguments), or when a queue's ``pilot_args`` name Harvester files for a pilot that makes no
  server updates (``-z``).

Both texts are plain ASCII (percent-encoding; JSON's ``\\u`` escapes), whatever the locale of the
worker node.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from act.atlas.translate.errors import TranslationError

#: The environment variables that put pilot3 in Harvester mode (with submit mode PUSH).
HARVESTER_VARIABLES = frozenset({"HARVESTER_ID", "HARVESTER_WORKER_ID"})


def _pilot_options() -> argparse.ArgumentParser:
    """The options of pilot3's ``pilot.py`` that ``is_harvester_mode`` reads, declared as
    pilot.py declares them (names, destinations, defaults)."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument(
        "-z", "--noserverupdate", dest="update_server", action="store_false", default=True
    )
    for option in ("workdir", "datadir", "eventstatusdump", "workerattributes"):
        parser.add_argument(f"--harvester-{option}", dest=f"harvester_{option}", default="")
    parser.add_argument("--harvester-submit-mode", dest="harvester_submitmode", default="PULL")
    return parser


_OPTIONS = _pilot_options()


def harvester_mode(arguments: Iterable[str], environment: Iterable[tuple[str, str]]) -> bool:
    """Whether pilot3 started with these arguments and environment runs in Harvester mode: the
    rule of pilot3's ``is_harvester_mode`` (the same in 3.5, 3.7 and 3.11)."""
    args, _others = _OPTIONS.parse_known_args(list(arguments))
    names = {name for name, _value in environment}
    if (args.harvester_workdir or args.harvester_datadir) and not args.update_server:
        return True
    if (args.harvester_eventstatusdump or args.harvester_workerattributes) and (
        not args.update_server
    ):
        return True
    return bool(names & HARVESTER_VARIABLES) and args.harvester_submitmode.lower() == "push"


def legacy_value(value: Any) -> str:
    """A JSON value of an /api/v1 job as the legacy server's ``urlencode`` wrote the Python value
    it came from: its ``str()``."""
    if isinstance(value, str):
        return value
    return str(_python_value(value))


def _python_value(value: Any) -> Any:
    """The Python value the server serialised: JSON's datetime marker back to a datetime."""
    if isinstance(value, dict):
        if set(value) == {"__datetime__"} and isinstance(value["__datetime__"], str):
            try:
                return datetime.fromisoformat(value["__datetime__"])
            except ValueError:
                pass
        return {key: _python_value(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_python_value(item) for item in value]
    return value


def form_text(panda_id: int, spec: Mapping[str, Any]) -> str:
    """The URL-encoded legacy getJob reply for a job given as /api/v1 JSON (see the module
    docstring); raises TranslationError naming a field that cannot be encoded."""
    pairs = []
    for key, value in spec.items():
        try:
            pairs.append(urlencode([(key, legacy_value(value))]))
        except UnicodeEncodeError as error:
            raise TranslationError(panda_id, str(key), f"not encodable: {error}") from None
    return "&".join(pairs)


def harvester_text(panda_id: int, spec: Mapping[str, Any]) -> str:
    """The Harvester job file: ``{"<PandaID>": {...job...}}``, the job's values as PanDA sent
    them."""
    try:
        return json.dumps({str(panda_id): dict(spec)})
    except (TypeError, ValueError) as error:
        raise TranslationError(panda_id, "spec", f"not JSON-serialisable: {error}") from None


def job_file(
    panda_id: int,
    spec: Mapping[str, Any],
    spec_text: str,
    spec_format: str,
    *,
    harvester: bool,
) -> bytes:
    """The bytes of ``pandaJobData.out`` for a pilot in Harvester mode or not (see the module
    docstring). ``spec`` is the parsed job, ``spec_text`` the job as stored (``spec_format``
    "json" or "form"). Raises TranslationError."""
    if harvester:
        text = harvester_text(panda_id, spec)
    elif spec_format == "form":
        text = spec_text
    else:
        text = form_text(panda_id, spec)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise TranslationError(panda_id, "spec_text", f"not encodable: {error}") from None
