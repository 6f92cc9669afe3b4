"""Fuzzing what a pilot leaves behind, through the validator's run_once: heartbeat.json,
jobReport.json, metadata.xml, output.list and the log tarball, as bytes mutations of valid files
and as structured documents with fuzzed values.

tests/test_pilot_files.py fuzzes read_heartbeat alone and tests/test_safe_tar.py the extraction
alone; here the whole daemon step runs. Properties: run_once never raises; the job is decided
(not left in ``tovalidate`` by an unexpected error); a job failed for its pilot report has error
code 1187 and a diagnosis naming the file; every warning or error the validator logs about the
job carries its PandaID.
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import logging
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from act.atlas.validator import run_once
from act.common.db import Database
from tests.support.fuzzing import DEFAULT, LONG, examples, json_values, mutate_bytes
from tests.support.validating import Job, context, make_settings, store

_ids = itertools.count(300_000)
FILES = ("heartbeat.json", "jobReport.json", "metadata.xml", "log tarball", "output.list")
UNDECIDED = "tovalidate"


def _tgz(members: dict[str, bytes]) -> bytes:
    """A gzipped tarball, the same bytes every time (gzip mtime 0: hypothesis replays draws)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def _metadata_xml(entries: dict[str, dict[str, Any]]) -> str:
    files = "".join(
        f'<File ID="{e["guid"]}"><physical><pfn filetype="ROOT_All" name="{e["surl"]}"/>'
        f'</physical><logical><lfn name="{lfn}"/></logical>'
        f'<metadata att_name="fsize" att_value="{e["fsize"]}"/>'
        f'<metadata att_name="adler32" att_value="{e["adler32"]}"/></File>'
        for lfn, e in entries.items()
    )
    return f'<?xml version="1.0" encoding="UTF-8"?><POOLFILECATALOG>{files}</POOLFILECATALOG>'


def _prepare(db: Database, root: Path, target: str, data: st.DataObject) -> Job:
    """A job whose pilot files are valid except ``target``, which is fuzzed."""
    panda_id = next(_ids)
    failed = target in ("jobReport.json", "log tarball")
    job = Job(db, root, panda_id, ce="donefailed" if failed else "done")
    outputs = {"out.root": store(root / "se" / str(panda_id), "out.root", b"payload")}
    if failed:
        job.heartbeat(None, state="failed", pilotErrorCode=1305, pilotErrorDiag="payload crashed")
    elif target == "metadata.xml":
        job.heartbeat(None)
    else:
        job.heartbeat(outputs)
    structured = data.draw(st.booleans())
    if target == "heartbeat.json":
        path = job.output_dir / "heartbeat.json"
        if structured:
            body = json.loads(path.read_text())
            for key in data.draw(st.lists(st.sampled_from(sorted(body)), max_size=3)):
                body[key] = data.draw(json_values)
            path.write_text(json.dumps(body))
        else:
            path.write_bytes(mutate_bytes(path.read_bytes(), data.draw))
    elif target == "jobReport.json":
        path = job.output_dir / "jobReport.json"
        valid = {"exitCode": 65, "exitMsg": "Non-zero return code", "resource": {"cpu": 1}}
        if structured:
            path.write_text(json.dumps({**valid, **data.draw(st.dictionaries(
                st.sampled_from(["exitCode", "exitMsg", "resource", "files"]), json_values
            ))}))  # fmt: skip
        else:
            path.write_bytes(mutate_bytes(json.dumps(valid).encode(), data.draw))
    elif target == "metadata.xml":
        text = _metadata_xml(outputs).encode()
        (job.output_dir / "metadata.xml").write_bytes(mutate_bytes(text, data.draw))
    elif target == "output.list":  # as pilot3's mv copytool writes it
        lines = "".join(
            f"{lfn} {e['surl']}:checksumtype=adler32:checksumvalue={e['adler32']}\n"
            for lfn, e in outputs.items()
        )
        (job.output_dir / "output.list").write_bytes(mutate_bytes(lines.encode(), data.draw))
    else:
        log = b"pilot starting\nERROR: payload segfaulted\n"
        blob = _tgz({f"tarball_PandaJob_{panda_id}/pilotlog.txt": log})
        (job.output_dir / f"{panda_id}.log.tgz").write_bytes(mutate_bytes(blob, data.draw))
    return job


def _check(db: Database, root: Path, target: str, data: st.DataObject, caplog: Any) -> None:
    settings = make_settings(root)
    job = _prepare(db, root, target, data)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="act"):
        run_once(context(db, settings))
    row = job.row()
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("act.validator")]
    assert not [m for m in messages if "unexpectedly" in m], messages
    assert row.state != UNDECIDED, (job.panda_id, row.state, messages)
    for message in messages:
        assert f"panda_id={job.panda_id}" in message, message
    if row.error_code == 1187:
        diag = job.report()["pilotErrorDiag"]
        names = ("heartbeat.json", "metadata.xml", "output report", "output.list")
        assert any(name in diag for name in names), diag
    if target == "log tarball":
        assert job.report()["pilotLog"]  # from the tarball, or the stdout fallback


@pytest.mark.parametrize("target", FILES)
@examples(DEFAULT // 4)
@given(data=st.data())
def test_the_validator_decides_jobs_with_fuzzed_pilot_files(
    db: Database, tmp_path: Path, target: str, data: st.DataObject, caplog: Any
) -> None:
    _check(db, tmp_path, target, data, caplog)


@pytest.mark.long
@pytest.mark.parametrize("target", FILES)
@examples(LONG // 6)
@given(data=st.data())
def test_the_validator_decides_jobs_with_fuzzed_pilot_files_long(
    db: Database, tmp_path: Path, target: str, data: st.DataObject, caplog: Any
) -> None:
    _check(db, tmp_path, target, data, caplog)
