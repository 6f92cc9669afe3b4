"""``actctl translate SPEC``: the dry run gives what the translator daemon makes of the same job,
needs no database, and refuses a bad spec, queue or CE with the documented exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner, Result

from act.atlas.fetcher import log_url
from act.atlas.queues import load_queues
from act.atlas.translator import TranslatorOptions, run_once
from act.common import exitcodes
from act.common.db import Database
from act.common.schema import ce_jobs
from act.common.states import Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs
from act.ctl.cli import cli
from act.service.settings import Settings
from act.testing.panda import make_job_spec
from tests.support.contexts import daemon_context
from tests.support.pilot3 import Pilot3, read_job_files

CRIC: dict[str, Any] = {
    "SITE_MCORE": {
        "name": "SITE_MCORE",
        "state": "ACTIVE",
        "status": "online",
        "corecount": 8,
        "type": "production",
        "copytools": {"mv": {}},
        "queues": [
            {
                "ce_flavour": "ARC-CE",
                "ce_endpoint": "https://arc1.example.org:443/arex",
                "ce_queue_name": "mcore",
                "ce_state": "ACTIVE",
            },
            {
                "ce_flavour": "HTCONDOR-CE",
                "ce_endpoint": "htc1.example.org:9619",
                "ce_queue_name": "mcore",
                "ce_state": "ACTIVE",
            },
        ],
    },
    "SITE_NG": {
        "name": "SITE_NG",
        "state": "ACTIVE",
        "status": "online",
        "corecount": 1,
        "type": "production",
        "queues": [
            {
                "ce_flavour": "ARC-CE",
                "ce_endpoint": "https://arc1.example.org:443/arex",
                "ce_queue_name": "mcore",
                "ce_state": "ACTIVE",
            }
        ],
    },
}


def config(tmp_path: Path, **queues: Any) -> dict[str, Any]:
    cric = tmp_path / "cric.json"
    cric.write_text(json.dumps(CRIC))
    return {
        "root": str(tmp_path / "root"),
        # never opened: the dry run needs no database (this one does not exist)
        "db": {"url": "mysql://act@db.invalid/act"},
        "queues": {
            "cric_file": str(cric),
            "serve": queues
            or {
                "SITE_MCORE": {"truepilot": True, "log_url_prefix": "https://act.example.org/l"},
                "SITE_NG": {"truepilot": False},
            },
        },
        "engine": {
            "ces": {
                "arc1": {
                    "backend": "arc",
                    "url": "https://arc1.example.org:443/arex",
                    "queue": "mcore",
                },
                "htc1": {"backend": "condor", "url": "htc1.example.org:9619", "queue": "mcore"},
            }
        },
    }


def invoke(
    tmp_path: Path, *args: str, data: dict[str, Any] | None = None, stdin: str = ""
) -> Result:
    path = tmp_path / "act.yaml"
    path.write_text(yaml.safe_dump(data or config(tmp_path)))
    return CliRunner().invoke(cli, ["--config", str(path), "translate", *args], input=stdin)


def spec_file(tmp_path: Path, spec: dict[str, Any], name: str = "job.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(spec))
    return path


def test_the_dry_run_is_what_the_translator_daemon_makes(db: Database, tmp_path: Path) -> None:
    spec = make_job_spec(5001, cores=8, n_inputs=3)
    data = config(tmp_path)
    settings = Settings.model_validate(data)
    queue = load_queues(settings.queues)["SITE_MCORE"]
    row = {
        "panda_id": 5001, "queue": "SITE_MCORE", "attempt": 1, "spec": json.dumps(spec),
        "spec_format": "json", "log_url": log_url(queue, 5001, utcnow()),  # as the fetcher sets it
    }  # fmt: skip
    db.run(lambda c: create_jobs(c, Layer.PANDA, [row], "received", actor=Actor.PANDA_FETCHER))
    run_once(daemon_context(db, settings, "translator", options=TranslatorOptions()))
    with db.read() as conn:
        (ce,) = conn.execute(sa.select(ce_jobs)).all()

    out = tmp_path / "out"
    result = invoke(
        tmp_path, str(spec_file(tmp_path, spec)), "--queue", "SITE_MCORE", "--out", str(out),
        "--json", data=data,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    used = [c for c in found["ces"] if c["used"]]
    assert [c["name"] for c in used] == ce.candidates.split()
    assert {c["description"] for c in used} == {ce.description}
    assert {c["backend"] for c in used} == {ce.backend}
    assert found["input_dir"] == ce.input_dir
    daemon_files = {p.name: p.read_bytes() for p in Path(ce.input_dir).iterdir()}
    assert {p.name: p.read_bytes() for p in out.iterdir()} == daemon_files
    assert found["files"] == {name: len(data) for name, data in daemon_files.items()}
    assert (found["panda_id"], found["queue"], found["pilot_mode"]) == (
        5001,
        "SITE_MCORE",
        "normal",
    )


def test_text_output_names_every_ce_and_file(tmp_path: Path) -> None:
    spec = make_job_spec(5002)
    result = invoke(tmp_path, str(spec_file(tmp_path, spec)), "--queue", "SITE_MCORE")
    assert result.exit_code == 0, result.output
    assert "PanDA job 5002, an /api/v1 JSON job, for queue SITE_MCORE" in result.output
    assert "--- CE arc1 (arc;" in result.output and "--- CE htc1 (condor;" in result.output
    assert '&(executable = "runpilot2-wrapper.sh")' in result.output
    assert "universe = grid" in result.output
    assert "pandaJobData.out  (" in result.output and "give --out DIR" in result.output
    assert not (tmp_path / "root").exists()  # nothing written without --out: not even the web area


def test_one_ce_and_stdin(tmp_path: Path) -> None:
    spec = make_job_spec(5003)
    result = invoke(
        tmp_path, "-", "--queue", "SITE_MCORE", "--ce", "htc1", "--json", stdin=json.dumps(spec)
    )
    assert result.exit_code == 0, result.output
    (only,) = json.loads(result.output)["ces"]
    assert only["name"] == "htc1" and only["description"].startswith("universe = grid")


def test_the_only_served_queue_is_the_default_and_a_legacy_reply_is_shipped_as_it_came(
    tmp_path: Path,
) -> None:
    reply = urlencode({"StatusCode": 0, **make_job_spec(5004)})
    spec = tmp_path / "reply.txt"
    spec.write_text(reply)
    data = config(tmp_path, SITE_NG={"truepilot": False})
    out = tmp_path / "out"
    result = invoke(tmp_path, str(spec), "--out", str(out), data=data)
    assert result.exit_code == 0, result.output
    assert "a legacy getJob reply, for queue SITE_NG" in result.output
    assert (out / "pandaJobData.out").read_text() == reply
    assert json.loads((out / "queuedata.json").read_text())["name"] == "SITE_NG"  # native


def test_a_whole_acquire_jobs_reply_is_read(tmp_path: Path) -> None:
    envelope = {
        "success": True,
        "message": "",
        "data": {"StatusCode": 0, "jobs": [make_job_spec(5005)]},
    }
    result = invoke(tmp_path, str(spec_file(tmp_path, envelope)), "--queue", "SITE_NG", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["panda_id"] == 5005
    two = {**envelope, "data": {"jobs": [make_job_spec(1), make_job_spec(2)]}}
    result = invoke(tmp_path, str(spec_file(tmp_path, two, "two.json")), "--queue", "SITE_NG")
    assert result.exit_code == exitcodes.USAGE
    assert "2 jobs (1, 2): give one" in result.output


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            {**make_job_spec(5006), "coreCount": "eight"},
            "panda_id=5006: coreCount: must be an integer",
        ),
        ({**make_job_spec(5007), "logFile": "../log.tgz"}, "panda_id=5007: logFile:"),
        ({**make_job_spec(5008), "PandaID": "x"}, "SPEC: PandaID:"),
        ({"jobPars": "no id"}, "SPEC: PandaID: no job in it"),
        ([1, 2], "SPEC: PandaID: no job in it"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(tmp_path: Path, spec: Any, message: str) -> None:
    result = invoke(tmp_path, str(spec_file(tmp_path, spec)), "--queue", "SITE_NG")
    assert result.exit_code == exitcodes.USAGE, result.output
    assert message in result.output and "Traceback" not in result.output


def test_unreadable_specs(tmp_path: Path) -> None:
    for text, message in (("", "SPEC: empty"), ("{not json", "SPEC: not JSON"),
                          ("garbage", "SPEC: PandaID: no job in it")):  # fmt: skip
        result = invoke(tmp_path, "-", "--queue", "SITE_NG", stdin=text)
        assert result.exit_code == exitcodes.USAGE and message in result.output, result.output
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe PandaID=1")
    result = invoke(tmp_path, str(binary), "--queue", "SITE_NG")
    assert result.exit_code == exitcodes.USAGE and "not UTF-8" in result.output
    result = invoke(tmp_path, str(tmp_path / "missing.json"))
    assert result.exit_code == exitcodes.USAGE and "missing.json" in result.output


def test_unknown_queue_or_ce_and_an_ambiguous_queue(tmp_path: Path) -> None:
    path = str(spec_file(tmp_path, make_job_spec(5009)))
    result = invoke(tmp_path, path, "--queue", "NOPE")
    assert result.exit_code == exitcodes.NOT_FOUND
    assert "queue NOPE is not served (queues.serve: SITE_MCORE, SITE_NG)" in result.output
    result = invoke(tmp_path, path, "--queue", "SITE_NG", "--ce", "htc1")
    assert result.exit_code == exitcodes.NOT_FOUND
    assert "CE htc1 is not an engine CE of queue SITE_NG (arc1)" in result.output
    result = invoke(tmp_path, path)
    assert (
        result.exit_code == exitcodes.USAGE and "give one of: SITE_MCORE, SITE_NG" in result.output
    )
    named = spec_file(tmp_path, {**make_job_spec(5010), "computingSite": "SITE_NG"}, "site.json")
    result = invoke(tmp_path, str(named), "--json")
    assert result.exit_code == 0 and json.loads(result.output)["queue"] == "SITE_NG"


def test_event_ranges_come_from_the_option_or_are_said_missing(tmp_path: Path) -> None:
    path = str(spec_file(tmp_path, make_job_spec(5011, event_service=True)))
    result = invoke(tmp_path, path, "--queue", "SITE_NG", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.output)
    assert "eventranges.json" not in found["files"]
    assert any("give --event-ranges FILE" in note for note in found["notes"])
    ranges = [{"eventRangeID": "5011-1-1-1-10", "startEvent": 1, "lastEvent": 10, "LFN": "E.1"}]
    ranges_file = tmp_path / "ranges.json"
    ranges_file.write_text(json.dumps(ranges))
    out = tmp_path / "out"
    result = invoke(
        tmp_path, path, "--queue", "SITE_NG", "--event-ranges", str(ranges_file), "--out",
        str(out), "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((out / "eventranges.json").read_text()) == ranges
    (arc,) = json.loads(result.output)["ces"]
    assert '("eventranges.json" ' in arc["description"]  # shipped to the CE
    assert '("event_status.dump.json" "")' in arc["description"]  # and the pilot's report asked
    ranges_file.write_text("{}")
    result = invoke(tmp_path, path, "--queue", "SITE_NG", "--event-ranges", str(ranges_file))
    assert result.exit_code == exitcodes.USAGE and "--event-ranges" in result.output


def test_cric_from_the_cached_copy_without_fetching(tmp_path: Path) -> None:
    data = config(tmp_path)
    cache = tmp_path / "cric-cache.json"
    cache.write_text(json.dumps(CRIC))
    data["queues"].pop("cric_file")
    data["queues"]["cric_url"] = "https://cric.invalid/api/atlas/pandaqueue/query/?json"
    data["queues"]["cric_cache"] = str(cache)
    path = str(spec_file(tmp_path, make_job_spec(5012)))
    result = invoke(tmp_path, path, "--queue", "SITE_NG", "--json", data=data)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["notes"] == [f"CRIC: the cached copy {cache} (not fetched)"]
    cache.unlink()
    result = invoke(tmp_path, path, "--queue", "SITE_NG", data=data)
    assert result.exit_code == exitcodes.CONFIG and "cric.invalid" in result.output
    assert not cache.exists()  # a dry run writes no cache


def test_pilot3_reads_the_written_job_file(tmp_path: Path, pilot3: Pilot3) -> None:
    spec = make_job_spec(5013, n_inputs=2)
    out = tmp_path / "out"
    result = invoke(
        tmp_path, str(spec_file(tmp_path, spec)), "--queue", "SITE_NG", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    (found,) = read_job_files(pilot3, [((out / "pandaJobData.out").read_bytes(), False)])
    assert found["jobid"] == "5013" and [f["lfn"] for f in found["in"]] == spec["inFiles"].split(
        ","
    )
