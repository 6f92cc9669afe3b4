"""``pandaJobData.out`` as the real pilot3 reads it.

Every file act ships for every translation case (tests/support/translate_cases.py: native and
truepilot, both PanDA APIs, multi-input, "NULL" fields, unicode and quotes, event service,
Harvester mode), made by each translator (ARC xRSL, HTCondor, local), is read by pilot3's own
``get_job_definition_from_file`` and ``JobData`` in pilot3's interpreter, for the harness's
release and an older one (:data:`OLDER_RELEASE`), and what the pilot read is asserted field by
field against what the job says (an oracle written here, not act's code). ``ACT_JOBFILE_TABLE=PATH``
writes the table of what each release read per case (markdown).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest

from act.atlas.translate import JobInput, TranslationError, to_condor, to_xrsl
from act.atlas.translate.common import JOB_SPEC_FILE, plan
from act.atlas.translate.jobfile import form_text, harvester_mode, job_file, legacy_value
from act.atlas.translate.local import to_local
from act.atlas.translator import parse_spec
from tests.support.bridge import as_read_by_the_pilot, bridge_config
from tests.support.panda_real import PandaServer
from tests.support.pilot3 import OLDER_RELEASE, Pilot3, is_harvester_mode, read_job_files
from tests.support.translate_cases import ARC_CE, CONDOR_CE, Case, cases

CASES = cases()
INPUT_DIR = Path("/var/lib/act/jobs/input")
WEB_DIR = Path("/var/www/act/2026-11-22/Q")
LOCAL_WRAPPER = "/opt/act/runpilot2-wrapper.sh"


def shipped(case: Case) -> dict[str, bytes]:
    """The job file each translator that accepts the case ships, by translator."""
    job = case.job
    found = {"arc": to_xrsl(job, ARC_CE, input_dir=INPUT_DIR).files[JOB_SPEC_FILE]}
    if job.queue.truepilot:
        condor = to_condor(job, CONDOR_CE, input_dir=INPUT_DIR, web_dir=WEB_DIR)
        found["condor"] = condor.files[JOB_SPEC_FILE]
    local_queue = replace(job.queue, pilot_wrapper=LOCAL_WRAPPER)
    found["local"] = to_local(replace(job, queue=local_queue), input_dir=INPUT_DIR).files[
        JOB_SPEC_FILE
    ]
    return found


def _listing(raw: Mapping[str, Any], key: str) -> list[str]:
    value = raw.get(key)
    return str(value).split(",") if value not in (None, "") else []


def _checksum(text: str) -> dict[str, str]:
    # pilot3's FileSpec.clean__checksum: "ad:" -> adler32, "md:" -> md5, anything else (even
    # PanDA's "md5:") -> adler32; written out here as the pilot's documented rule.
    kind, _, value = text.partition(":")
    if not value:
        return {"adler32": text}
    return {{"ad": "adler32", "md": "md5"}.get(kind, "adler32"): value}


def expected_raw(job: JobInput, harvester: bool) -> dict[str, Any]:
    """What pilot3's reader must return: the legacy getJob reply's fields (every value the
    ``str()`` of the server's Python value; a form spec's own fields), or in Harvester mode the
    job as PanDA gave it plus ``jobid``."""
    if harvester:
        return {"jobid": str(job.panda_id), **job.spec}
    if job.spec_format == "form":
        return dict(parse_qsl(job.spec_text, keep_blank_values=True))
    # The JSON cases are Python dicts: str() of their values is what the legacy server wrote.
    return {key: value if isinstance(value, str) else str(value) for key, value in job.spec.items()}


def _int(raw: Mapping[str, Any], key: str, default: int = 0) -> int:
    try:
        return int(str(raw.get(key)).strip())
    except ValueError:
        return default


def expected_job(raw: Mapping[str, Any], version: str) -> dict[str, Any]:
    """The JobData fields pilot3 derives from ``raw`` (the fields act must get across)."""
    cores = _int(raw, "coreCount")
    walltime = _int(raw, "maxWalltime") if "maxWalltime" in raw else 0
    return {
        "jobid": str(raw["PandaID"]),
        "taskid": str(raw["taskID"]) if "taskID" in raw else None,
        "attemptnr": _int(raw, "attemptNr"),
        "transformation": str(raw.get("transformation", "")),
        "jobparams": str(raw.get("jobPars", "")).strip(),
        "corecount": cores if cores > 0 else 1,
        "maxcpucount": _int(raw, "maxCpuCount"),
        # maxWalltime is read from pilot3 3.7 on
        "maxwalltime": walltime if version >= "3.7" else None,
        "is_eventservice": str(raw.get("eventService", "")).lower() == "true",
    }


def expected_files(raw: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """pilot3's input, output and log files of ``raw``: comma lists aligned by position."""
    inputs, seen = [], set()
    lfns = _listing(raw, "inFiles")
    for index, lfn in enumerate(lfns):
        if lfn in ("", "NULL") or lfn in seen:
            continue
        seen.add(lfn)
        inputs.append(
            {
                "lfn": lfn,
                "scope": _listing(raw, "scopeIn")[index],
                "guid": _listing(raw, "GUID")[index],
                "filesize": int(_listing(raw, "fsize")[index]),
                "checksum": _checksum(_listing(raw, "checksum")[index]),
                "ddmendpoint": _listing(raw, "ddmEndPointIn")[index],
                "dataset": _listing(raw, "realDatasetsIn")[index],
            }
        )
    outputs, logs = [], []
    out_scopes = iter(_listing(raw, "scopeOut"))
    for index, lfn in enumerate(_listing(raw, "outFiles")):
        is_log = lfn == raw.get("logFile")
        item = {
            "lfn": lfn,
            "scope": raw.get("scopeLog") if is_log else next(out_scopes),
            "ddmendpoint": _listing(raw, "ddmEndPointOut")[index],
            "dataset": _listing(raw, "realDatasets")[index],
        }
        if is_log:
            logs.append({**item, "guid": raw.get("logGUID")})
        else:
            outputs.append(item)
    return {"in": inputs, "out": outputs, "log": logs}


