"""The PanDA client against the PanDA TEST DOUBLE, in both wire formats, over HTTP and HTTPS."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qsl

import pytest

from act.atlas.credentials import FileCredentials
from act.atlas.panda_client import (
    JobUpdate,
    PandaAuthError,
    PandaClient,
    PandaError,
    PandaRefused,
    PandaReplyError,
    PandaTransportError,
    UpdateResult,
)
from act.testing.panda import PandaTestServer, TestCA, make_job_spec
from tests.support.panda import client_for, jwt, settings_for, write_private
from tests.support.procs import wait_for

QUEUE = "TEST_QUEUE"


@pytest.fixture(params=["new", "legacy"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server() -> Iterator[PandaTestServer]:
    with PandaTestServer() as test_server:
        yield test_server


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[PandaTestServer]:
    with PandaTestServer(tls=True, certs_dir=tmp_path / "ca") as test_server:
        yield test_server


@pytest.fixture
def proxy(tls_server: PandaTestServer, tmp_path: Path) -> Path:
    assert tls_server.ca is not None
    return tls_server.ca.proxy(tmp_path / "x509_production", cn="act-production")


def _acquire(client: PandaClient, n: int = 1, label: str = "managed") -> list[int]:
    jobs = client.acquire_jobs(queue=QUEUE, prod_source_label=label, n_jobs=n, node="node1")
    return [job.panda_id for job in jobs]


# -- job dispatch ---------------------------------------------------------------------------------


def test_acquire_jobs_keeps_each_job_text_verbatim(server: PandaTestServer, api: str) -> None:
    server.seed(3)
    server.seed(1, cores=8)
    client = client_for(server, api=api)
    jobs = client.acquire_jobs(
        queue=QUEUE, prod_source_label="managed", n_jobs=3, node="wn1", computing_element="ce1"
    )
    assert [job.panda_id for job in jobs] == [1, 2, 3]
    for job in jobs:
        assert job.raw_format == "json"
        assert json.loads(job.raw) == job.spec
        assert job.raw.startswith('{"StatusCode": 0, "PandaID": ')
        assert job.spec["inFiles"].count(",") == job.spec["GUID"].count(",")
    (request,) = server.received("pilot/acquire_jobs" if api == "new" else "getJob")
    expected = (
        {"site_name": QUEUE, "n_jobs": 3, "computing_element": "ce1", "node": "wn1"}
        if api == "new"
        else {"siteName": QUEUE, "nJobs": "3", "computingElement": "ce1", "node": "wn1"}
    )
    assert expected.items() <= request.params.items()
    assert server.status(1) == "sent" and server.status(4) == "activated"


def test_no_jobs_is_an_empty_list(server: PandaTestServer, api: str) -> None:
    client = client_for(server, api=api)
    assert _acquire(client, 1) == []
    assert _acquire(client, 5) == []


def test_legacy_single_job_url_encoded_reply(server: PandaTestServer) -> None:
    server.seed(1)
    server.legacy_accept_json = False
    (job,) = client_for(server, api="legacy").acquire_jobs(
        queue=QUEUE, prod_source_label="managed", n_jobs=1, node="wn1"
    )
    assert job.panda_id == 1 and job.raw_format == "urlencoded"
    assert job.raw.startswith("StatusCode=0&PandaID=1&")
    assert dict(parse_qsl(job.raw))["PandaID"] == "1" == job.spec["PandaID"]
    assert job.spec["ioIntensity"] == "NULL"


def test_legacy_job_list_inside_a_url_encoded_reply(server: PandaTestServer) -> None:
    server.seed(2)
    server.legacy_accept_json = False
    jobs = client_for(server, api="legacy").acquire_jobs(
        queue=QUEUE, prod_source_label="managed", n_jobs=2, node="wn1"
    )
    assert [job.panda_id for job in jobs] == [1, 2]
    assert all(job.raw_format == "json" and json.loads(job.raw) == job.spec for job in jobs)
    assert jobs[0].spec["PandaID"] == 1  # typed: the list is JSON


def test_the_job_label_picks_the_role(
    tls_server: PandaTestServer, tmp_path: Path, proxy: Path
) -> None:
    assert tls_server.ca is not None
    pilot = tls_server.ca.proxy(tmp_path / "x509_pilot", cn="act-pilot")
    tls_server.seed(1, label="user")
    tls_server.seed(1)
    client = client_for(
        tls_server,
        roles={"production": {"proxy": str(proxy)}, "pilot": {"proxy": str(pilot)}},
    )
    assert _acquire(client, label="user") == [1]
    assert _acquire(client, label="managed") == [2]
    client.update_job(JobUpdate(1, "starting"))
    user, managed, update = tls_server.received()
    assert user.client_dn is not None and user.client_dn.startswith("/O=act-test/CN=act-pilot/")
    assert managed.client_dn is not None
    assert managed.client_dn.startswith("/O=act-test/CN=act-production/")
    assert update.client_dn == managed.client_dn


# -- heartbeats -----------------------------------------------------------------------------------


def test_bulk_results_are_aligned_with_the_updates(server: PandaTestServer, api: str) -> None:
    server.seed(5)
    client = client_for(server, api=api)
    assert _acquire(client, 5) == [1, 2, 3, 4, 5]
    server.set_command(3, "tobekilled")
    client.update_job(JobUpdate(4, "finished", 1))
    updates = [
        JobUpdate(5, "running", 1),
        JobUpdate(999, "running", 1),  # unknown to PanDA
        JobUpdate(3, "running", 1),  # PanDA wants it killed
        JobUpdate(2, "running", 7),  # wrong attempt
        JobUpdate(4, "finished", 1),  # final report repeated
        JobUpdate(1, "starting"),
    ]
    results = client.update_jobs_bulk(updates)
    assert [(r.panda_id, r.ok, r.command) for r in results] == [
        (5, True, None),
        (999, True, "tobekilled"),
        (3, True, "tobekilled"),
        (2, True, "tobekilled" if api == "new" else "badattemptnr"),  # 1.0.4 / legacy
        (4, True, "alreadydone"),
        (1, True, None),
    ]
    method = "pilot/update_jobs_bulk" if api == "new" else "updateJobsInBulk"
    assert len(server.received(method)) == 1
    assert server.states(4) == ["finished", "finished"] and server.final_reports(4) == 2
    assert server.states(1) == ["starting"] and server.final_state(4) == "finished"
    assert client.update_jobs_bulk([]) == []


def test_heartbeat_fields_are_renamed_and_typed_for_the_new_api(server: PandaTestServer) -> None:
    server.seed(1)
    client = client_for(server)
    _acquire(client)
    report = {"x.root": {"guid": "g", "fsize": 10, "adler32": "0a0b0c0d"}}
    fields = {
        "coreCount": "8",
        "cpuConsumptionTime": "3600",
        "cpuConversionFactor": "1",
        "xml": report,
        "maxRSS": 1000,
        "pilotErrorDiag": "",
        "workdir": "/scratch/x",  # not a new-API argument: dropped, not refused
        "jobId": "999",  # the client's own job id wins
    }
    result = client.update_job(JobUpdate(1, "running", 1, fields))
    assert result == UpdateResult(1, True, None, None)
    sent = server.last_fields(1)
    assert sent["job_id"] == 1 and sent["job_status"] == "running" and sent["attempt_nr"] == 1
    assert sent["core_count"] == 8 and sent["cpu_consumption_time"] == 3600
    assert sent["cpu_conversion_factor"] == 1.0 and sent["max_rss"] == 1000
    assert json.loads(sent["job_output_report"]) == report
    assert "workdir" not in sent and "coreCount" not in sent


def test_legacy_heartbeat_sends_camel_case_form_fields(server: PandaTestServer) -> None:
    server.seed(1)
    client = client_for(server, api="legacy")
    _acquire(client)
    report = {"x.root": {"guid": "g", "fsize": 10}}
    client.update_job(JobUpdate(1, "running", 1, {"coreCount": 8, "xml": report, "node": "wn"}))
    sent = server.last_fields(1)
    assert sent["jobId"] == "1" and sent["state"] == "running" and sent["attemptNr"] == "1"
    assert sent["coreCount"] == "8" and sent["node"] == "wn"
    assert json.loads(sent["xml"]) == report


def test_datetimes_are_sent_in_panda_time_format(server: PandaTestServer, api: str) -> None:
    server.seed(2)
    client = client_for(server, api=api)
    _acquire(client, 2)
    start = datetime(2026, 11, 22, 17, 0, 5, tzinfo=timezone.utc)
    report = {"x.root": {"fsize": 1, "time": start}}
    fields = {"startTime": start, "endTime": start + timedelta(hours=1), "xml": report}
    results = client.update_jobs_bulk([JobUpdate(1, "running", 1, fields)])
    assert results[0].ok
    sent = server.last_fields(1)
    start_key, end_key, report_key = (
        ("start_time", "end_time", "job_output_report")
        if api == "new"
        else ("startTime", "endTime", "xml")
    )
    assert sent[start_key] == "2026-11-22 17:00:05" and sent[end_key] == "2026-11-22 18:00:05"
    assert json.loads(sent[report_key])["x.root"]["time"] == "2026-11-22 17:00:05"
    with pytest.raises(ValueError, match="naive"):
        client.update_job(JobUpdate(2, "running", 1, {"startTime": datetime(2026, 1, 1)}))


def test_a_refused_heartbeat_is_a_result_not_an_exception(server: PandaTestServer) -> None:
    server.seed(1)
    client = client_for(server)
    _acquire(client)
    result = client.update_job(JobUpdate(1, "bogus"))
    assert not result.ok and result.error is not None
    assert "Invalid job status: bogus" in result.error and "50" in result.error
    (bulk,) = client.update_jobs_bulk([JobUpdate(1, "bogus")])
    assert not bulk.ok and bulk.panda_id == 1


def test_get_job_status(server: PandaTestServer, api: str) -> None:
    server.seed(3)
    client = client_for(server, api=api)
    _acquire(client, 2)
    client.update_job(JobUpdate(1, "running"))
    assert client.get_job_status([1, 2, 3, 77]) == {
        1: "running",
        2: "sent",
        3: "activated",
        77: "notfound",
    }
    assert client.get_job_status([]) == {}


# -- event service --------------------------------------------------------------------------------


def test_event_ranges_round_trip(server: PandaTestServer, api: str) -> None:
    server.add_jobs([make_job_spec(10, event_service=True)], queue=QUEUE)
    server.event_ranges_bug = False
    client = client_for(server, api=api)
    ranges = client.acquire_event_ranges(10, jobset_id=7, task_id="4242", n_ranges=3)
    assert [r["eventRangeID"] for r in ranges] == [f"4242-10-{k}-1-1" for k in range(3)]
    assert client.acquire_event_ranges(11, jobset_id=7, task_id=4242, n_ranges=3) == []
    client.update_event_ranges(
        [{"eventRangeID": r["eventRangeID"], "eventStatus": "finished"} for r in ranges[:2]]
    )
    status = server.event_status(10)
    assert status["4242-10-0-1-1"] == "finished" and status["4242-10-2-1-1"] == "running"


def test_update_event_ranges_http_500_bug_counts_as_done_once(
    server: PandaTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.add_jobs([make_job_spec(10, event_service=True)], queue=QUEUE)
    assert server.event_ranges_bug
    client = client_for(server, retries=3)
    ranges = client.acquire_event_ranges(10, jobset_id=7, task_id=4242, n_ranges=2)
    with caplog.at_level(logging.WARNING):
        for item in ranges:
            done = {"eventRangeID": item["eventRangeID"], "eventStatus": "done"}
            client.update_event_ranges([done])
    assert len(server.received("event/update_event_ranges")) == 2  # one each: never re-sent
    assert set(server.event_status(10).values()) == {"done"}
    bug_lines = [r for r in caplog.records if "known server bug" in r.getMessage()]
    assert len(bug_lines) == 1


def test_another_http_500_on_update_event_ranges_is_a_transport_error(
    server: PandaTestServer,
) -> None:
    server.inject("http", status=500, count=5, body="Internal Server Error: database down")
    client = client_for(server, retries=1)
    with pytest.raises(PandaTransportError, match="HTTP 500"):
        client.update_event_ranges([{"eventRangeID": "1-2-3-4-5", "eventStatus": "done"}])
    assert server.faults_served == 2


# -- errors and retries ---------------------------------------------------------------------------


def test_transport_errors_are_retried_then_succeed(server: PandaTestServer, api: str) -> None:
    server.seed(1)
    server.inject("http", status=503, count=2)
    client = client_for(server, api=api, retries=2)
    assert _acquire(client) == [1]
    assert server.faults_served == 2


def test_transport_errors_give_up_after_the_retries(server: PandaTestServer) -> None:
    server.inject("http", status=502, count=10)
    client = client_for(server, retries=2)
    with pytest.raises(PandaTransportError) as error:
        client.update_job(JobUpdate(5, "running"))
    assert server.faults_served == 3
    assert error.value.panda_id == 5
    assert "pilot/update_job" in str(error.value) and "HTTP 502" in str(error.value)


def test_acquire_jobs_is_not_repeated_when_panda_may_have_acted(server: PandaTestServer) -> None:
    server.seed(1)
    server.inject("http", status=500, count=5, method="pilot/acquire_jobs")
    client = client_for(server, retries=3)
    with pytest.raises(PandaTransportError, match="HTTP 500") as error:
        _acquire(client)
    assert server.faults_served == 1 and not error.value.unsent
    assert server.clear_faults() == 4
    server.inject("drop", count=5, method="pilot/acquire_jobs")  # reply lost after sending
    with pytest.raises(PandaTransportError):
        _acquire(client)
    assert server.faults_served == 2
    assert server.clear_faults() == 4
    server.inject("http", status=503, count=3, method="pilot/acquire_jobs")  # not processed
    assert _acquire(client) == [1]
    assert server.faults_served == 5


def test_acquire_event_ranges_is_not_repeated_either(server: PandaTestServer) -> None:
    server.inject("http", status=500, count=5)
    with pytest.raises(PandaTransportError):
        client_for(server, retries=3).acquire_event_ranges(1, jobset_id=1, task_id=1, n_ranges=1)
    assert server.faults_served == 1


def test_connection_refused_is_marked_unsent(server: PandaTestServer) -> None:
    client = client_for(server, retries=0)
    server.outage()
    with pytest.raises(PandaTransportError) as error:
        _acquire(client)
    assert error.value.unsent


def test_a_dropped_connection_is_a_transport_error(server: PandaTestServer) -> None:
    server.inject("drop", count=5)
    with pytest.raises(PandaTransportError, match="ConnectionError"):
        client_for(server, retries=1).get_job_status([1])
    assert server.faults_served == 2


def test_an_outage_is_a_transport_error_and_is_alive_false(server: PandaTestServer) -> None:
    server.seed(1)
    client = client_for(server, retries=1)
    assert client.is_alive()
    server.outage()
    assert not client.is_alive()
    with pytest.raises(PandaTransportError, match="acquire_jobs"):
        _acquire(client)
    server.restore()
    assert client.is_alive() and _acquire(client) == [1]


def test_a_refusal_is_not_retried(server: PandaTestServer, api: str) -> None:
    client = client_for(server, api=api, retries=3)
    if api == "new":
        with pytest.raises(PandaRefused, match="unexpected keyword argument 'bogus'"):
            client.acquire_jobs(
                queue=QUEUE, prod_source_label="managed", n_jobs=1, node="n", bogus=1
            )
        assert len(server.received("pilot/acquire_jobs")) == 1
    else:
        server.inject("http", status=200, body="StatusCode=30&errorDialog=db+failure", count=5)
        with pytest.raises(PandaRefused, match="StatusCode 30: db failure"):
            _acquire(client)
        assert server.faults_served == 1


def test_a_forbidden_method_is_a_refusal(server: PandaTestServer, api: str) -> None:
    server.inject("http", status=403, body="ERROR : method getJob is forbidden", count=5)
    with pytest.raises(PandaRefused, match="HTTP 403: ERROR : method getJob is forbidden"):
        _acquire(client_for(server, api=api))
    assert server.faults_served == 1


def test_a_role_refusal_is_an_auth_error(server: PandaTestServer, api: str) -> None:
    server.seed(1)
    server.refuse_role = True
    client = client_for(server, api=api, retries=3)
    with pytest.raises(PandaAuthError, match=r"role|StatusCode 60"):
        _acquire(client)
    with pytest.raises(PandaAuthError) as error:
        client.update_job(JobUpdate(1, "running"))
    assert error.value.panda_id == 1
    with pytest.raises(PandaAuthError):
        client.update_jobs_bulk([JobUpdate(1, "running")])
    with pytest.raises(PandaAuthError):
        client.update_event_ranges([{"eventRangeID": "1-1-1-1-1", "eventStatus": "done"}])
    assert len(server.received()) == 4  # none retried


def test_http_401_is_an_auth_error(server: PandaTestServer) -> None:
    server.inject("http", status=401, body="Unauthorized")
    with pytest.raises(PandaAuthError, match="HTTP 401"):
        client_for(server).get_job_status([1])


def test_a_malformed_reply_names_the_call_and_quotes_it(server: PandaTestServer, api: str) -> None:
    server.inject("malformed", count=3)
    client = client_for(server, api=api, retries=3)
    with pytest.raises(PandaReplyError) as error:
        _acquire(client)
    text = str(error.value)
    assert ("acquire_jobs" in text or "getJob" in text) and "Proxy Error" in text
    with pytest.raises(PandaReplyError, match="update"):
        client.update_job(JobUpdate(1, "running"))
    with pytest.raises(PandaReplyError):
        client.get_job_status([1])
    assert server.faults_served == 3  # not retried


def test_replies_of_the_wrong_shape_are_reply_errors(server: PandaTestServer) -> None:
    client = client_for(server)
    server.inject("http", status=200, body='{"success": true, "message": "", "data": "x"}')
    with pytest.raises(PandaReplyError, match="data is not an object"):
        _acquire(client)
    bulk = '{"success": true, "message": "", "data": [{"success": true, "data": {}}]}'
    server.inject("http", status=200, body=bulk)
    with pytest.raises(PandaReplyError, match="1 results for 2 jobs"):
        client.update_jobs_bulk([JobUpdate(1, "running"), JobUpdate(2, "running")])
    server.inject("http", status=200, body='{"success": true, "data": {"jobs": [{"x": 1}]}}')
    with pytest.raises(PandaReplyError, match="PandaID"):
        _acquire(client)
    server.inject("http", status=200, body='[true, ["StatusCode=0"]]')
    with pytest.raises(PandaReplyError, match="1 results for 2 jobs"):
        client_for(server, api="legacy").update_jobs_bulk(
            [JobUpdate(1, "running"), JobUpdate(2, "running")]
        )


def test_a_server_side_timeout_is_retryable(server: PandaTestServer) -> None:
    server.inject("http", status=200, body='{"success": false, "message": "Timed out"}', count=9)
    client = client_for(server, retries=1)
    with pytest.raises(PandaTransportError, match="Timed out"):
        _acquire(client)
    assert server.faults_served == 2


def test_all_errors_share_the_base_class() -> None:
    for kind in (PandaTransportError, PandaAuthError, PandaRefused, PandaReplyError):
        error = kind("pilot/update_job", "why", panda_id=3)
        assert isinstance(error, PandaError) and error.panda_id == 3
        assert str(error) == "PanDA pilot/update_job (panda_id=3): why"


# -- TLS, credentials, connections ----------------------------------------------------------------


def test_tls_fails_against_an_unknown_ca(tls_server: PandaTestServer, tmp_path: Path) -> None:
    other = TestCA(tmp_path / "other")
    client = client_for(tls_server, ca=str(other.ca_file), retries=0)
    with pytest.raises(PandaTransportError, match=r"SSL|certificate"):
        client.get_job_status([1])
    assert not client.is_alive()
    system = client_for(tls_server, ca=None, retries=0)  # the system CAs do not know it either
    with pytest.raises(PandaTransportError, match=r"SSL|certificate"):
        system.get_job_status([1])


def test_the_configured_ca_is_used_even_with_requests_ca_bundle_set(
    tls_server: PandaTestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_server.ca is not None
    other = TestCA(tmp_path / "other")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other.ca_file))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(other.ca_file))
    assert client_for(tls_server).get_job_status([1]) == {1: "notfound"}
    # and the other way round: the environment's CA does not rescue a wrong configured one
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(tls_server.ca.ca_file))
    with pytest.raises(PandaTransportError, match=r"SSL|certificate"):
        client_for(tls_server, ca=str(other.ca_file), retries=0).get_job_status([1])


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_insecure_skips_verification_with_a_warning(
    tls_server: PandaTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        client = client_for(tls_server, ca=None, insecure=True)
    assert "NOT verified" in caplog.text
    assert client.get_job_status([1]) == {1: "notfound"}


def test_the_proxy_is_presented_as_client_certificate(
    tls_server: PandaTestServer, proxy: Path
) -> None:
    client = client_for(tls_server, roles={"production": {"proxy": str(proxy)}})
    client.get_job_status([1])
    (request,) = tls_server.received()
    assert request.client_dn is not None
    assert request.client_dn.startswith("/O=act-test/CN=act-production/CN=")
    assert request.authorization is None
    anonymous = client_for(tls_server)
    anonymous.get_job_status([1])
    assert tls_server.received()[-1].client_dn is None


def test_a_server_requiring_a_client_certificate(tmp_path: Path) -> None:
    with PandaTestServer(tls=True, certs_dir=tmp_path, require_client_cert=True) as server:
        assert server.ca is not None
        proxy = server.ca.proxy(tmp_path / "proxy")
        anonymous = client_for(server, retries=0)
        assert not anonymous.is_alive()
        with pytest.raises(PandaTransportError, match="SSL"):
            anonymous.get_job_status([1])
        # The server counts a failed handshake in its handler thread, which may run after the
        # client has already seen the failure.
        wait_for(lambda: server.tls_failures >= 2, timeout=10, what="two failed handshakes")
        client = client_for(server, roles={"production": {"proxy": str(proxy)}})
        assert client.is_alive()
        (alive,) = server.received("system/is_alive")
        assert alive.client_dn is not None and alive.client_dn.startswith("/O=act-test/")


def test_token_and_origin_headers(tls_server: PandaTestServer, tmp_path: Path) -> None:
    token = jwt({"sub": "act", "exp": 4102444800})
    token_file = write_private(tmp_path / "token", token + "\n")
    tls_server.accepted_tokens = {token}
    client = client_for(
        tls_server,
        roles={"production": {"token_file": str(token_file), "origin": "atlas.production"}},
    )
    assert client.get_job_status([1]) == {1: "notfound"}
    (request,) = tls_server.received()
    assert request.authorization == f"Bearer {token}"
    assert request.origin == "atlas.production"
    assert request.client_dn is None
    write_private(token_file, jwt({"sub": "intruder", "exp": 4102444800}))
    with pytest.raises(PandaAuthError, match="Token authentication failed"):
        client.get_job_status([1])


def test_one_tcp_connection_for_many_calls(tls_server: PandaTestServer, proxy: Path) -> None:
    tls_server.seed(20)
    client = client_for(tls_server, roles={"production": {"proxy": str(proxy)}})
    ids = _acquire(client, 20)
    for panda_id in ids:
        client.update_job(JobUpdate(panda_id, "running", 1))
    client.update_jobs_bulk([JobUpdate(panda_id, "running", 1) for panda_id in ids])
    client.get_job_status(ids)
    assert len(tls_server.received()) == 23
    assert tls_server.connections == 1
    client.close()


def test_threads_can_share_one_client(tls_server: PandaTestServer, proxy: Path) -> None:
    ids = tls_server.seed(400)
    client = client_for(tls_server, roles={"production": {"proxy": str(proxy)}})
    assert sorted(_acquire(client, 400)) == ids
    failures: list[BaseException] = []

    def report(share: list[int]) -> None:
        try:
            for start in range(0, len(share), 20):
                batch = [JobUpdate(pid, "running", 1) for pid in share[start : start + 20]]
                results = client.update_jobs_bulk(batch)
                assert [r.panda_id for r in results] == [u.panda_id for u in batch]
                assert all(r.ok for r in results)
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=report, args=(ids[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert all(tls_server.states(pid) == ["running"] for pid in ids)
    assert tls_server.connections <= 4


def test_a_replaced_proxy_is_presented_on_a_new_connection(
    tls_server: PandaTestServer, proxy: Path, tmp_path: Path
) -> None:
    assert tls_server.ca is not None
    client = client_for(tls_server, roles={"production": {"proxy": str(proxy)}})
    client.get_job_status([1])
    client.get_job_status([1])
    assert tls_server.connections == 1
    renewed = tls_server.ca.proxy(tmp_path / "renewed", cn="act-renewed")
    os.replace(renewed, proxy)
    client.get_job_status([1])
    first, _, last = tls_server.received()
    assert first.client_dn is not None and "/CN=act-production/" in first.client_dn
    assert last.client_dn is not None and "/CN=act-renewed/" in last.client_dn
    assert tls_server.connections == 2


def test_an_expired_proxy_fails_calls_with_one_logged_error(
    tls_server: PandaTestServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert tls_server.ca is not None
    expired = tls_server.ca.proxy(tmp_path / "old", lifetime=-timedelta(hours=1))
    client = client_for(tls_server, roles={"production": {"proxy": str(expired)}})
    with caplog.at_level(logging.INFO, logger="act.atlas"):
        for _ in range(5):
            with pytest.raises(PandaAuthError, match="expired at") as error:
                client.update_job(JobUpdate(1, "running"))
            assert "pilot/update_job" in str(error.value)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "unusable" in errors[0].getMessage()
    assert tls_server.received() == []  # nothing was sent
    assert str(expired) in errors[0].getMessage()


def test_a_missing_proxy_is_an_auth_error(tls_server: PandaTestServer, tmp_path: Path) -> None:
    settings = settings_for(tls_server, roles={"production": {"proxy": str(tmp_path / "none")}})
    client = PandaClient(settings, FileCredentials(settings))
    with pytest.raises(PandaAuthError, match="file not found"):
        _acquire(client)
