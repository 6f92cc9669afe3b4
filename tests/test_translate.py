"""PanDA job -> xRSL / HTCondor submit description.

Golden files pin the exact output (``UPDATE_GOLDEN=1`` rewrites them); every xRSL is parsed by
ARC's real parser (Debian's python3-nordugrid-arc, in one /usr/bin/python3 subprocess) and
every submit description by the real htcondor2.Submit.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import htcondor2
import pytest

from act.atlas.queues import QueueCE
from act.atlas.translate import JobInput, Translation, TranslationError, to_condor, to_xrsl
from act.atlas.translate.common import RUCIO_REPLICAS, plan, priority
from act.atlas.translate.spec import Spec
from tests.support.translate_cases import ARC_CE, CONDOR_CE, NATIVE, Case, cases

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden" / "translate"
ARC_PARSE = REPO / "tests" / "support" / "arc_parse.py"
WEB = Path("/var/www/act/jobs/2026-11-22")
CASES = cases()
ARC_VIA_CONDOR = QueueCE(
    flavour="arc", endpoint="arc.example.org", ce_queue="mcore", state="ACTIVE"
)


def _input_dir(job: JobInput) -> Path:
    return Path(f"/var/lib/act/inputs/{job.panda_id}")


def _xrsl(job: JobInput, ce: QueueCE = ARC_CE) -> Translation:
    return to_xrsl(job, ce, input_dir=_input_dir(job))


def _condor(job: JobInput, ce: QueueCE = CONDOR_CE) -> Translation:
    return to_condor(job, ce, input_dir=_input_dir(job), web_dir=WEB)


def _summary(translation: Translation) -> str:
    files = {name: content.decode("utf-8") for name, content in translation.files.items()}
    data = {
        "cores": translation.cores,
        "walltime_minutes": translation.walltime_minutes,
        "memory_mb": translation.memory_mb,
        "priority": translation.priority,
        "files": files,
    }
    return json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def _outputs(case: Case) -> dict[str, str]:
    xrsl = _xrsl(case.job)
    out = {f"{case.name}.xrsl": xrsl.description, f"{case.name}.json": _summary(xrsl)}
    if case.job.queue.truepilot:
        out[f"{case.name}.sub"] = _condor(case.job).description
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_output_matches_the_golden_files(case: Case) -> None:
    produced = _outputs(case)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for stale in GOLDEN.glob(f"{case.name}.*"):
            stale.unlink()
        for name, text in produced.items():
            (GOLDEN / name).write_text(text, encoding="utf-8")
    stored = {p.name: p.read_text(encoding="utf-8") for p in GOLDEN.glob(f"{case.name}.*")}
    assert sorted(stored) == sorted(produced), "golden files missing: run with UPDATE_GOLDEN=1"
    for name, text in produced.items():
        assert text == stored[name], f"{name} differs from tests/golden/translate/{name}"


def _arc_parse(texts: list[str]) -> list[dict[str, Any]]:
    done = subprocess.run(
        ["/usr/bin/python3", str(ARC_PARSE)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (
        f"ARC parser failed (run tests/harness/ensure-arc-python): {done.stderr}"
    )
    results: list[dict[str, Any]] = json.loads(done.stdout)
    assert len(results) == len(texts)
    return results


def test_every_xrsl_is_accepted_by_the_real_arc_parser() -> None:
    jobs = [case.job for case in CASES]
    translations = [_xrsl(job) for job in jobs]
    parsed = _arc_parse([t.description for t in translations])
    for job, translation, fields in zip(jobs, translations, parsed, strict=True):
        assert "error" not in fields, (job.panda_id, fields, translation.description)
        p = plan(job)
        assert fields["executable"] == "runpilot2-wrapper.sh"
        assert fields["arguments"] == list(p.arguments)
        assert fields["slots"] == translation.cores
        assert fields["slots_per_host"] == (translation.cores if translation.cores > 1 else -1)
        assert fields["memory"] == translation.memory_mb // translation.cores
        assert fields["walltime_seconds"] == translation.walltime_minutes * 60
        assert fields["cputime_seconds"] == translation.walltime_minutes * 60 * translation.cores
        assert fields["priority"] == translation.priority
        assert fields["queue"] == "grid"
        assert fields["jobname"] == p.job_name
        environment = dict(fields["environment"])
        assert environment["GTAG"] == job.log_url
        assert environment["PILOT_NOKILL"] == "YES"
        inputs = {name: sources for name, sources in fields["inputs"]}
        for name in translation.files:
            assert inputs[name] == [f"file:{_input_dir(job) / name}"]
        assert "runpilot2-wrapper.sh" in inputs
        outputs = [name for name, _ in fields["outputs"]]
        # the pilot's stdout first: A-REX keeps only what outputfiles names (the web area's log)
        assert outputs[0] == fields["stdout"] == p.stdout_name != p.log_file
        if job.queue.truepilot:
            assert outputs == [p.stdout_name]
            assert set(inputs) == {*translation.files, "runpilot2-wrapper.sh"}
        else:
            es = ["event_status.dump.json"] if job.event_ranges is not None else []
            reports = [
                "output.list",
                f"PanDA_Pilot-{job.panda_id}/jobReport.json",
                "jobReport.json",
            ]
            assert outputs[1:] == ["heartbeat.json", p.log_file, *es, *reports, "@output.list"]
            assert "pilot3.tar.gz" in inputs and "queuedata.json" in inputs
            for lfn in job.spec["inFiles"].split(",") if p.inputs else []:
                (source,) = inputs[lfn]
                assert source.startswith("rucio://rucio-lb-prod.cern.ch") and source.endswith(lfn)


def test_the_arc_parser_reads_hostile_values_literally() -> None:
    hostile = 'a") (executable="/bin/evil") ("x'
    job = replace(
        CASES[0].job,
        spec={**CASES[0].job.spec, "jobName": hostile},
        log_url='https://x.example.org/"(q)"/é',
    )
    (fields,) = _arc_parse([_xrsl(job).description])
    assert fields["jobname"] == hostile
    assert fields["executable"] == "runpilot2-wrapper.sh"
    assert dict(fields["environment"])["GTAG"] == 'https://x.example.org/"(q)"/é'


def _condor_words(value: str) -> list[str]:
    """HTCondor's documented new argument syntax, parsed independently of the code under test."""
    assert value.startswith('"') and value.endswith('"')
    body, words, word, quoted, i, started = value[1:-1], [], "", False, 0, False
    while i < len(body):
        char = body[i]
        if char == '"' and body[i : i + 2] == '""':
            word, started, i = word + '"', True, i + 2
            continue
        if char == "'":
            if quoted and body[i : i + 2] == "''":
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
    if started:
        words.append(word)
    return words


