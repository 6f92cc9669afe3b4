"""Fuzzing the PanDA side: client reply parsing (every call, both wire formats), the
panda_fetcher with fuzzed job specs in PanDA's reply, and the translator on stored fuzzed specs.

Only the client's documented errors (PandaError and its subclasses) may come out of a call, each
naming the call; the daemons' run_once never raise; a rejected or failed job is named with the
cause. The ``long`` variants run the same properties with many more examples.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from act.atlas import spool
from act.atlas.config import Context as AtlasContext
from act.atlas.credentials import NoCredentials
from act.atlas.fetcher import FetcherOptions
from act.atlas.fetcher import run_once as fetch_once
from act.atlas.panda_client import JobUpdate, PandaClient, PandaError
from act.atlas.panda_settings import PandaServerSettings
from act.atlas.translator import TranslatorOptions
from act.atlas.translator import run_once as translate_once
from act.common.db import Database
from act.common.schema import panda_jobs
from act.common.states import Actor, Layer
from act.common.transitions import create_jobs
from act.service.settings import Settings
from act.testing.panda import PandaTestServer, make_job_spec
from tests.support.contexts import daemon_context
from tests.support.fuzzing import (
    DEFAULT,
    LONG,
    Draw,
    dumps,
    examples,
    json_values,
    mutate_text,
    spec_variant,
)
from tests.support.panda import settings_for

QUEUE = "TEST_QUEUE"

# -- the client's parsing -------------------------------------------------------------------------


class _Reply:
    def __init__(self, text: str, status: int = 200) -> None:
        self.text = text
        self.status_code = status


class _FixedSession:
    """Stands for requests.Session: every request gets ``text`` with HTTP 200."""

    def __init__(self) -> None:
        self.text = ""

    def request(self, *args: Any, **kwargs: Any) -> _Reply:
        return _Reply(self.text)

    def close(self) -> None:
        pass


def _client(api: str) -> tuple[PandaClient, _FixedSession]:
    settings = PandaServerSettings.model_validate(
        {"url": "http://127.0.0.1:9", "api": api, "retries": 0, "backoff": 0.0}
    )
    client = PandaClient(settings, NoCredentials())
    session = _FixedSession()
    client._transport.session = session  # type: ignore[assignment]
    return client, session


_UPDATES = [JobUpdate(panda_id=7001, state="running"), JobUpdate(panda_id=7002, state="running")]

# call name -> (the names the error may carry, the call, the PandaID it concerns or None)
CALLS: dict[str, tuple[tuple[str, ...], Callable[[PandaClient], Any], int | None]] = {
    "acquire_jobs": (
        ("acquire_jobs", "getJob"),
        lambda c: c.acquire_jobs(queue=QUEUE, prod_source_label="managed", n_jobs=2, node="n"),
        None,
    ),
    "update_job": (("update_job", "updateJob"), lambda c: c.update_job(_UPDATES[0]), 7001),
    "update_jobs_bulk": (
        ("update_jobs_bulk", "updateJobsInBulk"),
        lambda c: c.update_jobs_bulk(_UPDATES),
        None,
    ),
    "get_job_status": (
        ("get_job_status", "getStatus"),
        lambda c: c.get_job_status([7001, 7002]),
        None,
    ),
    "acquire_event_ranges": (
        ("acquire_event_ranges", "getEventRanges"),
        lambda c: c.acquire_event_ranges(7001, jobset_id=7, task_id=4242, n_ranges=3),
        7001,
    ),
    "update_event_ranges": (
        ("update_event_ranges", "updateEventRanges"),
        lambda c: c.update_event_ranges([{"eventRangeID": "1-2-3", "eventStatus": "finished"}]),
        None,
    ),
}


def _envelopes() -> st.SearchStrategy[str]:
    """Replies shaped like the new API's envelope, with anything inside."""
    data = st.one_of(
        json_values,
        st.fixed_dictionaries(
            {"jobs": st.lists(json_values, max_size=3)}, optional={"StatusCode": json_values}
        ),
        st.lists(
            st.fixed_dictionaries(
                {}, optional={"job_id": json_values, "status": json_values, "success": json_values}
            ),
            max_size=3,
        ),
    )
    envelope = st.fixed_dictionaries(
        {"success": st.one_of(st.booleans(), json_values)},
        optional={"message": json_values, "data": data},
    )
    return envelope.map(dumps)


