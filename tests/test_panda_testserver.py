"""The PanDA TEST DOUBLE answers like the real server (panda.md §3), records and injects faults.

These tests talk to it with plain ``requests``, not act's client, so that the reply shapes are
checked independently of the code that parses them.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests

from act.testing.panda import EVENT_BUG_TEXT, PandaTestServer, make_job_spec

JSON = {"Accept": "application/json"}


@pytest.fixture
def server() -> Iterator[PandaTestServer]:
    with PandaTestServer() as test_server:
        yield test_server


def _post(server: PandaTestServer, method: str, body: dict[str, Any]) -> Any:
    reply = requests.post(f"{server.url}/api/v1/{method}", json=body, headers=JSON, timeout=10)
    assert reply.status_code == 200, reply.text
    return reply.json()


def _legacy(
    server: PandaTestServer, method: str, form: dict[str, str], accept_json: bool = False
) -> requests.Response:
    headers = JSON if accept_json else {}
    return requests.post(
        f"{server.url}/server/panda/{method}", data=form, headers=headers, timeout=10
    )


def test_job_specs_are_realistic() -> None:
    spec = make_job_spec(42, cores=8, n_inputs=3, n_outputs=2)
    assert spec["PandaID"] == 42 and spec["coreCount"] == 8 and spec["resource_type"] == "MCORE"
    n_in = len(spec["inFiles"].split(","))
    for key in ("GUID", "fsize", "checksum", "scopeIn", "ddmEndPointIn", "prodDBlocks"):
        assert len(spec[key].split(",")) == n_in == 3, key
    n_out = len(spec["outFiles"].split(","))
    for key in ("destinationDblock", "ddmEndPointOut", "destinationDBlockToken"):
        assert len(spec[key].split(",")) == n_out == 3, key
    assert spec["outFiles"].split(",")[0] == spec["logFile"]
    assert all(c.startswith("ad:") for c in spec["checksum"].split(","))
    user = make_job_spec(43, label="user")
    assert user["prodSourceLabel"] == "user" and user["resource_type"] == "SCORE"
    assert make_job_spec(42) == make_job_spec(42)  # deterministic per PandaID


def test_acquire_jobs_reply_shape(server: PandaTestServer) -> None:
    server.seed(2, queue="Q1")
    server.seed(1, queue="Q1", label="user")
    reply = _post(
        server,
        "pilot/acquire_jobs",
        {"site_name": "Q1", "prod_source_label": "managed", "n_jobs": 5, "node": "wn"},
    )
    assert reply["success"] is True and reply["message"] == ""
    assert reply["data"]["StatusCode"] == 0
    assert [job["PandaID"] for job in reply["data"]["jobs"]] == [1, 2]
    assert all(job["StatusCode"] == 0 and job["nSent"] == 1 for job in reply["data"]["jobs"])
    again = _post(server, "pilot/acquire_jobs", {"site_name": "Q1", "n_jobs": 5})
    assert again == {"success": False, "message": "No jobs in PanDA", "data": None}
    user = _post(server, "pilot/acquire_jobs", {"site_name": "Q1", "prod_source_label": "user"})
    assert [job["PandaID"] for job in user["data"]["jobs"]] == [3]


def test_a_job_never_heard_of_after_its_hand_out_is_sent_again(server: PandaTestServer) -> None:
    server.seed(2, queue="Q1")
    first = _post(server, "pilot/acquire_jobs", {"site_name": "Q1", "n_jobs": 5})
    assert [job["PandaID"] for job in first["data"]["jobs"]] == [1, 2]
    server._update(2, "starting", None, {})  # job 2's pilot reported; job 1's reply was lost
    server.sent_timeout = 0.0
    again = _post(server, "pilot/acquire_jobs", {"site_name": "Q1", "n_jobs": 5})
    assert [(job["PandaID"], job["nSent"]) for job in again["data"]["jobs"]] == [(1, 2)]


def test_new_api_negative_cases_match_the_real_server(server: PandaTestServer) -> None:
    base = f"{server.url}/api/v1"
    get = requests.get(f"{base}/pilot/acquire_jobs", headers=JSON, timeout=10)
    assert get.json() == {
        "success": False,
        "message": "expecting POST, received GET",
        "data": None,
    }
    form = requests.post(
        f"{base}/pilot/acquire_jobs", data={"site_name": "Q", "n_jobs": "1"}, timeout=10
    )
    assert "Type error: 'n_jobs' must be of type int, got str." in form.text
    plain = requests.get(f"{base}/system/is_alive", timeout=10)
    assert plain.headers["Content-Type"].startswith("text/plain")
    assert ast.literal_eval(plain.text) == {"success": True, "message": "", "data": None}
    forbidden = requests.post(f"{base}/pilot/getJob", json={}, timeout=10)
    assert forbidden.status_code == 403 and forbidden.text == "ERROR : method getJob is forbidden"
    typed = _post(server, "pilot/update_job", {"job_id": "2", "job_status": "running"})
    assert typed["message"] == "Type error: 'job_id' must be of type int, got str."
    bogus = _post(server, "pilot/update_job", {"job_id": 2, "job_status": "bogus"})
    assert bogus == {
        "success": False,
        "message": "Invalid job status: bogus",
        "data": {"StatusCode": 50},
    }
    unknown = _post(server, "pilot/update_job", {"job_id": 123456, "job_status": "running"})
    assert unknown["data"] == {"StatusCode": 0, "command": "tobekilled"}
    bad_bulk = _post(server, "pilot/update_jobs_bulk", {"job_list": [{"job_id": 1, "nonsense": 1}]})
    assert bad_bulk["success"] is False and bad_bulk["data"] == []


def test_updates_are_recorded_with_commands(server: PandaTestServer) -> None:
    (pid,) = server.seed(1)
    _post(server, "pilot/acquire_jobs", {"site_name": "TEST_QUEUE"})
    for state in ("starting", "running"):
        reply = _post(server, "pilot/update_job", {"job_id": pid, "job_status": state})
        assert reply["data"] == {"StatusCode": 0, "command": "NULL"}
    bulk = _post(
        server,
        "pilot/update_jobs_bulk",
        {"job_list": [{"job_id": pid, "job_status": "finished", "attempt_nr": 1}]},
    )
    assert bulk["data"] == [
        {"success": True, "message": "", "data": {"StatusCode": 0, "command": "NULL"}}
    ]
    repeat = _post(server, "pilot/update_job", {"job_id": pid, "job_status": "finished"})
    assert repeat["data"]["command"] == "alreadydone"
    assert server.states(pid) == ["starting", "running", "finished", "finished"]
    assert server.final_state(pid) == "finished" and server.final_reports(pid) == 2
    status = requests.get(
        f"{server.url}/api/v1/pilot/get_job_status",
        params={"job_ids": [pid, 999]},
        headers=JSON,
        timeout=10,
    ).json()
    assert status["data"] == [
        {"job_id": pid, "status": "holding", "attempt_number": 1},
        {"job_id": 999, "status": "not found", "attempt_number": 0},
    ]
    server.set_command(pid, "debug")
    command = _post(server, "pilot/update_job", {"job_id": pid, "job_status": "running"})
    assert command["data"]["command"] == "debug"
    job_status = requests.get(
        f"{server.url}/api/v1/job/get_status", params={"job_ids": pid}, headers=JSON, timeout=10
    ).json()
    assert job_status["data"] == [{"status": "holding", "command": "debug"}]
    bad_attempt = _post(
        server, "pilot/update_job", {"job_id": pid, "job_status": "running", "attempt_nr": 3}
    )
    # as panda-server 1.0.4: a wrong attempt number is answered tobekilled, even over a command
    assert bad_attempt["data"]["command"] == "tobekilled"
    server.set_command(pid, None)
    bad_attempt = _post(
        server, "pilot/update_job", {"job_id": pid, "job_status": "running", "attempt_nr": 3}
    )
    assert bad_attempt["data"]["command"] == "tobekilled"


def test_legacy_replies_are_url_encoded_unless_json_is_asked_for(
    server: PandaTestServer,
) -> None:
    server.seed(3)
    single = _legacy(server, "getJob", {"siteName": "TEST_QUEUE"})
    fields = dict(parse_qsl(single.text))
    assert single.text.startswith("StatusCode=0&PandaID=1&") and fields["coreCount"] == "1"
    listed = _legacy(server, "getJob", {"siteName": "TEST_QUEUE", "nJobs": "2"})
    reply = dict(parse_qsl(listed.text))
    assert reply["StatusCode"] == "0"
    assert [job["PandaID"] for job in json.loads(reply["jobs"])] == [2, 3]
    none = _legacy(server, "getJob", {"siteName": "TEST_QUEUE"}, accept_json=True)
    assert none.json() == {"StatusCode": 20, "errorDialog": "no jobs in PanDA"}
    update = _legacy(server, "updateJob", {"jobId": "1", "state": "running"})
    assert dict(parse_qsl(update.text)) == {"StatusCode": "0", "command": "NULL"}
    ignored = _legacy(server, "updateJob", {"jobId": "1", "state": "bogus"})
    assert dict(parse_qsl(ignored.text))["StatusCode"] == "0"  # 0.8.1 ignores a bad state
    bulk = _legacy(
        server,
        "updateJobsInBulk",
        {"jobList": json.dumps([{"jobId": 2, "state": "starting"}, {"jobId": 9, "state": "x"}])},
    )
    ok, replies = bulk.json()
    assert ok is True and replies[0] == "StatusCode=0&command=NULL" and len(replies) == 2
    status = _legacy(server, "getStatus", {"ids": "1 2 77"})
    assert "status=running+starting+notfound" in status.text
    assert "attemptNr=1+1+0" in status.text
    assert server.states(1) == ["running"]


def test_event_ranges_and_the_http_500_bug(server: PandaTestServer) -> None:
    server.add_jobs([make_job_spec(5, event_service=True)])
    ranges = _post(
        server,
        "event/acquire_event_ranges",
        {"job_id": 5, "jobset_id": 7, "task_id": 4242, "n_ranges": 2},
    )["data"]
    assert [r["eventRangeID"] for r in ranges] == ["4242-5-0-1-1", "4242-5-1-1-1"]
    assert {"startEvent", "lastEvent", "LFN", "GUID", "scope"} <= ranges[0].keys()
    update = json.dumps([{"eventRangeID": "4242-5-0-1-1", "eventStatus": "finished"}])
    reply = requests.post(
        f"{server.url}/api/v1/event/update_event_ranges",
        json={"event_ranges": update},
        headers=JSON,
        timeout=10,
    )
    assert reply.status_code == 500
    assert reply.text == EVENT_BUG_TEXT.format(returns="[true]", commands="{}")
    assert server.event_status(5)["4242-5-0-1-1"] == "finished"  # the update happened anyway
    legacy = _legacy(server, "getEventRanges", {"pandaID": "5", "nRanges": "1"})
    assert json.loads(dict(parse_qsl(legacy.text))["eventRanges"])[0]["eventRangeID"] == (
        "4242-5-2-1-1"
    )


def test_keep_alive_and_connection_counting(server: PandaTestServer) -> None:
    with requests.Session() as session:
        for _ in range(10):
            session.get(f"{server.url}/api/v1/system/is_alive", headers=JSON, timeout=10)
    requests.get(f"{server.url}/api/v1/system/is_alive", timeout=10)
    assert server.connections == 2
    assert len(server.received("system/is_alive")) == 11


def test_injected_faults_then_normal_service(server: PandaTestServer) -> None:
    url = f"{server.url}/api/v1/system/is_alive"
    server.inject("http", status=503, count=2)
    server.inject("malformed", method="pilot/update_job")
    assert requests.get(url, timeout=10).status_code == 503
    assert requests.get(url, timeout=10).status_code == 503
    bad = requests.post(
        f"{server.url}/api/v1/pilot/update_job",
        json={"job_id": 1, "job_status": "running"},
        timeout=10,
    )
    assert bad.status_code == 200 and bad.text.startswith("<html>")
    assert requests.get(url, timeout=10).status_code == 200
    server.inject("drop")
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=10)
    assert server.faults_served == 4
    server.refuse_role = True
    refused = _post(server, "pilot/update_job", {"job_id": 1, "job_status": "running"})
    assert refused["message"] == "production or pilot role required"
    refused_legacy = _legacy(server, "updateJob", {"jobId": "1", "state": "running"})
    assert refused_legacy.text == "StatusCode=60"


def test_outage_refuses_connections_and_restore_reuses_the_port(
    server: PandaTestServer,
) -> None:
    url = f"{server.url}/api/v1/system/is_alive"
    port = server.port
    server.outage()
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
    server.restore()
    assert server.port == port and requests.get(url, timeout=10).status_code == 200


def test_concurrent_updates_are_all_recorded(server: PandaTestServer) -> None:
    ids = server.seed(8)

    def report(pid: int) -> None:
        with requests.Session() as session:
            for _ in range(25):
                session.post(
                    f"{server.url}/api/v1/pilot/update_job",
                    json={"job_id": pid, "job_status": "running"},
                    headers=JSON,
                    timeout=10,
                )

    threads = [threading.Thread(target=report, args=(pid,)) for pid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert server.update_count() == 200
    assert all(server.states(pid) == ["running"] * 25 for pid in ids)


def test_https_with_a_throw_away_ca(tmp_path: Path) -> None:
    with PandaTestServer(tls=True, certs_dir=tmp_path) as server:
        assert server.ca is not None and server.url.startswith("https://")
        ok = requests.get(
            f"{server.url}/api/v1/system/is_alive",
            verify=str(server.ca.ca_file),
            headers=JSON,
            timeout=10,
        )
        assert ok.json()["success"] is True
        with pytest.raises(requests.exceptions.SSLError):
            requests.get(f"{server.url}/api/v1/system/is_alive", verify=True, timeout=10)
        assert (tmp_path / "server.key").stat().st_mode & 0o077 == 0


def test_runs_as_a_command_with_tls(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    certs, proxy = tmp_path / "certs", tmp_path / "proxy"
    command = [sys.executable, "-m", "act.testing.panda", "--port", str(port)]
    command += ["--tls", str(certs), "--proxy", str(proxy)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert f"https://127.0.0.1:{port}" in process.stdout.readline()
        assert str(certs / "ca.pem") in process.stdout.readline()
        assert str(proxy) in process.stdout.readline()
        reply = requests.get(
            f"https://127.0.0.1:{port}/api/v1/system/is_alive",
            verify=str(certs / "ca.pem"),
            cert=(str(proxy), str(proxy)),
            headers=JSON,
            timeout=10,
        )
        assert reply.json()["success"] is True
        assert proxy.stat().st_mode & 0o077 == 0
    finally:
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0


def test_runs_as_a_command(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "act.testing.panda", "--port", str(port), "--jobs", "4"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"http://127.0.0.1:{port}" in line and "4 jobs" in line
        reply = requests.post(
            f"http://127.0.0.1:{port}/api/v1/pilot/acquire_jobs",
            json={"site_name": "TEST_QUEUE", "n_jobs": 10},
            headers=JSON,
            timeout=10,
        ).json()
        cores = sorted(job["coreCount"] for job in reply["data"]["jobs"])
        assert cores == [1, 1, 1, 8]
    finally:
        os.kill(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) == 0