def _read(pilot: Pilot3) -> list[tuple[Case, dict[str, bytes], bool, dict[str, Any]]]:
    rows = []
    for case in CASES:
        files = shipped(case)
        rows.append((case, files, plan(case.job).harvester))
    read = read_job_files(pilot, [(files["arc"], harvester) for _, files, harvester in rows])
    return [(*row, found) for row, found in zip(rows, read, strict=True)]


@pytest.fixture(scope="module", params=["harness", OLDER_RELEASE])
def pilot_release(request: pytest.FixtureRequest) -> Pilot3:
    pilot: Pilot3 = request.getfixturevalue("pilot3")
    if request.param != "harness":
        pilot = request.getfixturevalue("pilot3_release")(request.param)
    return pilot


@pytest.fixture(scope="module")
def readings(pilot_release: Pilot3) -> list[tuple[Case, dict[str, bytes], bool, dict[str, Any]]]:
    return _read(pilot_release)


def test_pilot3_reads_every_field_of_every_job_file(
    pilot_release: Pilot3, readings: list[tuple[Case, dict[str, bytes], bool, dict[str, Any]]]
) -> None:
    for case, files, harvester, found in readings:
        name = f"{case.name} (pilot3 {pilot_release.version})"
        assert len(set(files.values())) == 1, f"{name}: translators ship different job files"
        assert found["raw"] == expected_raw(case.job, harvester), name
        raw = found["raw"]
        wanted = expected_job(raw, pilot_release.version)
        # pilot3's ATLAS user re-quotes an analysis job's parameters: the same words
        assert shlex.split(found["jobparams"]) == shlex.split(wanted.pop("jobparams")), name
        assert {key: found[key] for key in wanted} == wanted, name
        assert found["jobid"] == str(case.job.panda_id)
        if "init_error" in found:
            continue
        files_read = {kind: found[kind] for kind in ("in", "out", "log")}
        for kind, expected in expected_files(raw).items():
            keys = {key for item in expected for key in item}
            assert [{k: f[k] for k in keys} for f in files_read[kind]] == expected, (name, kind)