def _legacy_texts() -> st.SearchStrategy[str]:
    pairs = st.dictionaries(
        st.sampled_from(["StatusCode", "jobs", "PandaID", "status", "command", "eventRanges"]),
        st.one_of(st.text(max_size=20), st.integers().map(str), json_values.map(dumps)),
        max_size=4,
    )
    bulk = st.tuples(st.one_of(st.booleans(), json_values), st.lists(json_values, max_size=3))
    return st.one_of(
        pairs.map(lambda d: "&".join(f"{k}={v}" for k, v in d.items())),
        pairs.map(dumps),
        bulk.map(lambda b: dumps(list(b))),
    )


def _valid_replies() -> list[str]:
    spec = make_job_spec(9001)
    return [
        dumps({"success": True, "message": "", "data": {"StatusCode": 0, "jobs": [spec]}}),
        dumps({"success": True, "message": "", "data": [{"job_id": 7001, "status": "running"}]}),
        dumps({"StatusCode": 0, "jobs": [spec]}),
        "StatusCode=0&command=NULL",
        dumps([True, ["StatusCode=0", "StatusCode=0"]]),
    ]


@st.composite
def _garbled(draw: Draw) -> str:
    return mutate_text(draw(st.sampled_from(_valid_replies())), draw)


def replies() -> st.SearchStrategy[str]:
    garbled = _garbled()
    return st.one_of(
        json_values.map(dumps),
        _envelopes(),
        _legacy_texts(),
        st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
        st.text(max_size=200),
        garbled,
    )


def _check_client(api: str, call: str, text: str) -> None:
    client, session = _client(api)
    session.text = text
    names, function, panda_id = CALLS[call]
    try:
        function(client)
    except PandaError as error:
        assert any(name in error.call for name in names), error
        assert error.call in str(error)
        if panda_id is not None:
            assert f"panda_id={panda_id}" in str(error), error


@pytest.mark.parametrize("api", ["new", "legacy"])
@pytest.mark.parametrize("call", sorted(CALLS))
@examples(DEFAULT)
@given(text=replies())
def test_fuzzed_replies_raise_only_panda_errors_naming_the_call(
    api: str, call: str, text: str
) -> None:
    _check_client(api, call, text)


@pytest.mark.long
@pytest.mark.parametrize("api", ["new", "legacy"])
@pytest.mark.parametrize("call", sorted(CALLS))
@examples(LONG)
@given(text=replies())
def test_fuzzed_replies_long(api: str, call: str, text: str) -> None:
    _check_client(api, call, text)


def test_the_client_check_catches_a_foreign_exception() -> None:
    """The property above can fail: an error that is no PandaError escapes it."""
    client, session = _client("new")
    session.request = lambda *a, **k: (_ for _ in ()).throw(KeyError("x"))  # type: ignore[method-assign]
    with pytest.raises(KeyError):
        _check_client_with(client)


def _check_client_with(client: PandaClient) -> None:
    with contextlib.suppress(PandaError):
        client.get_job_status([1])


# -- the fetcher and the translator ---------------------------------------------------------------

_ids = itertools.count(100_000)


@pytest.fixture
def server() -> Iterator[PandaTestServer]:
    with PandaTestServer() as test_server:
        yield test_server


ARC_CE = {"flavour": "arc", "endpoint": "arc1", "ce_queue": "grid"}


def _settings(root: Path, server: PandaTestServer) -> Settings:
    return Settings.model_validate(
        {
            "root": str(root),
            "panda": settings_for(server).model_dump(mode="json"),
            "engine": {
                "ces": {"arc1": {"backend": "arc", "url": "https://arc1.example.org/arex"}},
                "attempts": 2,
            },
            "queues": {
                "serve": {
                    QUEUE: {
                        "ces": [ARC_CE],
                        "truepilot": True,
                        "max_queued": 1000,
                        "max_jobs": 100000,
                        "jobs_per_cycle": 10,
                    }
                }
            },
        }
    )


def _fuzzed_specs(data: st.DataObject) -> list[dict[str, Any]]:
    specs = []
    for _ in range(data.draw(st.integers(1, 4))):
        spec = spec_variant(make_job_spec(next(_ids)), data.draw)
        if data.draw(st.integers(0, 4)) == 0:  # sometimes a bad PandaID
            spec["PandaID"] = data.draw(
                st.one_of(st.integers(max_value=0), st.text(max_size=8), json_values)
            )
        specs.append(spec)
    return specs