def test_every_submit_description_is_accepted_by_htcondor() -> None:
    for case in CASES:
        if not case.job.queue.truepilot:
            continue
        for ce in (CONDOR_CE, ARC_VIA_CONDOR):
            translation = _condor(case.job, ce)
            submit = htcondor2.Submit(translation.description)
            keys = set(submit.keys())
            assert {"universe", "grid_resource", "executable", "arguments", "environment"} <= keys
            assert submit["universe"] == "grid"
            seconds = translation.walltime_minutes * 60
            if ce is CONDOR_CE:  # what an HTCondor-CE's job router reads: the whole job
                assert submit["grid_resource"] == "condor ce01.example.org ce01.example.org:9619"
                assert submit["MY.xcount"] == submit["request_cpus"] == str(translation.cores)
                assert submit["MY.maxMemory"] == submit["request_memory"]
                assert submit["request_memory"] == str(translation.memory_mb)
                assert submit["MY.maxWallTime"] == str(translation.walltime_minutes)
                assert submit["MY.MaxRuntime"] == str(seconds)
                assert "arc_resources" not in keys and "batch_queue" not in keys
            else:  # what HTCondor's ARC grid type reads: memory per slot, times as ADL
                assert submit["grid_resource"] == "arc https://arc.example.org/arex"
                assert submit["arc_rte"] == "ENV/PROXY"
                assert submit["batch_queue"] == "mcore"
                assert submit["request_cpus"] == str(translation.cores)
                per_slot = translation.memory_mb // translation.cores
                assert submit["request_memory"] == str(per_slot)
                assert submit["arc_resources"] == (
                    f"<WallTime>{seconds}</WallTime>"
                    f"<TotalCPUTime>{seconds * translation.cores}</TotalCPUTime>"
                )
                assert not keys & {"MY.xcount", "MY.maxMemory", "MY.maxWallTime", "MY.remote_queue"}
            p = plan(case.job)
            words = _condor_words(submit.expand("arguments"))
            if submit["executable"] == "/bin/bash":
                assert words == ["runpilot2-wrapper.sh", *p.arguments]
                assert case.job.queue.pilot_wrapper in submit["transfer_input_files"]
            else:
                assert words == list(p.arguments)
            environment = dict(w.split("=", 1) for w in _condor_words(submit.expand("environment")))
            assert environment["GTAG"] == case.job.log_url
            assert environment["PANDA_JSID"] == "act"
            assert submit["priority"] == str(translation.priority)
            assert submit["output"] == str(WEB / f"{case.job.panda_id}.out")
            transfers = [t.strip() for t in submit["transfer_input_files"].split(",")]
            for name in translation.files:
                assert str(_input_dir(case.job) / name) in transfers


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("log_url", "https://x.example.org/a\nqueue 5\nexecutable = /bin/evil"),
        ("jobName", "name\r\n+Evil = 1"),
        ("scheduler_id", "act\nuniverse = local"),
    ],
)
def test_newlines_never_reach_a_description(field: str, value: str) -> None:
    job = CASES[5].job  # truepilot: both languages
    if field == "jobName":
        job = replace(job, spec={**job.spec, "jobName": value})
    else:
        changes: dict[str, Any] = {field: value}  # the field is a parameter of the test
        job = replace(job, **changes)
    for translate in (_xrsl, _condor):
        with pytest.raises(TranslationError) as error:
            translate(job)
        assert f"panda_id={job.panda_id}" in str(error.value)


