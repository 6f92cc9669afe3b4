"""Fuzzing the ARC REST client's reply parsing (status/info/kill/clean, submit, job list,
session listing) and ArcBackend.status over batches with garbled entries.

Only the module's documented errors may come out of a call: CEUnavailable (whole CE, its message
starts ``ce=<name>``) and RestError (one thing); ArcBackend.status returns the well-formed
entries of a batch whatever the others hold.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from act.arc.backend import ArcBackend
from act.arc.rest import ArcRest, RestError
from act.engine.backend import CE, CEUnavailable
from act.engine.settings import CESettings, EngineSettings
from act.service.settings import Settings
from tests.support.fuzzing import DEFAULT, LONG, Draw, dumps, examples, json_values, mutate_bytes

CE_NAME = "fuzz-ce"
IDS = ["job1", "job2", "job3"]


def _reply(status: int, body: bytes) -> requests.Response:
    reply = requests.Response()
    reply.status_code = status
    reply._content = body
    reply.encoding = "utf-8"
    reply.headers["Content-Type"] = "application/json"
    return reply


class _Session:
    """Stands for requests.Session: every request gets ``body`` with ``status``."""

    def __init__(self) -> None:
        self.status, self.body = 201, b""
        self.headers: dict[str, str] = {}

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        return _reply(self.status, self.body)

    def close(self) -> None:
        pass


def _rest() -> tuple[ArcRest, _Session]:
    rest = ArcRest("https://ce.example.org/arex", name=CE_NAME, version="1.1")
    session = _Session()
    rest.session = session  # type: ignore[assignment]
    return rest, session


def _info_entry(job_id: str) -> dict[str, Any]:
    return {
        "id": job_id,
        "status-code": "200",
        "reason": "OK",
        "info_document": {
            "ComputingActivity": {
                "State": ["emies:terminal", "arcrest:FINISHED"],
                "ExitCode": "0",
                "ExecutionNode": "wn1",
                "UsedTotalCPUTime": "12",
                "StartTime": "2026-11-20T10:00:00Z",
            }
        },
    }


@st.composite
def garbled_entry(draw: Draw, job_id: str) -> Any:
    """A job entry around a valid one: fields dropped/retyped, or not an entry at all."""
    kind = draw(st.sampled_from(["value", "fields", "activity"]))
    if kind == "value":
        return draw(json_values)
    entry = _info_entry(job_id)
    if kind == "fields":
        for key in draw(st.lists(st.sampled_from(sorted(entry)), max_size=3)):
            entry[key] = draw(json_values)
        return entry
    activity = entry["info_document"]["ComputingActivity"]
    for key in draw(st.lists(st.sampled_from(sorted(activity)), min_size=1, max_size=3)):
        activity[key] = draw(st.one_of(json_values, st.just("9" * 5000)))
    return entry


@st.composite
def bodies(draw: Draw) -> bytes:
    kind = draw(st.sampled_from(["json", "entries", "mutated", "bytes"]))
    if kind == "json":
        return dumps(draw(json_values)).encode()
    entries = [draw(garbled_entry(i)) for i in IDS]
    valid = dumps({"job": [_info_entry(i) for i in IDS]}).encode()
    if kind == "entries":
        return dumps({"job": entries if draw(st.booleans()) else entries[0]}).encode()
    if kind == "mutated":
        return mutate_bytes(valid, draw)
    raw: bytes = draw(st.binary(max_size=100))
    return raw


CALLS = {
    "status": lambda r: r.status(IDS),
    "info": lambda r: r.info(IDS),
    "kill": lambda r: r.kill(IDS[:1]),
    "clean": lambda r: r.clean(IDS),
    "submit": lambda r: r.submit(["&(executable=a)", "&(executable=b)"]),
    "jobs": lambda r: r.jobs(),
    "listing": lambda r: r.listing("job1"),
}


def _check_rest(call: str, status: int, body: bytes) -> None:
    rest, session = _rest()
    session.status, session.body = status, body
    try:
        CALLS[call](rest)
    except CEUnavailable as error:
        assert str(error).startswith(f"ce={CE_NAME}:"), error
    except RestError as error:
        assert error.status == status


@pytest.mark.parametrize("call", sorted(CALLS))
@examples(DEFAULT)
@given(status=st.sampled_from([200, 201, 202, 404, 500]), body=bodies())
def test_fuzzed_rest_replies_raise_only_documented_errors(
    call: str, status: int, body: bytes
) -> None:
    _check_rest(call, status, body)


@pytest.mark.long
@pytest.mark.parametrize("call", sorted(CALLS))
@examples(LONG)
@given(status=st.sampled_from([200, 201, 202, 404, 500]), body=bodies())
def test_fuzzed_rest_replies_long(call: str, status: int, body: bytes) -> None:
    _check_rest(call, status, body)


# -- ArcBackend.status -----------------------------------------------------------------------


def _backend(tmp_path: Path) -> tuple[ArcBackend, CE]:
    settings = CESettings(backend="arc", url="https://ce.example.org/arex")
    ce = CE(CE_NAME, settings.model_copy(update={"options": {"rest_version": "1.1"}}))
    config = Settings(root=str(tmp_path), engine=EngineSettings(ces={CE_NAME: ce.settings}))
    return ArcBackend(settings=config, db=None, log=logging.getLogger("act.fuzz.arc")), ce


def _check_backend(tmp_path: Path, data: st.DataObject) -> None:
    backend, ce = _backend(tmp_path)
    rest, session = _rest()
    backend.client = lambda ce: rest  # type: ignore[method-assign]
    bad = data.draw(st.sampled_from(IDS))
    entries = [data.draw(garbled_entry(i)) if i == bad else _info_entry(i) for i in IDS]
    session.status, session.body = 201, json.dumps({"job": entries}).encode()
    result = backend.status(ce, IDS)
    for job_id in IDS:
        if job_id != bad:
            status = result[job_id]
            assert status is not None and status.ce_job_id == job_id
            assert status.worker_node == "wn1"


@examples(DEFAULT)
@given(data=st.data())
def test_a_garbled_entry_does_not_hide_the_others(tmp_path: Path, data: st.DataObject) -> None:
    _check_backend(tmp_path, data)


@pytest.mark.long
@examples(LONG)
@given(data=st.data())
def test_a_garbled_entry_does_not_hide_the_others_long(tmp_path: Path, data: st.DataObject) -> None:
    _check_backend(tmp_path, data)


def test_a_batch_with_a_non_object_entry_keeps_the_others(tmp_path: Path) -> None:
    """Finding of the fuzzing: one entry that is not an object made the whole info reply
    unreadable (CEUnavailable), so no job of the batch got its status."""
    backend, ce = _backend(tmp_path)
    rest, session = _rest()
    backend.client = lambda ce: rest  # type: ignore[method-assign]
    entries = [_info_entry("job1"), "garbage", _info_entry("job3")]
    session.body = json.dumps({"job": entries}).encode()
    result = backend.status(ce, IDS)
    assert set(result) == {"job1", "job3"}