def test_the_cases_cover_what_the_pilot_must_read(
    readings: list[tuple[Case, dict[str, bytes], bool, dict[str, Any]]],
) -> None:
    """The cases exercise both APIs, both modes, multi-input, NULLs, unicode and quotes."""
    by_name = {case.name: (case, harvester, found) for case, _files, harvester, found in readings}
    assert {c.job.spec_format for c, _, _ in by_name.values()} == {"json", "form"}
    assert {h for _, h, _ in by_name.values()} == {True, False}
    case, harvester, found = by_name["api_v1_multi_input"]
    assert not harvester and case.job.spec_format == "json"
    assert len(found["in"]) == 3 and found["maxcpucount"] == 86400
    assert [f["scope"] for f in found["in"]] == ["data24_13p6TeV", "data24_13p6TeV", "user.tester"]
    assert found["in"][0]["dataset"] == "user.tester:user.tester.Zürich \"quoted\" 'in'.v1"
    assert found["out"][0]["dataset"] == 'data24.AOD.r1 «é» "x"'
    assert 'name="é ü 測試"' in found["jobparams"] and "--extra=a&b=c%20d+e" in found["jobparams"]
    assert found["raw"]["ioIntensity"] == "None" and found["raw"]["loopingCheck"] == "False"
    assert found["corecount"] == 8 and found["attemptnr"] == 2
    _, harvester, found = by_name["analysis_truepilot"]
    assert harvester and found["raw"]["coreCount"] == 1  # Harvester mode keeps JSON types
    _, harvester, found = by_name["legacy_reply_harvester"]
    assert harvester and found["raw"]["coreCount"] == "8"  # a legacy reply's values are text
    _, _, found = by_name["event_service"]
    assert found["is_eventservice"] is True
    _, _, found = by_name["null_fields"]
    assert found["corecount"] == 1 and found["raw"]["inFiles"] == "NULL"
    # logFile "NULL" with a log among outFiles: pilot3 itself cannot pair the scopes (as with the
    # legacy server's reply of the same job)
    assert "scopeOut" in found["init_error"]


def test_no_job_file_is_json_outside_harvester_mode() -> None:
    """pilot3 reads JSON only in Harvester mode (the issue: a JSON file gave one garbage key)."""
    for case in CASES:
        data = shipped(case)["arc"]
        assert data.isascii(), case.name
        if plan(case.job).harvester:
            assert json.loads(data) == {str(case.job.panda_id): dict(case.job.spec)}
        else:
            assert not data.lstrip().startswith(b"{"), case.name
            assert dict(parse_qsl(data.decode(), keep_blank_values=True))["PandaID"] == str(
                case.job.panda_id
            )


def _harvester_runs() -> Iterator[tuple[list[str], dict[str, str]]]:
    for case in CASES:
        p = plan(case.job)
        arguments = list(p.arguments)
        # pilot 3.7 refuses some resource types act passes today (the sizing work's concern);
        # the mode does not depend on it
        arguments[arguments.index("--resource-type") + 1] = "MCORE"
        yield arguments, dict(p.environment)
    base = ["-q", "Q", "--pilot-user", "ATLAS", "-w", "generic"]
    yield [*base, "--harvester-submit-mode", "PUSH"], {"HARVESTER_WORKER_ID": "5"}
    yield [*base, "--harvester-submit-mode", "pull"], {"HARVESTER_ID": "h"}
    yield base, {"HARVESTER_ID": "h"}
    yield [*base, "-z", "--harvester-workdir", "/w"], {}
    yield [*base, "--harvester-datadir=/d"], {}
    yield [*base, "--noserverupdate", "--harvester-workerattributes", "w.json"], {}
    yield [*base, "-z", "--harvester-eventstatusdump=e.json"], {}
    yield (
        [*base, "--harvester-submit-mode", "PUSH", "--harvester-submit-mode", "PULL"],
        {"HARVESTER_ID": "h"},
    )


def test_the_mode_act_writes_for_is_the_mode_pilot3_runs_in(pilot_release: Pilot3) -> None:
    """act's harvester_mode gives pilot3's own is_harvester_mode (pilot.py's real parser) for
    the arguments and environment of every case and for every option that switches it."""
    runs = list(_harvester_runs())
    found = is_harvester_mode(pilot_release, runs)
    mine = [harvester_mode(arguments, environment.items()) for arguments, environment in runs]
    assert found == mine
    assert True in mine and False in mine


