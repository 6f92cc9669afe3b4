"""PanDA job -> HTCondor grid-universe submit description (Condor-G to an HTCondor-CE or ARC CE).

Only truepilot queues: the pilot stages its own data, as in aCT (HTCondor cannot stage the
``rucio://`` inputs of a native job). Quoting, so that no value can add a command:

* every value is refused if it holds a control character (a newline would start a new line);
* a ``$`` anywhere is refused: submit macros are expanded (and their results re-expanded), so
  no escape of ``$`` is reliable (``$(DOLLAR)`` next to another ``$`` makes a ``$$()`` macro);
* ``arguments`` and ``environment`` use the new (double-quoted) syntax: ``"`` doubled, a word
  with blanks or ``'`` in single quotes with ``'`` doubled;
* ``+Attr`` strings are ClassAd string literals (``\\`` and ``"`` escaped).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from act.atlas.queues import QueueCE
from act.atlas.translate.common import (
    JobInput,
    Translation,
    TranslationError,
    check_value,
    plan,
)

HTCONDOR_CE_PORT = 9619
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")


def _word(word: str) -> str:
    word = word.replace('"', '""')
    if not word or any(c in word for c in " \t'"):
        word = "'" + word.replace("'", "''") + "'"
    return word


def quote_words(words: Iterable[str]) -> str:
    """The new-syntax value of ``arguments`` or ``environment``."""
    return '"' + " ".join(_word(w) for w in words) + '"'


def classad_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def grid_resource(pandaid: int, ce: QueueCE) -> str:
    endpoint = check_value(pandaid, "ce.endpoint", ce.endpoint)
    if ce.flavour == "arc":
        url = endpoint if "://" in endpoint else f"https://{endpoint}/arex"
        parts = urlsplit(url)
        if parts.scheme != "https" or not _HOST.fullmatch(parts.hostname or ""):
            raise TranslationError(pandaid, "ce.endpoint", f"{endpoint!r} is not an ARC CE URL")
        return f"arc {url}"
    hostport = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.partition(":")
    port = port or str(HTCONDOR_CE_PORT)
    if not _HOST.fullmatch(host) or not port.isdigit():
        raise TranslationError(pandaid, "ce.endpoint", f"{endpoint!r} is not host[:port]")
    return f"condor {host} {host}:{port}"


def to_condor(
    job: JobInput,
    ce: QueueCE,
    *,
    input_dir: Path,
    web_dir: Path | None,
    x509_proxy: Path | None = None,
) -> Translation:
    """The submit description for one job on one CE; raises TranslationError.

    ``output``/``error``/``log`` go to ``web_dir`` (``<pandaid>.out``, the GTAG file) or, without
    one, to ``input_dir``. ``x509_proxy`` adds ``x509userproxy``.
    """
    p = plan(job, native_allowed=False)
    pandaid = job.pandaid
    for name, directory in (("input_dir", input_dir), ("web_dir", web_dir)):
        if directory is None:
            continue
        if not directory.is_absolute() or "," in str(directory):
            raise TranslationError(pandaid, name, f"{directory} must be absolute, without ','")
        check_value(pandaid, name, str(directory))
    logs = web_dir or input_dir
    wrapper = check_value(pandaid, "pilot_wrapper", p.queue.pilot_wrapper)
    transfer = [str(input_dir / name) for name in p.files]
    arguments = list(p.arguments)
    lines = [
        ("universe", "grid"),
        ("grid_resource", grid_resource(pandaid, ce)),
    ]
    if "://" in wrapper:
        # HTCondor fetches URLs in transfer_input_files on the worker; the shell runs the result.
        name = Path(urlsplit(wrapper).path).name
        if not name or "," in wrapper:
            raise TranslationError(pandaid, "pilot_wrapper", f"{wrapper!r}: no file name")
        lines += [("executable", "/bin/bash"), ("transfer_executable", "false")]
        transfer.append(wrapper)
        arguments.insert(0, name)
    else:
        if "," in wrapper:
            raise TranslationError(pandaid, "pilot_wrapper", f"{wrapper!r} holds ','")
        lines += [("executable", wrapper), ("transfer_executable", "true")]
    lines += [
        ("arguments", quote_words(arguments)),
        ("environment", quote_words(f"{k}={v}" for k, v in p.environment)),
        ("should_transfer_files", "YES"),
        ("when_to_transfer_output", "ON_EXIT"),
        ("transfer_input_files", ", ".join(transfer)),
        ("output", str(logs / f"{pandaid}.out")),
        ("error", str(logs / f"{pandaid}.err")),
        ("log", str(logs / f"{pandaid}.log")),
    ]
    if x509_proxy is not None:
        lines.append(("x509userproxy", check_value(pandaid, "proxy", str(x509_proxy))))
    lines += [
        ("priority", str(p.priority)),
        ("request_cpus", str(p.cores)),
        ("request_memory", str(p.memory_mb)),
        ("+xcount", str(p.cores)),
        ("+maxMemory", str(p.memory_mb)),
        ("+maxWallTime", str(p.walltime_minutes)),
        ("+MaxRuntime", str(p.walltime_minutes * 60)),
        ("+PandaID", str(pandaid)),
        ("+ActAttempt", str(job.attempt)),
        ("+PandaQueue", classad_string(p.queue.name)),
    ]
    if ce.ce_queue:
        queue_name = check_value(pandaid, "ce.ce_queue", ce.ce_queue)
        lines.append(("+remote_queue", classad_string(queue_name)))
    if ce.flavour == "arc":
        lines.append(("arc_rte", "ENV/PROXY"))
    for key, value in lines:
        if "$" in value:
            raise TranslationError(pandaid, key, f"'$' cannot be written safely: {value!r}")
    text = "".join(f"{key} = {value}\n" for key, value in lines) + "queue 1\n"
    return Translation(
        description=text,
        files=p.files,
        cores=p.cores,
        walltime_minutes=p.walltime_minutes,
        memory_mb=p.memory_mb,
        priority=p.priority,
    )
