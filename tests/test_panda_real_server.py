"""What the real PanDA server (panda-server 1.0.4, /api/v1) answers, asserted field by field.

These tests talk plain ``requests`` to the server of ``tests/harness/panda-server`` and read its
database; they document the behaviour act's PanDA client and daemons rely on. Each test seeds a
queue of its own, so runs in parallel do not take each other's jobs.
"""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import pytest
import requests

from tests.support.panda_real import PandaServer

pytestmark = pytest.mark.panda

NULL_COMMAND = {"success": True, "message": "", "data": {"StatusCode": 0, "command": "NULL"}}


def post(session: requests.Session, url: str, body: dict[str, Any]) -> dict[str, Any]:
    reply = session.post(url, json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    result: dict[str, Any] = reply.json()
    return result


def acquire(server: PandaServer, queue: str, n: int, **extra: Any) -> list[dict[str, Any]]:
    with server.session() as session:
        reply = post(
            session,
            f"{server.api}/pilot/acquire_jobs",
            {
                "site_name": queue,
                "node": "wn01.test",
                "computing_element": "ce.test",
                "prod_source_label": "managed",
                "n_jobs": n,
                **extra,
            },
        )
    assert reply["success"] is True and reply["message"] == "", reply
    assert reply["data"]["StatusCode"] == 0
    jobs: list[dict[str, Any]] = reply["data"]["jobs"]
    return jobs


def heartbeat(server: PandaServer, panda_id: int, status: str, **extra: Any) -> dict[str, Any]:
    with server.session() as session:
        return post(
            session,
            f"{server.api}/pilot/update_job",
            {"job_id": panda_id, "job_status": status, "attempt_nr": 1, **extra},
        )


def bulk(server: PandaServer, updates: list[dict[str, Any]]) -> dict[str, Any]:
    with server.session() as session:
        return post(
            session,
            f"{server.api}/pilot/update_jobs_bulk",
            {"job_list": updates, "harvester_id": "act-tests"},
        )


def job_status(server: PandaServer, *panda_ids: int) -> list[dict[str, Any]]:
    with server.session() as session:
        reply = session.get(
            f"{server.api}/pilot/get_job_status", params={"job_ids": list(panda_ids)}, timeout=60
        )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["success"] is True, body
    statuses: list[dict[str, Any]] = body["data"]
    return statuses


def test_is_alive(panda_server: PandaServer) -> None:
    with panda_server.session() as session:
        reply = session.get(f"{panda_server.api}/system/is_alive", timeout=30)
    assert reply.status_code == 200
    # a JSON body (because the request says Accept: application/json), labelled text/plain
    assert reply.headers["Content-Type"] == "text/plain"
    assert reply.json() == {"success": True, "message": "", "data": None}


def test_without_accept_json_the_reply_is_python_repr(panda_server: PandaServer) -> None:
    with panda_server.session() as session:
        del session.headers["Accept"]
        reply = session.get(f"{panda_server.api}/system/is_alive", timeout=30)
    assert reply.text == "{'success': True, 'message': '', 'data': None}"


def test_the_https_port_wants_a_client_certificate(panda_server: PandaServer) -> None:
    with requests.Session() as session:
        session.trust_env = False
        with pytest.raises(requests.exceptions.SSLError):
            session.get(f"{panda_server.api}/system/is_alive", verify=str(panda_server.ca))


def test_acquire_jobs_returns_the_seeded_jobs_with_their_spec(
    panda_server: PandaServer, panda_queue: str
) -> None:
    first, second = panda_server.add_jobs(
        panda_queue,
        2,
        parameters="-c 'echo act'",
        core_count=8,
        ram_mb=16000,
        walltime_s=7200,
        inputs=1,
    )
    jobs = acquire(panda_server, panda_queue, 5)

    assert [job["PandaID"] for job in jobs] == [first, second]
    job = jobs[0]
    files = {f["type"]: f for f in panda_server.files(first)}
    assert {
        key: job[key]
        for key in (
            "StatusCode",
            "prodSourceLabel",
            "transformation",
            "jobPars",
            "attemptNr",
            "coreCount",
            "minRamCount",
            "maxWalltime",
            "resource_type",
            "jobName",
            "logFile",
            "logGUID",
            "outFiles",
            "inFiles",
            "GUID",
            "fsize",
            "checksum",
            "scopeIn",
            "scopeLog",
            "scopeOut",
            "destinationSE",
            "prodUserID",
            "currentPriority",
            "taskID",
            "swRelease",
            "homepackage",
            "cmtConfig",
            "realDatasetsIn",
            "destinationDblock",
        )
    } == {
        "StatusCode": 0,
        "prodSourceLabel": "managed",
        "transformation": "/bin/bash",
        "jobPars": "-c 'echo act'",
        "attemptNr": 1,
        "coreCount": 8,
        "minRamCount": 16000,
        "maxWalltime": 7200,
        "resource_type": "MCORE",
        "jobName": f"act_test_job.{first}",
        "logFile": f"act.test.log.{first}.tgz",
        "logGUID": files["log"]["guid"],
        "outFiles": f"act.test.log.{first}.tgz,act.test.out.{first}.root",
        "inFiles": f"act.test.in.{first}.0",
        "GUID": files["input"]["guid"],
        "fsize": "1024",  # input file fields are comma lists of strings
        "checksum": "ad:0a1b2c3d",
        "scopeIn": "act_test",
        "scopeLog": "act_test",
        "scopeOut": "act_test",
        "destinationSE": panda_queue,
        "prodUserID": panda_server.pilot_dn,
        "currentPriority": 1000,
        "taskID": 4242,
        "swRelease": "Atlas-99.0.0",
        "homepackage": "AtlasOffline/99.0.0",
        "cmtConfig": "x86_64-el9-gcc13-opt",
        "realDatasetsIn": "act.test.input",
        "destinationDblock": f"act.test.log.{first},act.test.output.{first}",
    }
    # dispatched: 'sent', with the node and CE the request named
    row = panda_server.job(first)
    assert row is not None
    assert (row.table, row.status, row.modification_host, row.computing_element) == (
        "jobsactive4",
        "sent",
        "wn01.test",
        "ce.test",
    )
    # nothing left: success false, no StatusCode (20 is legacy only)
    with panda_server.session() as session:
        empty = post(session, f"{panda_server.api}/pilot/acquire_jobs", {"site_name": panda_queue})
    assert empty == {"success": False, "message": "No jobs in PanDA", "data": None}


def test_acquire_jobs_takes_the_highest_priority_first(
    panda_server: PandaServer, panda_queue: str
) -> None:
    (low,) = panda_server.add_jobs(panda_queue, priority=100)
    (high,) = panda_server.add_jobs(panda_queue, priority=900)
    assert [job["PandaID"] for job in acquire(panda_server, panda_queue, 1)] == [high]
    assert [job["PandaID"] for job in acquire(panda_server, panda_queue, 1)] == [low]


def test_bulk_updates_through_to_finished_with_the_adder(
    panda_server: PandaServer, panda_queue: str
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    acquire(panda_server, panda_queue, 1)

    for status in ("starting", "running", "transferring"):
        reply = bulk(
            panda_server,
            [
                {
                    "job_id": panda_id,
                    "job_status": status,
                    "attempt_nr": 1,
                    "node": "wn01.test",
                    "site_name": panda_queue,
                }
            ],
        )
        assert reply == {"success": True, "message": "", "data": [NULL_COMMAND]}
        row = panda_server.job(panda_id)
        assert row is not None and (row.table, row.status) == ("jobsactive4", status)

    final = {
        "job_id": panda_id,
        "job_status": "finished",
        "attempt_nr": 1,
        "trans_exit_code": 0,
        "pilot_error_code": 0,
        "meta_data": "{}",
        "job_output_report": panda_server.output_report(panda_id),
    }
    assert bulk(panda_server, [final]) == {"success": True, "message": "", "data": [NULL_COMMAND]}
    # a final update is stored as 'holding'; the Adder makes it 'finished'
    assert job_status(panda_server, panda_id) == [
        {"job_id": panda_id, "status": "holding", "attempt_number": 1}
    ]
    # the same final update again
    assert bulk(panda_server, [final])["data"] == [
        {"success": True, "message": "", "data": {"StatusCode": 0, "command": "alreadydone"}}
    ]

    assert panda_server.run_adder([panda_id]) == {panda_id: "finished"}

    assert job_status(panda_server, panda_id) == [
        {"job_id": panda_id, "status": "finished", "attempt_number": 1}
    ]
    row = panda_server.job(panda_id)
    assert row is not None and (row.table, row.trans_exit_code) == ("jobsarchived4", "0")
    # a heartbeat for a job that is over
    assert bulk(panda_server, [{"job_id": panda_id, "job_status": "running", "attempt_nr": 1}])[
        "data"
    ] == [{"success": True, "message": "", "data": {"StatusCode": 0, "command": "tobekilled"}}]


def test_a_failed_job_ends_failed_with_its_error_codes(
    panda_server: PandaServer, panda_queue: str
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    acquire(panda_server, panda_queue, 1)
    assert heartbeat(panda_server, panda_id, "running") == NULL_COMMAND
    reply = heartbeat(
        panda_server,
        panda_id,
        "failed",
        pilot_error_code=1305,
        pilot_error_diag="payload failed",
        trans_exit_code=65,
        job_output_report=panda_server.output_report(panda_id),
    )
    assert reply == NULL_COMMAND

    assert panda_server.run_adder([panda_id]) == {panda_id: "failed"}
    row = panda_server.job(panda_id)
    assert row is not None
    assert (row.table, row.pilot_error_code, row.trans_exit_code) == ("jobsarchived4", 1305, "65")


def test_bulk_reply_has_one_envelope_per_job_in_order(
    panda_server: PandaServer, panda_queue: str
) -> None:
    first, second = panda_server.add_jobs(panda_queue, 2)
    acquire(panda_server, panda_queue, 2)
    reply = bulk(
        panda_server,
        [
            {"job_id": second, "job_status": "running", "attempt_nr": 1},
            {"job_id": 987654321, "job_status": "running", "attempt_nr": 1},
            {"job_id": first, "job_status": "starting", "attempt_nr": 1},
        ],
    )
    assert reply == {
        "success": True,
        "message": "",
        "data": [
            NULL_COMMAND,
            {"success": True, "message": "", "data": {"StatusCode": 0, "command": "tobekilled"}},
            NULL_COMMAND,
        ],
    }
    statuses = job_status(panda_server, first, second, 987654321)
    assert statuses == [
        {"job_id": first, "status": "starting", "attempt_number": 1},
        {"job_id": second, "status": "running", "attempt_number": 1},
        {"job_id": 987654321, "status": "not found", "attempt_number": 0},
    ]


def test_a_kill_makes_the_next_heartbeat_carry_tobekilled(
    panda_server: PandaServer, panda_queue: str
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    acquire(panda_server, panda_queue, 1)
    assert heartbeat(panda_server, panda_id, "running") == NULL_COMMAND

    assert panda_server.kill([panda_id]) == {"success": True, "message": "", "data": [True]}

    # the job keeps its state; the command waits in commandtopilot
    row = panda_server.job(panda_id)
    assert row is not None
    assert (row.table, row.status, row.command) == ("jobsactive4", "running", "tobekilled")
    tobekilled = {
        "success": True,
        "message": "",
        "data": {"StatusCode": 0, "command": "tobekilled"},
    }
    assert heartbeat(panda_server, panda_id, "running") == tobekilled
    assert heartbeat(panda_server, panda_id, "running") == tobekilled  # every time, not once
    # the final report of the killed job is taken (holding), still answered with the command
    reply = heartbeat(
        panda_server,
        panda_id,
        "failed",
        pilot_error_code=1144,
        pilot_error_diag="killed",
        job_output_report="{}",
    )
    assert reply == tobekilled
    row = panda_server.job(panda_id)
    assert row is not None and (row.status, row.pilot_error_code) == ("holding", 1144)


def test_killing_a_job_not_yet_dispatched_cancels_it(
    panda_server: PandaServer, panda_queue: str
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    assert panda_server.kill([panda_id]) == {"success": True, "message": "", "data": [True]}
    row = panda_server.job(panda_id)
    assert row is not None
    assert (row.table, row.status, row.command) == ("jobsarchived4", "cancelled", "tobekilled")
    with panda_server.session() as session:
        empty = post(session, f"{panda_server.api}/pilot/acquire_jobs", {"site_name": panda_queue})
    assert empty["message"] == "No jobs in PanDA"


def test_a_wrong_attempt_number_is_answered_tobekilled_and_changes_nothing(
    panda_server: PandaServer, panda_queue: str
) -> None:
    # panda-server 1.0.4 never sends 'badattemptnr' from update_job: the UPDATE is conditional on
    # the attempt number, and a job it does not match is "already deleted or bad attempt number"
    (panda_id,) = panda_server.add_jobs(panda_queue)
    acquire(panda_server, panda_queue, 1)

    reply = heartbeat(panda_server, panda_id, "running", attempt_nr=2)

    assert reply == {
        "success": True,
        "message": "",
        "data": {"StatusCode": 0, "command": "tobekilled"},
    }
    row = panda_server.job(panda_id)
    assert row is not None
    assert (row.status, row.attempt_nr, row.command) == ("sent", 1, None)
    assert heartbeat(panda_server, panda_id, "running", attempt_nr=1) == NULL_COMMAND


def test_a_heartbeat_for_an_unknown_job_is_answered_tobekilled(panda_server: PandaServer) -> None:
    reply = heartbeat(panda_server, 2_000_000_000, "running")
    assert reply == {
        "success": True,
        "message": "",
        "data": {"StatusCode": 0, "command": "tobekilled"},
    }


def test_protocol_errors(panda_server: PandaServer, panda_queue: str) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    api = panda_server.api
    with panda_server.session() as session:
        assert post(
            session, f"{api}/pilot/update_job", {"job_id": panda_id, "job_status": "bogus"}
        ) == {
            "success": False,
            "message": "Invalid job status: bogus",
            "data": {"StatusCode": 50},
        }
        assert post(
            session, f"{api}/pilot/update_job", {"job_id": str(panda_id), "job_status": "running"}
        ) == {
            "success": False,
            "message": "Type error: 'job_id' must be of type int, got str.",
            "data": None,
        }
        reply = session.get(f"{api}/pilot/acquire_jobs", params={"site_name": panda_queue})
        assert reply.json() == {
            "success": False,
            "message": "expecting POST, received GET",
            "data": None,
        }
        legacy = session.post(
            f"{panda_server.url}/server/panda/getJob", data={"siteName": panda_queue}
        )
        assert (legacy.status_code, legacy.text) == (403, "ERROR : method getJob is forbidden")
    row = panda_server.job(panda_id)
    assert row is not None and row.status == "activated"


def test_the_certificate_without_role_is_refused(
    panda_server: PandaServer, panda_queue: str
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    api = panda_server.api
    with panda_server.session(role=False) as session:
        assert post(session, f"{api}/pilot/acquire_jobs", {"site_name": panda_queue}) == {
            "success": False,
            "message": "no production/pilot role in VOMS FQANs or non pilot owner",
            "data": None,
        }
        refused = {"success": False, "message": "production or pilot role required", "data": None}
        assert (
            post(session, f"{api}/pilot/update_job", {"job_id": panda_id, "job_status": "running"})
            == refused
        )
        assert (
            post(
                session,
                f"{api}/pilot/update_jobs_bulk",
                {"job_list": [{"job_id": panda_id, "job_status": "running"}]},
            )
            == refused
        )
        # the secure read-only calls need no role
        statuses = session.get(f"{api}/pilot/get_job_status", params={"job_ids": [panda_id]})
        assert statuses.json()["data"] == [
            {"job_id": panda_id, "status": "activated", "attempt_number": 1}
        ]
    row = panda_server.job(panda_id)
    assert row is not None and row.status == "activated"


def test_the_proxy_file_alone_authenticates_with_the_production_role(
    panda_server: PandaServer, panda_queue: str
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    with requests.Session() as session:
        session.trust_env = False
        session.cert = str(panda_server.pilot_proxy)  # certificate and key in one file
        session.verify = str(panda_server.ca)
        session.headers["Accept"] = "application/json"
        jobs = post(session, f"{panda_server.api}/pilot/acquire_jobs", {"site_name": panda_queue})
    assert [job["PandaID"] for job in jobs["data"]["jobs"]] == [panda_id]


def test_the_server_listens_on_loopback_only(panda_server: PandaServer) -> None:
    listening = subprocess.run(
        ["ss", "-Hltn", "( sport = :25443 or sport = :25080 )"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\n")
    local = sorted(line.split()[3] for line in listening if line.strip())
    assert local == ["127.0.0.1:25080", "127.0.0.1:25443"]
    addresses = subprocess.run(
        ["hostname", "-I"], check=True, capture_output=True, text=True
    ).stdout.split()
    for address in addresses:
        for port in (25443, 25080):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((address, port), timeout=5).close()