def test_act_enters_harvester_mode_only_for_truepilot_jobs_with_harvester_metadata() -> None:
    for case in CASES:
        has_ids = bool(
            case.job.metadata.get("harvesterid") or case.job.metadata.get("harvesterworkerid")
        )
        assert plan(case.job).harvester == (case.job.queue.truepilot and has_ids), case.name
    native = next(c for c in CASES if not c.job.queue.truepilot).job
    with_ids = replace(native, metadata={"harvesterid": "h", "harvesterworkerid": 1})
    assert not plan(with_ids).harvester  # native: no HARVESTER_ID is set


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ("text é", "text é"),
        ("NULL", "NULL"),
        (None, "None"),
        (True, "True"),
        (False, "False"),
        (0, "0"),
        (-12, "-12"),
        (1.5, "1.5"),
        (1e16, "1e+16"),
        ([1, "a", None], "[1, 'a', None]"),
        ({"a": True, "b": {"c": [None]}}, "{'a': True, 'b': {'c': [None]}}"),
        ({"__datetime__": "2026-11-22T10:20:30.123456"}, "2026-11-22 10:20:30.123456"),
        ({"__datetime__": "not a date"}, "{'__datetime__': 'not a date'}"),
    ],
)
def test_json_values_are_written_as_the_legacy_server_wrote_them(value: Any, text: str) -> None:
    # the JSON round trip the value took from the server's Python to act
    assert legacy_value(json.loads(json.dumps(value))) == text


def test_key_order_and_every_key_survive_the_form() -> None:
    spec = {"StatusCode": 0, "PandaID": 5, "z": "1", "a&b=c": "x=y&z", "": "", "nSent": 1}
    text = form_text(5, spec)
    assert parse_qsl(text, keep_blank_values=True) == [
        ("StatusCode", "0"), ("PandaID", "5"), ("z", "1"), ("a&b=c", "x=y&z"), ("", ""),
        ("nSent", "1"),
    ]  # fmt: skip


def test_a_value_that_cannot_be_encoded_names_the_panda_id_and_field() -> None:
    with pytest.raises(TranslationError) as error:
        job_file(9, {"PandaID": 9, "jobPars": "bad \udc80"}, "", "json", harvester=False)
    assert (error.value.panda_id, error.value.field) == (9, "jobPars")
    with pytest.raises(TranslationError) as error:
        job_file(9, {"PandaID": "9"}, "PandaID=9&x=\udc80", "form", harvester=False)
    assert error.value.field == "spec_text"


def test_a_form_spec_is_shipped_as_stored() -> None:
    case = next(c for c in CASES if c.name == "legacy_reply_truepilot")
    assert shipped(case)["arc"] == case.job.spec_text.encode()


def test_the_stored_spec_round_trips_through_the_translator_parse() -> None:
    for case in CASES:
        if case.job.spec_format == "json":
            assert parse_spec(case.job.spec_text, "json") == case.job.spec


def test_pilot3_has_no_reader_for_shipped_event_ranges(pilot_release: Pilot3) -> None:
    """act ships eventranges.json as aCT did; pilot3 never opens it: its event service asks
    PanDA for ranges (getEventRanges) through its only communicator plugin."""
    found = pilot_release.call(
        """
        import pathlib, pilot
        from pilot.eventservice.communicationmanager import plugins
        root = pathlib.Path(pilot.__file__).parent
        RESULT = {
            "mentions": sorted(
                str(p.relative_to(root)) for p in root.rglob("*")
                if p.is_file() and b"eventranges.json" in p.read_bytes().lower()
            ),
            "communicators": sorted(
                p.stem for p in pathlib.Path(plugins.__file__).parent.glob("*communicator.py")
            ),
            "asks_panda": "getEventRanges" in (
                pathlib.Path(plugins.__file__).parent / "pandacommunicator.py"
            ).read_text(),
        }
        """
    )
    assert found == {
        "mentions": [],
        "communicators": ["basecommunicator", "pandacommunicator"],
        "asks_panda": True,
    }