def test_quotes_stay_literal_and_dollars_are_refused_for_htcondor() -> None:
    job = replace(CASES[5].job, log_url="https://x.example.org/'a b'/\"q\"/(é)\\")
    submit = htcondor2.Submit(_condor(job).description)
    environment = dict(w.split("=", 1) for w in _condor_words(submit.expand("environment")))
    assert environment["GTAG"] == job.log_url
    for url in ("https://x.example.org/$(Cluster)", "https://x.example.org/$$(Name)"):
        with pytest.raises(TranslationError) as error:
            _condor(replace(job, log_url=url))
        assert error.value.field == "environment"
    # xRSL has no macros in quoted strings: the ARC parser test reads "$(Cluster)" literally.
    non_ascii = next(c for c in CASES if c.name == "non_ascii").job
    assert "$(Cluster)" in _xrsl(non_ascii).description


def test_job_spec_is_shipped_as_the_pilot_reads_it_with_queuedata_and_event_ranges() -> None:
    """The job file's format is tests/test_jobfile.py's (with the real pilot); here: which."""
    es = next(c for c in CASES if c.name == "event_service").job
    translation = _xrsl(es)
    assert parse_qsl(translation.files["pandaJobData.out"].decode(), keep_blank_values=True) == [
        (key, str(value)) for key, value in es.spec.items()
    ]  # a JSON job as the legacy getJob reply
    legacy = next(c for c in CASES if c.name == "prod_mcore_native").job
    assert _xrsl(legacy).files["pandaJobData.out"] == legacy.spec_text.encode()  # as stored
    harvester = next(c for c in CASES if c.name == "analysis_truepilot").job
    assert json.loads(_condor(harvester).files["pandaJobData.out"]) == {"7003": harvester.spec}
    assert json.loads(translation.files["queuedata.json"]) == es.queue.queuedata
    assert json.loads(translation.files["eventranges.json"]) == es.event_ranges
    truepilot = _condor(CASES[2].job)
    assert set(truepilot.files) == {"pandaJobData.out"}


def test_a_spec_that_cannot_be_encoded_is_a_translation_error() -> None:
    legacy = next(c for c in CASES if c.name == "prod_mcore_native").job
    with pytest.raises(TranslationError) as error:
        _xrsl(replace(legacy, spec_text="bad \udc80 surrogate"))
    assert error.value.field == "spec_text"
    job = replace(CASES[0].job, spec={**CASES[0].job.spec, "jobPars": "bad \udc80 surrogate"})
    with pytest.raises(TranslationError) as error:
        _xrsl(job)
    assert error.value.field == "jobPars"


