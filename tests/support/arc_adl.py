"""TEST DOUBLE of one HTCondor function: ``ArcJob::buildJobADL()`` (htcondor/htcondor,
``src/condor_gridmanager/arcjob.cpp``), the code that turns the job ClassAd of a Condor-G job with
``grid_resource = arc <url>`` into the ADL (EMI-ES activity description) the gridmanager posts to
the ARC CE's REST interface. No gridmanager can run here (no HTCondor daemons: Debian has no
package, the PyPI wheels ship none), so this follows that function statement by statement, in its
order, on the job ad that the real ``htcondor<25`` makes from act's submit description
(``tests/support/htcondor24_jobs.py``); the ADL it returns is then parsed by ARC's own parser
(``tests/support/arc_parse.py``). Each step names the attribute the source reads.

What the source reads, and nothing else (checked against the version that iterates with
``StringTokenIterator`` and appends ``ArcDataStaging``):

* ``Iwd`` (required: without it the function fails);
* ``Cmd`` through ``GetJobExecutable`` and ``TransferExecutable`` (default true: the path's
  base name, else the path) -> ``<Executable><Path>``;
* the arguments (``Arguments`` in the new syntax, else ``Args``) -> one ``<Argument>`` each;
* ``In``, ``Out``, ``Err`` (unless the null file) -> ``<Input>`` (base name), ``<Output>``
  ``_arc_stdout``, ``<Error>`` ``_arc_stderr``;
* the environment (``Environment``, else ``Env``) -> ``<Environment><Name>/<Value>``;
* ``ArcApplication``: raw XML appended inside ``<Application>``;
* ``ArcResources``: raw XML, the start of ``<Resources>``;
* ``RequestCpus`` only when > 1 -> ``<NumberOfSlots>`` and ``<SlotsPerHost>`` (inside the
  ``<SlotRequirement>`` of ArcResources if it has one, else a new one);
* ``RequestMemory`` (MB) -> ``<IndividualPhysicalMemory>`` in bytes (x 1024 x 1024), unless
  ArcResources already holds an ``<IndividualPhysicalMemory>``;
* ``BatchQueue`` -> ``<QueueName>``;
* ``ArcRte`` (comma list; in each, blank-separated name and options) -> ``<RuntimeEnvironment>``;
* ``TransferInput`` (+ the executable when transferred, + ``In`` when ``TransferIn``) ->
  ``<InputFile>``; ``TransferOutput`` (+ stdout/stderr names when ``TransferOut``/``TransferErr``)
  -> ``<OutputFile>``; ``ArcDataStaging``: raw XML at the end of ``<DataStaging>``.

It reads no wall time, CPU time, ``BatchRuntime``, ``maxWallTime``, ``xcount``, ``maxMemory`` or
``remote_queue``: a wall time reaches an ARC CE only inside ``ArcResources``.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

NULL_FILE = "/dev/null"
REMOTE_STDOUT_NAME = "_arc_stdout"
REMOTE_STDERR_NAME = "_arc_stderr"
ADL_NS = "http://www.eu-emi.eu/es/2010/12/adl"
NG_ADL_NS = "http://www.nordugrid.org/es/2011/12/nordugrid-adl"


class BuildError(ValueError):
    """Where buildJobADL returns false (the gridmanager then holds the job)."""


def escape_xml(text: str) -> str:
    """arcjob.cpp's escapeXML: only ``<``, ``>`` and ``&`` are replaced."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def split_v2(raw: str) -> list[str]:
    """HTCondor's new (V2) argument/environment syntax as stored in a job ad: blanks separate
    words; single quotes group, and inside them ``''`` is one literal quote."""
    words: list[str] = []
    word, started, quoted, i = "", False, False, 0
    while i < len(raw):
        char = raw[i]
        if char == "'":
            if quoted and raw[i + 1 : i + 2] == "'":
                word, i = word + "'", i + 2
                continue
            quoted, started, i = not quoted, True, i + 1
            continue
        if char in " \t" and not quoted:
            if started:
                words.append(word)
            word, started, i = "", False, i + 1
            continue
        word, started, i = word + char, True, i + 1
    if quoted:
        raise BuildError(f"unbalanced quote in {raw!r}")
    if started:
        words.append(word)
    return words


def _arguments(ad: Mapping[str, Any]) -> list[str]:
    """ArgList::AppendArgsFromClassAd: the new-syntax ``Arguments``, else the old ``Args``."""
    if "Arguments" in ad:
        return split_v2(str(ad["Arguments"]))
    if "Args" in ad:
        return str(ad["Args"]).split()
    return []