def _table(
    version: str, readings: list[tuple[Case, dict[str, bytes], bool, dict[str, Any]]]
) -> str:
    lines = [
        f"pilot3 {version}",
        "",
        "| case | API | mode | jobid | taskid | attemptnr | corecount | maxwalltime "
        "| inputs (lfn scope guid fsize checksum ddmendpoint) | outputs (lfn scope) "
        "| log (lfn scope guid) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, _files, harvester, found in readings:
        api = "/api/v1 JSON" if case.job.spec_format == "json" else "legacy form"
        ins = "; ".join(
            " ".join(str(f[k]) for k in ("lfn", "scope", "guid", "filesize", "checksum"))
            + f" {f['ddmendpoint']}"
            for f in found.get("in", [])
        )
        outs = "; ".join(f"{f['lfn']} {f['scope']}" for f in found.get("out", []))
        logs = "; ".join(f"{f['lfn']} {f['scope']} {f['guid']}" for f in found.get("log", []))
        lines.append(
            f"| {case.name} | {api} | {'Harvester' if harvester else 'normal'} | "
            f"{found['jobid']} | {found['taskid']} | {found['attemptnr']} | {found['corecount']} | "
            f"{found['maxwalltime']} | {ins or '-'} | {outs or '-'} | "
            f"{logs or found.get('init_error', '-')} |"
        )
    return "\n".join(lines) + "\n\n"


def test_write_the_table_when_asked(
    pilot_release: Pilot3, readings: list[tuple[Case, dict[str, bytes], bool, dict[str, Any]]]
) -> None:
    target = os.environ.get("ACT_JOBFILE_TABLE")
    text = _table(pilot_release.version, readings)
    assert "| api_v1_multi_input | /api/v1 JSON | normal | 7009 | 40001 | 2 | 8 |" in text
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(text)


@pytest.mark.panda
def test_a_job_from_the_real_panda_server_reaches_pilot3_whole(
    bridge_for: Any, panda_server: PandaServer, panda_queue: str, tmp_path: Path, pilot3: Pilot3
) -> None:
    """The real server's /api/v1 job, fetched and translated by act's daemons, read by pilot3:
    every field the server sent, and the files as the server's own tables hold them."""
    parameters = "-c 'echo \"é 測試\" a&b=c%20d+e' --x=\"{'k': [1]}\""
    (panda_id,) = panda_server.add_jobs(
        panda_queue, parameters=parameters, inputs=3, core_count=8, ram_mb=16000, walltime_s=7200
    )
    bridge = bridge_for(bridge_config(tmp_path, panda_server, panda_queue))
    bridge.run("panda_fetcher", "translator")
    job = bridge.job(panda_id)
    assert (job.state, job.spec_format) == ("queued", "json")
    shipped = tmp_path / "root" / "jobs" / str(panda_id) / "input" / JOB_SPEC_FILE
    (found,) = read_job_files(pilot3, [(shipped.read_bytes(), False)])
    assert found["raw"] == as_read_by_the_pilot(job.spec)
    assert found["raw"]["ioIntensity"] == "None"  # JSON null, as the legacy reply wrote it
    assert (found["jobid"], found["taskid"], found["attemptnr"]) == (str(panda_id), "4242", 1)
    assert (found["corecount"], found["maxwalltime"], found["transformation"]) == (
        8,
        7200,
        "/bin/bash",
    )
    assert shlex.split(found["jobparams"]) == shlex.split(parameters)  # pilot3 re-quotes
    files = panda_server.files(panda_id)
    inputs = sorted((f for f in files if f["type"] == "input"), key=lambda f: f["lfn"])
    assert [
        (f["lfn"], f["scope"], f["guid"], f["filesize"], f["checksum"]) for f in found["in"]
    ] == [
        (f["lfn"], f["scope"], f["guid"], int(f["fsize"]), {"adler32": "0a1b2c3d"}) for f in inputs
    ]
    (log,) = (f for f in files if f["type"] == "log")
    (output,) = (f for f in files if f["type"] == "output")
    assert [(f["lfn"], f["scope"], f["guid"]) for f in found["log"]] == [
        (log["lfn"], "act_test", log["guid"])
    ]
    assert [(f["lfn"], f["scope"]) for f in found["out"]] == [(output["lfn"], "act_test")]