def _check_fetch_and_translate(
    db: Database, server: PandaTestServer, root: Path, data: st.DataObject, caplog: Any
) -> None:
    specs = _fuzzed_specs(data)
    reply = {"success": True, "message": "", "data": {"StatusCode": 0, "jobs": specs}}
    server.inject("http", status=200, body=dumps(reply), method="pilot/acquire_jobs")
    settings = _settings(root, server)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        fetch_once(daemon_context(db, settings, "panda_fetcher", options=FetcherOptions()))
    valid_ids = {
        s["PandaID"]
        for s in specs
        if type(s.get("PandaID")) is int and s["PandaID"] > 0  # bool is no id
    }
    with db.read() as conn:
        stored = set(
            conn.execute(
                sa.select(panda_jobs.c.panda_id).where(panda_jobs.c.panda_id.in_(valid_ids))
            ).scalars()
        )
    assert stored == valid_ids
    rejected = [r for r in caplog.records if "job rejected" in r.getMessage()]
    assert len(rejected) == len(specs) - len(valid_ids)
    for record in rejected:
        assert "PandaID" in record.getMessage() and QUEUE in record.getMessage()
    assert not list(spool.pending(spool.spool_dir(root)))
    _check_translate(db, settings, valid_ids)


def _check_translate(db: Database, settings: Settings, ids: set[int]) -> None:
    ctx: AtlasContext = daemon_context(
        db, settings, "translator", options=TranslatorOptions.model_validate({}), batch=50
    )
    while translate_once(ctx):
        pass
    with db.read() as conn:
        rows = conn.execute(sa.select(panda_jobs).where(panda_jobs.c.panda_id.in_(ids))).all()
    for row in rows:
        assert row.state in ("queued", "failed"), (row.panda_id, row.state)
        if row.state == "failed":
            assert row.error_text, row.panda_id
            field = row.error_text.split(":", 1)[0]
            assert field and " " not in field.strip(), row.error_text  # names a field first
            assert row.error_code is not None


@examples(DEFAULT // 2)
@given(data=st.data())
def test_fetcher_and_translator_survive_fuzzed_specs(
    db: Database, server: PandaTestServer, tmp_path: Path, data: st.DataObject, caplog: Any
) -> None:
    _check_fetch_and_translate(db, server, tmp_path, data, caplog)


@pytest.mark.long
@examples(LONG // 3)
@given(data=st.data())
def test_fetcher_and_translator_survive_fuzzed_specs_long(
    db: Database, server: PandaTestServer, tmp_path: Path, data: st.DataObject, caplog: Any
) -> None:
    _check_fetch_and_translate(db, server, tmp_path, data, caplog)


def test_a_spec_that_is_not_json_fails_naming_the_spec(db: Database, tmp_path: Path) -> None:
    """A stored spec damaged after it was fetched (verbatim text, not parsed by the fetcher)."""
    with PandaTestServer() as server:
        settings = _settings(tmp_path, server)
    panda_id = next(_ids)
    text = json.dumps(make_job_spec(panda_id))[:-40]
    rows = [{"panda_id": panda_id, "queue": QUEUE, "spec": text, "spec_format": "json"}]
    db.run(lambda c: create_jobs(c, Layer.PANDA, rows, "received", actor=Actor.PANDA_FETCHER))
    _check_translate(db, settings, {panda_id})
    with db.read() as conn:
        row = conn.execute(sa.select(panda_jobs).where(panda_jobs.c.panda_id == panda_id)).one()
    assert row.state == "failed" and row.error_text.startswith("spec:")


def test_a_label_with_a_nul_does_not_stop_the_fetcher(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    """Finding of the fuzzing: a prodSourceLabel holding NUL made PostgreSQL refuse the insert,
    so run_once raised on every cycle (the spool file is ingested first). The queue's label is
    used instead."""
    panda_id = next(_ids)
    spec = {**make_job_spec(panda_id), "prodSourceLabel": "man\u0000aged"}
    reply = {"success": True, "message": "", "data": {"StatusCode": 0, "jobs": [spec]}}
    server.inject("http", status=200, body=dumps(reply), method="pilot/acquire_jobs")
    fetch_once(daemon_context(db, _settings(tmp_path, server), "panda_fetcher",
                              options=FetcherOptions()))  # fmt: skip
    with db.read() as conn:
        row = conn.execute(sa.select(panda_jobs).where(panda_jobs.c.panda_id == panda_id)).one()
    assert (
        row.prod_source_label == "managed" and "\u0000" in json.loads(row.spec)["prodSourceLabel"]
    )
