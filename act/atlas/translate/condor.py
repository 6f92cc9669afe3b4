"""PanDA job -> HTCondor grid-universe submit description (Condor-G to an HTCondor-CE or ARC CE).

Only truepilot queues: the pilot stages its own data, as in aCT (HTCondor cannot stage the
``rucio://`` inputs of a native job). Quoting, so that no value can add a command:

* every value is refused if it holds a control character (a newline would start a new line);
* a ``$`` anywhere is refused: submit macros are expanded (and their results re-expanded), so
  no escape of ``$`` is reliable (``$(DOLLAR)`` next to another ``$`` makes a ``$$()`` macro);
* ``arguments`` and ``environment`` use the new (double-quoted) syntax: ``"`` doubled, a word
  with blanks or ``'`` in single quotes with ``'`` doubled;
* ``+Attr`` strings are ClassAd string literals (``\\`` and ``"`` escaped).

The job's size (:mod:`act.atlas.translate.sizing`) reaches each kind of CE through the attributes
that CE's path really reads:

* **HTCondor-CE** (``grid_resource = condor ...``, Condor-C): the gridmanager copies the job ad to
  the CE's schedd, a ``remote_X`` attribute arriving as ``X`` (htcondor/htcondor
  ``src/condor_gridmanager/condorjob.cpp``, ``CondorJob::buildSubmitAd``). The CE's job router
  (htcondor/htcondor-ce ``config/01-ce-router-defaults.conf``: the ``Cpus``, ``Memory``,
  ``Queue`` and ``BatchRuntime`` transforms; the old route syntax of
  ``src/condor_ce_router_defaults`` alike) sets the routed job's cores from ``xcount``, its
  memory (MB, the whole job) from ``maxMemory``, its batch queue from ``queue`` (our
  ``+remote_queue``) and its ``BatchRuntime`` from ``maxWallTime`` (minutes). ``+MaxRuntime``
  (seconds) is the same wall time for CEs configured the CERN way (as aCT sends it).
* **ARC CE** (``grid_resource = arc <url>``): the gridmanager writes an ADL description itself
  (htcondor/htcondor ``src/condor_gridmanager/arcjob.cpp``, ``ArcJob::buildJobADL``) from only
  these attributes: ``RequestCpus`` (when > 1: ``NumberOfSlots`` and ``SlotsPerHost``),
  ``RequestMemory`` (MB, as ``IndividualPhysicalMemory``: ARC's memory *per slot*, like xRSL's
  ``memory``), ``BatchQueue`` (``QueueName``), ``ArcRte`` (``RuntimeEnvironment``) and the raw
  ADL of ``ArcResources``, ``ArcApplication`` and ``ArcDataStaging``. No wall time comes from
  any attribute (not ``BatchRuntime``, not ``maxWallTime``), so the wall and CPU time go in
  ``arc_resources`` as ADL ``WallTime`` and ``TotalCPUTime`` (seconds), which ARC reads as
  xRSL's ``walltime`` and ``cputime``. ``xcount``, ``maxMemory`` and ``remote_queue`` mean nothing
  there and are not sent. tests/test_condor_classad.py checks that the ADL HTCondor would write
  for act's description gives ARC's parser the cores, memory per slot, times and queue of the
  direct xRSL.

No ``transfer_output_files``: a truepilot pilot sends its own reports to PanDA (``metaData``
included), so act needs none of its files; and a file named there that the pilot did not write
puts the job on hold. What HTCondor brings back by itself (the files the job left in its working
directory) lands in the job's ``initialdir`` and is fetched whole (:mod:`act.condor.outputs`); the
validator reads a ``heartbeat.json`` or ``jobReport.json`` there only for a CE job that failed,
in the places :mod:`act.atlas.pilot_files` names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

from act.atlas.queues import QueueCE
from act.atlas.translate.common import (
    JobInput,
    Plan,
    Translation,
    check_value,
    plan,
)
from act.atlas.translate.errors import TranslationError

HTCONDOR_CE_PORT = 9619
_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?")
#: A queue name HTCondor's ARC grid type can put into its ADL as is (no markup, no blanks).
_ADL_TEXT = re.compile(r"[A-Za-z0-9_.+=:/@-]+")


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


def grid_resource(panda_id: int, ce: QueueCE) -> str:
    endpoint = check_value(panda_id, "ce.endpoint", ce.endpoint)
    if ce.flavour == "arc":
        url = endpoint if "://" in endpoint else f"https://{endpoint}/arex"
        parts = urlsplit(url)
        if parts.scheme != "https" or not _HOST.fullmatch(parts.hostname or ""):
            raise TranslationError(panda_id, "ce.endpoint", f"{endpoint!r} is not an ARC CE URL")
        return f"arc {url}"
    hostport = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.partition(":")
    port = port or str(HTCONDOR_CE_PORT)
    if not _HOST.fullmatch(host) or not port.isdigit():
        raise TranslationError(panda_id, "ce.endpoint", f"{endpoint!r} is not host[:port]")
    return f"condor {host} {host}:{port}"


def _condor_ce_sizing(panda_id: int, p: Plan, ce: QueueCE) -> list[tuple[str, str]]:
    """What an HTCondor-CE's job router reads (module docstring): the whole job's memory."""
    lines = [
        ("request_cpus", str(p.cores)),
        ("request_memory", str(p.memory_mb)),
        ("+xcount", str(p.cores)),
        ("+maxMemory", str(p.memory_mb)),
        ("+maxWallTime", str(p.walltime_minutes)),
        ("+MaxRuntime", str(p.walltime_minutes * 60)),
    ]
    if ce.ce_queue:
        queue_name = check_value(panda_id, "ce.ce_queue", ce.ce_queue)
        lines.append(("+remote_queue", classad_string(queue_name)))
    return lines


def _arc_sizing(panda_id: int, p: Plan, ce: QueueCE) -> list[tuple[str, str]]:
    """What HTCondor's ARC grid type reads (module docstring): the memory per slot, the times as
    ADL in ``arc_resources``."""
    seconds = p.walltime_minutes * 60
    resources = f"<WallTime>{seconds}</WallTime><TotalCPUTime>{seconds * p.cores}</TotalCPUTime>"
    lines = [
        ("request_cpus", str(p.cores)),
        ("request_memory", str(p.memory_per_core_mb)),
        ("arc_resources", resources),
        ("arc_rte", "ENV/PROXY"),
    ]
    if ce.ce_queue:
        queue_name = check_value(panda_id, "ce.ce_queue", ce.ce_queue)
        if not _ADL_TEXT.fullmatch(queue_name):  # buildJobADL writes BatchQueue unescaped
            raise TranslationError(panda_id, "ce.ce_queue", f"{queue_name!r}: not a queue name")
        lines.append(("batch_queue", queue_name))
    return lines


def to_condor(
    job: JobInput,
    ce: QueueCE,
    *,
    input_dir: Path,
    web_dir: Path | None,
    x509_proxy: Path | None = None,
) -> Translation:
    """The submit description for one job on one CE; raises TranslationError.

    ``output``/``error``/``log`` go to ``web_dir`` (``<panda_id>.out``, the GTAG file) or, without
    one, to ``input_dir``. ``x509_proxy`` adds ``x509userproxy``.
    """
    p = plan(job, native_allowed=False)
    panda_id = job.panda_id
    for name, directory in (("input_dir", input_dir), ("web_dir", web_dir)):
        if directory is None:
            continue
        if not directory.is_absolute() or "," in str(directory):
            raise TranslationError(panda_id, name, f"{directory} must be absolute, without ','")
        check_value(panda_id, name, str(directory))
    logs = web_dir or input_dir
    wrapper = check_value(panda_id, "pilot_wrapper", p.queue.pilot_wrapper)
    transfer = [str(input_dir / name) for name in p.files]
    arguments = list(p.arguments)
    lines = [
        ("universe", "grid"),
        ("grid_resource", grid_resource(panda_id, ce)),
    ]
    if "://" in wrapper:
        # HTCondor fetches URLs in transfer_input_files on the worker; the shell runs the result.
        name = Path(urlsplit(wrapper).path).name
        if not name or "," in wrapper:
            raise TranslationError(panda_id, "pilot_wrapper", f"{wrapper!r}: no file name")
        lines += [("executable", "/bin/bash"), ("transfer_executable", "false")]
        transfer.append(wrapper)
        arguments.insert(0, name)
    else:
        if "," in wrapper:
            raise TranslationError(panda_id, "pilot_wrapper", f"{wrapper!r} holds ','")
        lines += [("executable", wrapper), ("transfer_executable", "true")]
    lines += [
        ("arguments", quote_words(arguments)),
        ("environment", quote_words(f"{k}={v}" for k, v in p.environment)),
        ("should_transfer_files", "YES"),
        ("when_to_transfer_output", "ON_EXIT"),
        ("transfer_input_files", ", ".join(transfer)),
        ("output", str(logs / f"{panda_id}.out")),
        ("error", str(logs / f"{panda_id}.err")),
        ("log", str(logs / f"{panda_id}.log")),
    ]
    if x509_proxy is not None:
        lines.append(("x509userproxy", check_value(panda_id, "proxy", str(x509_proxy))))
    lines.append(("priority", str(p.priority)))
    lines += (
        _arc_sizing(panda_id, p, ce) if ce.flavour == "arc" else _condor_ce_sizing(panda_id, p, ce)
    )
    lines += [
        ("+PandaID", str(panda_id)),
        ("+ActAttempt", str(job.attempt)),
        ("+PandaQueue", classad_string(p.queue.name)),
    ]
    for key, value in lines:
        if "$" in value:
            raise TranslationError(panda_id, key, f"'$' cannot be written safely: {value!r}")
    text = "".join(f"{key} = {value}\n" for key, value in lines) + "queue 1\n"
    return Translation(
        description=text,
        files=p.files,
        cores=p.cores,
        walltime_minutes=p.walltime_minutes,
        memory_mb=p.memory_mb,
        priority=p.priority,
    )