def _environment(ad: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Env::MergeFrom: the new-syntax ``Environment``, else the old ``Env`` (``;``-separated)."""
    if "Environment" in ad:
        entries = split_v2(str(ad["Environment"]))
    elif "Env" in ad:
        entries = [e for e in str(ad["Env"]).split(";") if e]
    else:
        entries = []
    pairs = []
    for entry in entries:
        name, sep, value = entry.partition("=")
        if not sep:
            raise BuildError(f"environment entry {entry!r} has no '='")
        pairs.append((name, value))
    return pairs


def _executable(ad: Mapping[str, Any]) -> str:
    """GetJobExecutable: ``Cmd``, made absolute against ``Iwd`` when relative."""
    cmd = str(ad["Cmd"])
    return cmd if cmd.startswith("/") else posixpath.join(str(ad["Iwd"]), cmd)


def _flag(ad: Mapping[str, Any], name: str) -> bool:
    """LookupBool with the source's default true."""
    value = ad.get(name, True)
    return value if isinstance(value, bool) else bool(value)


def _is_url(name: str) -> bool:
    scheme, sep, _ = name.partition("://")
    return bool(sep) and scheme.replace("+", "").isalnum()


def stage_in_list(ad: Mapping[str, Any]) -> list[str]:
    """buildStageInList(with_urls=true)."""
    iwd = str(ad.get("Iwd", ""))
    if len(iwd) > 1 and not iwd.endswith("/"):
        iwd += "/"
    files = [f.strip() for f in str(ad.get("TransferInput", "")).split(",") if f.strip()]
    if _flag(ad, "TransferExecutable"):
        executable = _executable(ad)
        if executable not in files:
            files.append(executable)
    stdin = str(ad.get("In", NULL_FILE))
    if _flag(ad, "TransferIn") and stdin != NULL_FILE and stdin not in files:
        files.append(stdin)
    return [f if f.startswith("/") or _is_url(f) else iwd + f for f in files]


def stage_out_list(ad: Mapping[str, Any]) -> list[str]:
    """buildStageOutList."""
    files = [f.strip() for f in str(ad.get("TransferOutput", "")).split(",") if f.strip()]
    for flag, attribute, name in (
        ("TransferOut", "Out", REMOTE_STDOUT_NAME),
        ("TransferErr", "Err", REMOTE_STDERR_NAME),
    ):
        path = str(ad.get(attribute, NULL_FILE))
        if _flag(ad, flag) and path != NULL_FILE and name not in files:
            files.append(name)
    return files


def build_job_adl(ad: Mapping[str, Any], delegation_id: str = "") -> str:
    """The ADL ``ArcJob::buildJobADL`` writes for the job ad ``ad`` (attribute -> value)."""
    if "Iwd" not in ad:
        raise BuildError("Iwd not defined")
    adl = [
        '<?xml version="1.0"?>',
        f'<ActivityDescription xmlns="{ADL_NS}" xmlns:ng-adl="{NG_ADL_NS}">',
        "<Application>",
    ]
    executable = _executable(ad)
    transfer_exec = _flag(ad, "TransferExecutable")
    path = posixpath.basename(executable) if transfer_exec else executable
    adl.append(f"<Executable><Path>{escape_xml(path)}</Path>")
    adl += [f"<Argument>{escape_xml(arg)}</Argument>" for arg in _arguments(ad)]
    adl.append("</Executable>")
    if "In" in ad and str(ad["In"]) != NULL_FILE:
        adl.append(f"<Input>{escape_xml(posixpath.basename(str(ad['In'])))}</Input>")
    if "Out" in ad and str(ad["Out"]) != NULL_FILE:
        adl.append(f"<Output>{REMOTE_STDOUT_NAME}</Output>")
    if "Err" in ad and str(ad["Err"]) != NULL_FILE:
        adl.append(f"<Error>{REMOTE_STDERR_NAME}</Error>")
    for name, value in _environment(ad):
        adl.append(
            f"<Environment><Name>{escape_xml(name)}</Name>"
            f"<Value>{escape_xml(value)}</Value></Environment>"
        )
    if "ArcApplication" in ad:
        adl.append(str(ad["ArcApplication"]))
    adl.append("</Application>")

    # <Resources>: ArcResources first, then what the standard attributes add.
    resources = str(ad.get("ArcResources", ""))
    cpus = ad.get("RequestCpus")
    if isinstance(cpus, int) and not isinstance(cpus, bool) and cpus > 1:
        slot_req = f"<NumberOfSlots>{cpus}</NumberOfSlots><SlotsPerHost>{cpus}</SlotsPerHost>"
        at = resources.find("</SlotRequirement>")
        if at < 0:
            resources += f"<SlotRequirement>{slot_req}</SlotRequirement>"
        else:
            resources = resources[:at] + slot_req + resources[at:]
    memory = ad.get("RequestMemory")
    if (
        isinstance(memory, int)
        and not isinstance(memory, bool)
        and "<IndividualPhysicalMemory>" not in resources
    ):
        resources += f"<IndividualPhysicalMemory>{memory * 1024 * 1024}</IndividualPhysicalMemory>"
    if "BatchQueue" in ad:
        resources += f"<QueueName>{ad['BatchQueue']}</QueueName>"
    if "ArcRte" in ad:
        for rte in (r for r in str(ad["ArcRte"]).split(",") if r.strip()):
            name, *options = rte.split()
            resources += f"<RuntimeEnvironment><Name>{name}</Name>"
            resources += "".join(f"<Option>{option}</Option>" for option in options)
            resources += "</RuntimeEnvironment>"
    adl.append(f"<Resources>{resources}</Resources>")

    adl.append("<DataStaging>")
    if delegation_id:
        adl.append(f"<ng-adl:DelegationID>{escape_xml(delegation_id)}</ng-adl:DelegationID>")
    for file in stage_in_list(ad):
        entry = f"<InputFile><Name>{escape_xml(posixpath.basename(file))}</Name>"
        if transfer_exec and file == executable:
            entry += "<IsExecutable>true</IsExecutable>"
        adl.append(entry + "</InputFile>")
    for file in stage_out_list(ad):
        adl.append(f"<OutputFile><Name>{escape_xml(posixpath.basename(file))}</Name></OutputFile>")
    if "ArcDataStaging" in ad:
        adl.append(str(ad["ArcDataStaging"]))
    adl.append("</DataStaging></ActivityDescription>")
    return "".join(adl)