def _spec_job(queue: Any = NATIVE, **spec: Any) -> JobInput:
    return JobInput(
        panda_id=1,
        spec={"PandaID": 1, **spec},
        spec_text="{}",
        queue=queue,
        attempt=0,
        log_url="https://x.example.org/1.out",
    )


@pytest.mark.parametrize(
    ("current", "mapped"),
    [(None, 50), ("NULL", 50), (-5, 1), (5, 1), (500, 45), (1000, 90), (1900, 91), (10000, 100),
     (99999, 100), ("junk", 50)],
)  # fmt: skip
def test_priority_mapping(current: Any, mapped: int) -> None:
    spec = {} if current is None else {"currentPriority": current}
    assert priority(Spec(1, spec)) == mapped


def test_cores_from_the_queue_when_the_job_does_not_say() -> None:
    queue = replace(NATIVE, cores=8)
    assert plan(_spec_job(queue, coreCount="NULL")).cores == 8
    assert plan(_spec_job(queue)).cores == 8
    assert plan(_spec_job(queue, coreCount="2")).cores == 2


def test_analysis_jobs_get_the_user_job_type_and_proxy_rte() -> None:
    p = plan(_spec_job(prodSourceLabel="panda"))
    assert p.job_type == "user"
    assert (
        "--job-type" in p.arguments and p.arguments[p.arguments.index("--job-type") + 1] == "user"
    )
    xrsl = _xrsl(_spec_job(prodSourceLabel="user")).description
    assert '(runtimeenvironment = "ENV/PROXY")' in xrsl


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"coreCount": "eight"}, "coreCount"),
        ({"minRamCount": True}, "minRamCount"),
        ({"inFiles": "a.root,b.root", "scopeIn": "mc23"}, "scopeIn"),
        ({"inFiles": "../../etc/passwd", "scopeIn": "mc23"}, "inFiles"),
        ({"inFiles": "a.root", "scopeIn": "mc/23"}, "scopeIn"),
        ({"logFile": "../log.tgz"}, "logFile"),
        ({"jobName": ["not", "text"]}, "jobName"),
    ],
)
def test_bad_spec_values_name_the_panda_id_and_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(TranslationError) as error:
        _xrsl(_spec_job(**spec))
    assert error.value.panda_id == 1 and error.value.field == field
    assert str(error.value).startswith(f"panda_id=1: {field}:")


def test_native_inputs_are_rucio_urls_deduplicated() -> None:
    p = plan(_spec_job(inFiles="a.root,b.root,a.root", scopeIn="s1,s2,s1"))
    assert [f.url for f in p.inputs] == [
        f"{RUCIO_REPLICAS}/s1/a.root",
        f"{RUCIO_REPLICAS}/s2/b.root",
    ]


def test_wrong_ce_or_mode_is_refused() -> None:
    with pytest.raises(TranslationError, match="xRSL is for ARC"):
        _xrsl(CASES[5].job, CONDOR_CE)
    with pytest.raises(TranslationError, match="native"):
        _condor(CASES[0].job)
    with pytest.raises(TranslationError, match="input_dir"):
        to_xrsl(CASES[0].job, ARC_CE, input_dir=Path("relative"))
    bad_ce = QueueCE(
        flavour="condor", endpoint="ce.example.org\nuniverse = local", ce_queue=None, state="ACTIVE"
    )
    with pytest.raises(TranslationError, match=r"ce\.endpoint"):
        _condor(CASES[5].job, bad_ce)


def test_condor_proxy_and_logs_without_web_dir() -> None:
    job = CASES[5].job
    translation = to_condor(
        job, CONDOR_CE, input_dir=_input_dir(job), web_dir=None, x509_proxy=Path("/tmp/x509up")
    )
    submit = htcondor2.Submit(translation.description)
    assert submit["x509userproxy"] == "/tmp/x509up"
    assert submit["log"] == str(_input_dir(job) / f"{job.panda_id}.log")
