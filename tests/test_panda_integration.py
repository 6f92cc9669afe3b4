"""act's own PanDA client and daemons against the REAL PanDA server (panda-server 1.0.4).

Everything here goes through act's code (``PandaClient``, the fetcher, the propagator,
app_status, the engine daemons with the local back end); the server of
``tests/harness/panda-server`` is only read directly to check what it stored (its tables and its
``panda-api_pilot.log``). Each test seeds a queue of its own, so runs in parallel do not take each
other's jobs. What the server answers is documented call by call in
``tests/test_panda_real_server.py``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from act.atlas.config import Context
from act.atlas.credentials import FileCredentials
from act.atlas.panda_client import (
    JobUpdate,
    PandaAuthError,
    PandaClient,
    PandaRefused,
    PandaTransportError,
)
from act.atlas.panda_settings import PandaServerSettings
from act.atlas.propagator import PropagatorOptions
from act.atlas.reporting import due_now, with_report
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs, transitions
from act.common.states import Actor, Layer
from act.common.transitions import create_jobs
from act.service.daemons import resolve
from act.testing.panda import TestCA
from tests.support.bridge import (
    LOCAL_CE,
    NODE,
    SLEEPING_PILOT,
    api_log_updates,
    as_read_by_the_pilot,
    bridge_config,
    panda_settings,
)
from tests.support.dbs import url_text
from tests.support.panda_real import PandaServer
from tests.support.procs import REPO, env, wait_for, write_config

pytestmark = pytest.mark.panda


# -- settings and helpers ------------------------------------------------------------------------


def client_for(settings: PandaServerSettings) -> PandaClient:
    return PandaClient(settings, FileCredentials(settings))


@pytest.fixture
def client(panda_server: PandaServer) -> Iterator[PandaClient]:
    with client_for(panda_settings(panda_server)) as panda:
        yield panda


def private_copy(path: Path, *parts: Path) -> Path:
    """``parts`` concatenated into ``path``, mode 0600 (a proxy file: certificate + key)."""
    path.write_bytes(b"".join(part.read_bytes() for part in parts))
    path.chmod(0o600)
    return path


def acquire(panda: PandaClient, queue: str, n: int) -> list[int]:
    jobs = panda.acquire_jobs(queue=queue, prod_source_label="managed", n_jobs=n, node=NODE)
    return [job.panda_id for job in jobs]


# -- the client ---------------------------------------------------------------------------------


def test_is_alive(client: PandaClient, panda_server: PandaServer) -> None:
    assert client.is_alive() is True
    settings = panda_settings(panda_server, url="https://127.0.0.1:1")  # nothing listens there
    with client_for(settings) as nowhere:
        assert nowhere.is_alive() is False


def test_acquire_jobs_returns_the_seeded_jobs_with_their_spec_verbatim(
    client: PandaClient, panda_server: PandaServer, panda_queue: str
) -> None:
    first, second = panda_server.add_jobs(panda_queue, 2, parameters="-c 'echo act'", inputs=1)
    replies: list[str] = []

    jobs = client.acquire_jobs(
        queue=panda_queue,
        prod_source_label="managed",
        n_jobs=5,
        node=NODE,
        computing_element="ce.act.test",
        on_reply=replies.append,
    )

    assert [job.panda_id for job in jobs] == [first, second]
    (reply,) = replies
    for job in jobs:
        assert job.raw_format == "json"
        assert job.raw in reply  # the job's text exactly as the server sent it
        assert json.loads(job.raw) == job.spec
    spec = jobs[0].spec
    files = {f["type"]: f for f in panda_server.files(first)}
    assert (spec["PandaID"], spec["jobPars"], spec["inFiles"], spec["GUID"], spec["logFile"]) == (
        first,
        "-c 'echo act'",
        f"act.test.in.{first}.0",
        files["input"]["guid"],
        f"act.test.log.{first}.tgz",
    )
    row = panda_server.job(first)
    assert row is not None
    assert (row.status, row.modification_host, row.computing_element) == (
        "sent",
        NODE,
        "ce.act.test",
    )
    # an empty queue is no error
    assert (
        client.acquire_jobs(queue=panda_queue, prod_source_label="managed", n_jobs=5, node=NODE)
        == []
    )


def test_bulk_updates_through_every_state_and_the_adder_finishes_the_job(
    client: PandaClient, panda_server: PandaServer, panda_queue: str
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    assert acquire(client, panda_queue, 1) == [panda_id]
    fields = {"node": NODE, "siteName": panda_queue, "coreCount": 1, "cpuConsumptionTime": 10}

    for state in ("starting", "running", "transferring"):
        [result] = client.update_jobs_bulk([JobUpdate(panda_id, state, 1, fields)])
        assert (result.panda_id, result.ok, result.command, result.error) == (
            panda_id,
            True,
            None,
            None,
        )
        assert client.get_job_status([panda_id]) == {panda_id: state}

    final = {
        **fields,
        "transExitCode": 0,
        "pilotErrorCode": 0,
        "xml": panda_server.output_report(panda_id),  # job_output_report in the new API
    }
    [result] = client.update_jobs_bulk([JobUpdate(panda_id, "finished", 1, final)])
    assert (result.ok, result.command) == (True, None)
    assert client.get_job_status([panda_id]) == {panda_id: "holding"}
    # the same final report again: PanDA says it has it
    [again] = client.update_jobs_bulk([JobUpdate(panda_id, "finished", 1, final)])
    assert (again.ok, again.command) == (True, "alreadydone")

    assert panda_server.run_adder([panda_id]) == {panda_id: "finished"}
    assert client.get_job_status([panda_id]) == {panda_id: "finished"}
    row = panda_server.job(panda_id)
    assert row is not None and (row.table, row.modification_host) == ("jobsarchived4", NODE)


def test_a_failed_job_ends_failed_with_act_error_codes(
    client: PandaClient, panda_server: PandaServer, panda_queue: str
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    acquire(client, panda_queue, 1)
    report = {
        "pilotErrorCode": 9000,
        "pilotErrorDiag": "CE job failed (exit code 3)",
        "transExitCode": "3",  # typed to an int for the new API by the client
        "xml": panda_server.output_report(panda_id),
    }
    result = client.update_job(JobUpdate(panda_id, "failed", 1, report))
    assert (result.ok, result.command) == (True, None)
    assert panda_server.run_adder([panda_id]) == {panda_id: "failed"}
    row = panda_server.job(panda_id)
    assert row is not None
    assert (row.table, row.pilot_error_code, row.trans_exit_code) == ("jobsarchived4", 9000, "3")


def test_several_jobs_in_one_bulk_call_each_get_their_own_answer(
    client: PandaClient, panda_server: PandaServer, panda_queue: str
) -> None:
    first, second = panda_server.add_jobs(panda_queue, 2)
    acquire(client, panda_queue, 2)
    unknown = 1_999_999_999

    results = client.update_jobs_bulk(
        [
            JobUpdate(second, "running", 1),
            JobUpdate(unknown, "running", 1),
            JobUpdate(first, "running", 2),  # wrong attempt number
        ]
    )

    assert [(r.panda_id, r.ok, r.command) for r in results] == [
        (second, True, None),
        (unknown, True, "tobekilled"),  # 1.0.4: not 'badattemptnr' (test_panda_real_server.py)
        (first, True, "tobekilled"),
    ]
    assert client.get_job_status([first, second, unknown]) == {
        first: "sent",  # the wrong attempt changed nothing
        second: "running",
        unknown: "notfound",
    }


def test_the_certificate_without_role_is_refused_with_a_clear_error(
    panda_server: PandaServer, panda_queue: str, tmp_path: Path
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    proxy = private_copy(tmp_path / "user-proxy.pem", panda_server.user_cert, panda_server.user_key)
    settings = panda_settings(panda_server, roles={"production": {"proxy": str(proxy)}})
    with client_for(settings) as panda:
        with pytest.raises(PandaAuthError) as acquiring:
            acquire(panda, panda_queue, 1)
        assert str(acquiring.value) == (
            "PanDA pilot/acquire_jobs: no production/pilot role in VOMS FQANs or non pilot owner"
        )
        with pytest.raises(PandaAuthError) as bulk:
            panda.update_jobs_bulk([JobUpdate(panda_id, "running", 1)])
        assert str(bulk.value) == (
            "PanDA pilot/update_jobs_bulk: production or pilot role required"
        )
        with pytest.raises(PandaAuthError) as single:
            panda.update_job(JobUpdate(panda_id, "running", 1))
        assert "production or pilot role required" in str(single.value)
        assert single.value.panda_id == panda_id
        # reading needs no role
        assert panda.get_job_status([panda_id]) == {panda_id: "activated"}
    row = panda_server.job(panda_id)
    assert row is not None and row.status == "activated"


def test_tls_with_a_wrong_ca_fails_naming_the_cause(
    panda_server: PandaServer, panda_queue: str, tmp_path: Path
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    other = TestCA(tmp_path / "other-ca")
    with client_for(panda_settings(panda_server, ca=str(other.ca_file), retries=2)) as panda:
        assert panda.is_alive() is False
        with pytest.raises(PandaTransportError) as error:
            acquire(panda, panda_queue, 1)
    assert "CERTIFICATE_VERIFY_FAILED" in str(error.value)
    assert error.value.call == "pilot/acquire_jobs"
    assert error.value.unsent is True  # the handshake failed: PanDA handed out nothing
    row = panda_server.job(panda_id)
    assert row is not None and row.status == "activated"


def test_the_legacy_api_is_refused_by_a_1_0_server_with_the_cause_named(
    panda_server: PandaServer, panda_queue: str
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    legacy = client_for(panda_settings(panda_server, api="legacy"))
    with legacy, pytest.raises(PandaRefused) as error:
        acquire(legacy, panda_queue, 1)
    assert str(error.value) == "PanDA getJob: HTTP 403: ERROR : method getJob is forbidden"
    row = panda_server.job(panda_id)
    assert row is not None and row.status == "activated"


def test_event_ranges_of_a_job_that_is_not_event_service(
    client: PandaClient, panda_server: PandaServer, panda_queue: str, caplog: Any
) -> None:
    # An event-service job needs JEDI (a task with its JEDI_Events rows), which this server has
    # not: a plain job has no ranges, and reporting ranges hits the 1.0.4 HTTP 500 bug, which the
    # client takes as done (the server does the update before failing to serialise its reply).
    (panda_id,) = panda_server.add_jobs(panda_queue)
    acquire(client, panda_queue, 1)
    assert client.acquire_event_ranges(panda_id, jobset_id=7, task_id=4242, n_ranges=10) == []
    with caplog.at_level(logging.WARNING, logger="act.atlas.panda_client"):
        client.update_event_ranges(
            [{"eventRangeID": f"4242-{panda_id}-1-1-1", "eventStatus": "finished"}]
        )
    assert any("HTTP 500" in r.getMessage() for r in caplog.records), caplog.text


# -- the daemons ----------------------------------------------------------------------------------


def test_the_fetcher_stores_the_seeded_jobs(
    bridge_for: Any, panda_server: PandaServer, panda_queue: str, tmp_path: Path
) -> None:
    ids = panda_server.add_jobs(panda_queue, 3, parameters="-c 'echo fetched'")
    bridge = bridge_for(bridge_config(tmp_path, panda_server, panda_queue))

    bridge.run("panda_fetcher")
    bridge.run("panda_fetcher")  # nothing left at PanDA: nothing more, no error

    for panda_id in ids:
        job = bridge.job(panda_id)
        spec = json.loads(job.spec)
        assert (job.state, job.queue, job.attempt, job.spec_format) == (
            "received",
            panda_queue,
            1,
            "json",
        )
        assert (spec["PandaID"], spec["jobPars"]) == (panda_id, "-c 'echo fetched'")
        row = panda_server.job(panda_id)
        assert row is not None and (row.status, row.modification_host) == ("sent", NODE)
    with bridge.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(panda_jobs)).scalar() == 3


@pytest.mark.slow
def test_act_daemon_panda_fetcher_once_stores_the_seeded_jobs(
    db: Database, db_url: URL, panda_server: PandaServer, panda_queue: str, tmp_path: Path
) -> None:
    ids = panda_server.add_jobs(panda_queue, 2)
    config = bridge_config(tmp_path, panda_server, panda_queue)
    config["db"] = {"url": url_text(db_url)}
    config["daemons"] = {"panda_fetcher": {"options": {"node": NODE}}}
    path = write_config(tmp_path / "act.yaml", config)

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "act.service.daemon",
            "panda_fetcher",
            "--config",
            str(path),
            "--once",
        ],
        env=env(tmp_path),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    with db.read() as conn:
        stored = conn.execute(
            sa.select(panda_jobs.c.panda_id, panda_jobs.c.state).order_by(panda_jobs.c.panda_id)
        ).all()
    assert [tuple(r) for r in stored] == [(panda_id, "received") for panda_id in ids]
    served = [panda_server.job(i) for i in ids]
    assert [job.status if job else None for job in served] == ["sent", "sent"]


def test_the_propagator_reports_every_state_and_the_adder_ends_the_jobs(
    bridge_for: Any, panda_server: PandaServer, panda_queue: str, tmp_path: Path
) -> None:
    good, bad = panda_server.add_jobs(panda_queue, 2)
    bridge = bridge_for(bridge_config(tmp_path, panda_server, panda_queue))
    bridge.run("panda_fetcher", "propagator")

    def server_status(panda_id: int) -> str:
        row = panda_server.job(panda_id)
        assert row is not None
        return row.status

    assert [server_status(good), server_status(bad)] == ["starting", "starting"]
    for to_state, actor, told in (
        ("queued", Actor.TRANSLATOR, "starting"),
        ("running", Actor.APP_STATUS, "running"),
        ("transferring", Actor.APP_STATUS, "transferring"),
        ("tovalidate", Actor.APP_STATUS, "transferring"),
    ):
        for panda_id in (good, bad):
            bridge.move(panda_id, to_state, actor, due_now())
        bridge.run("propagator")
        for panda_id in (good, bad):
            assert (bridge.job(panda_id).panda_status, server_status(panda_id)) == (told, told)

    # the validator's decisions (a later issue: made here by hand, with its actor)
    bridge.move(
        good,
        "finished",
        Actor.VALIDATOR,
        with_report({"xml": panda_server.output_report(good), "transExitCode": 0}),
    )
    bridge.move(
        bad,
        "failed",
        Actor.VALIDATOR,
        with_report(
            {
                "xml": panda_server.output_report(bad),
                "pilotErrorCode": 1305,
                "pilotErrorDiag": "payload failed",
                "transExitCode": 65,
            }
        ),
    )
    bridge.run("propagator")
    assert [bridge.job(i).state for i in (good, bad)] == ["done", "donefailed"]
    assert [server_status(good), server_status(bad)] == ["holding", "holding"]
    bridge.run("propagator")  # nothing is due any more

    assert panda_server.run_adder([good, bad]) == {good: "finished", bad: "failed"}
    with client_for(panda_settings(panda_server)) as panda:
        assert panda.get_job_status([good, bad]) == {good: "finished", bad: "failed"}
    row = panda_server.job(bad)
    assert row is not None and (row.pilot_error_code, row.trans_exit_code) == (1305, "65")
    # what the server received, from its own log: every state once per report, one final each
    assert api_log_updates(panda_server, good) == [
        "starting",  # received
        "starting",  # queued
        "running",
        "transferring",
        "transferring",  # tovalidate
        "finished",
    ]
    assert (
        api_log_updates(panda_server, bad)[-1] == "failed"
        and api_log_updates(panda_server, bad).count("failed") == 1
    )


def test_a_panda_kill_reaches_the_ce_job_and_panda_gets_one_final_report(
    bridge_for: Any, panda_server: PandaServer, panda_queue: str, tmp_path: Path
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    bridge = bridge_for(bridge_config(tmp_path, panda_server, panda_queue, pilot=SLEEPING_PILOT))
    bridge.run("panda_fetcher", "translator", "submitter")

    def running() -> bool:
        bridge.follow_ce()
        return bool(bridge.job(panda_id).state == "running")

    wait_for(running, 60, "the local CE job running")
    bridge.run("propagator")
    row = panda_server.job(panda_id)
    assert row is not None and (row.status, row.command) == ("running", None)

    assert panda_server.kill([panda_id])["data"] == [True]
    row = panda_server.job(panda_id)
    assert row is not None and (row.status, row.command) == ("running", "tobekilled")

    bridge.db.run(
        lambda c: c.execute(
            sa.update(panda_jobs)
            .where(panda_jobs.c.panda_id == panda_id)
            .values(next_report_at=due_now()["next_report_at"])
        )
    )  # the next heartbeat is due now (instead of after panda.interval)
    bridge.run("propagator")
    job = bridge.job(panda_id)
    assert (job.state, job.panda_command) == ("tobekilled", "tobekilled")

    def cancelled() -> bool:
        bridge.follow_ce()
        return bool(bridge.job(panda_id).state == "cancelled")

    wait_for(cancelled, 60, "the PanDA job cancelled after its CE job")
    assert bridge.ce_states(panda_id) in (["cancelled"], ["toclean"])

    bridge.run("propagator")
    assert bridge.job(panda_id).state == "donecancelled"
    row = panda_server.job(panda_id)
    assert row is not None and (row.status, row.pilot_error_code) == ("holding", 1144)
    bridge.run("propagator")
    assert api_log_updates(panda_server, panda_id).count("failed") == 1
    # the Adder ends a killed job (pilot error 1144 after a kill) as cancelled
    assert panda_server.run_adder([panda_id]) == {panda_id: "cancelled"}


def test_a_wrong_attempt_or_an_unknown_job_is_stopped_and_changes_nothing_at_panda(
    bridge_for: Any, panda_server: PandaServer, panda_queue: str, tmp_path: Path
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    unknown = 1_900_000_000 + panda_id  # no such job at the server
    bridge = bridge_for(bridge_config(tmp_path, panda_server, panda_queue))
    bridge.run("panda_fetcher")
    bridge.db.run(
        lambda c: c.execute(
            sa.update(panda_jobs).where(panda_jobs.c.panda_id == panda_id).values(attempt=2)
        )
    )
    bridge.db.run(
        lambda c: create_jobs(
            c,
            Layer.PANDA,
            [
                {
                    "panda_id": unknown,
                    "queue": panda_queue,
                    "attempt": 1,
                    "spec": json.dumps({"PandaID": unknown}),
                    "spec_format": "json",
                    **due_now(),
                }
            ],
            "received",
            actor=Actor.PANDA_FETCHER,
        )
    )

    bridge.run("propagator")  # 1.0.4 answers both with tobekilled
    for job_id in (panda_id, unknown):
        job = bridge.job(job_id)
        assert (job.state, job.panda_command) == ("tobekilled", "tobekilled")
    bridge.run("app_status")  # no CE job: cancelled at once
    bridge.run("propagator")  # the final 'failed' of a killed job, answered tobekilled again
    assert [bridge.job(i).state for i in (panda_id, unknown)] == ["donecancelled"] * 2

    row = panda_server.job(panda_id)
    assert row is not None
    assert (row.status, row.attempt_nr, row.command, row.pilot_error_code) == ("sent", 1, None, 0)
    assert panda_server.job(unknown) is None
    assert api_log_updates(panda_server, panda_id) == [
        "starting",
        "failed",
    ]  # both ignored by the server


@pytest.mark.slow
def test_full_pipeline_from_real_panda_to_a_local_ce_and_back(
    bridge_for: Any, panda_server: PandaServer, panda_queue: str, tmp_path: Path
) -> None:
    """fetcher → translator → submitter → local back end → poller → CE fetcher → app_status →
    propagator, with the real server at both ends. This stand-in pilot returns the job spec as
    its heartbeat (to show the spec reached it verbatim), not an output report, so the
    validator's ``tovalidate → finished`` is made here by hand, with its actor and a report;
    tests/test_validation_e2e.py runs the real validator on outputs on a real SE.
    """
    (panda_id,) = panda_server.add_jobs(panda_queue, parameters="-c 'echo pipeline'")
    bridge = bridge_for(bridge_config(tmp_path, panda_server, panda_queue))
    bridge.run("panda_fetcher", "propagator", "translator", "submitter")

    def validating() -> bool:
        bridge.follow_ce(validate=False)
        bridge.run("propagator")
        return bool(bridge.job(panda_id).state == "tovalidate")

    wait_for(validating, 90, "the PanDA job to validate after its local CE job")
    job = bridge.job(panda_id)
    assert job.panda_status == "transferring"
    row = panda_server.job(panda_id)
    assert row is not None and row.status == "transferring"
    with bridge.db.read() as conn:
        ce = conn.execute(sa.select(ce_jobs).where(ce_jobs.c.panda_id == panda_id)).one()
    assert (ce.state, ce.ce_name) == ("done", LOCAL_CE)
    # the pilot read every field of the job as PanDA sent it, and its arguments name the queue
    read = json.loads((Path(ce.output_dir) / "heartbeat.json").read_text())
    assert read == as_read_by_the_pilot(job.spec)
    log_file = json.loads(job.spec)["logFile"]
    assert f"-q {panda_queue}" in (Path(ce.output_dir) / log_file).read_text()

    bridge.move(
        panda_id,
        "finished",
        Actor.VALIDATOR,
        with_report({"xml": panda_server.output_report(panda_id), "transExitCode": 0}),
    )
    bridge.run("propagator", "app_status")
    assert bridge.job(panda_id).state == "done"
    assert bridge.ce_states(panda_id) == ["toclean"]
    bridge.run("cleaner", "propagator")
    assert bridge.ce_states(panda_id) == ["cleaned"]

    assert panda_server.run_adder([panda_id]) == {panda_id: "finished"}
    updates = api_log_updates(panda_server, panda_id)
    assert updates[0] == "starting" and updates[-1] == "finished"
    assert updates.count("finished") == 1


@pytest.mark.slow
def test_a_truepilot_job_is_done_when_its_ce_job_is_and_act_sends_no_final_report(
    bridge_for: Any, panda_server: PandaServer, panda_queue: str, tmp_path: Path
) -> None:
    (panda_id,) = panda_server.add_jobs(panda_queue)
    bridge = bridge_for(bridge_config(tmp_path, panda_server, panda_queue, truepilot=True))
    bridge.run("panda_fetcher", "propagator", "translator", "submitter")

    def done() -> bool:
        bridge.follow_ce()
        bridge.run("propagator")
        return bool(bridge.job(panda_id).state == "done")

    wait_for(done, 90, "the truepilot PanDA job done after its local CE job")
    assert bridge.ce_states(panda_id) == ["toclean"]
    bridge.run("propagator")
    # the pilot reports the final state itself (this stand-in does not): act sent heartbeats
    # only (running too if a poll saw the CE job running), never a final report
    row = panda_server.job(panda_id)
    assert row is not None and row.status in ("starting", "running")
    updates = api_log_updates(panda_server, panda_id)
    assert updates[0] == "starting" and set(updates) <= {"starting", "running"}


def test_two_propagators_at_once_send_each_final_report_once(
    bridge_for: Any, panda_server: PandaServer, panda_queue: str, tmp_path: Path
) -> None:
    ids = panda_server.add_jobs(panda_queue, 6)
    bridge = bridge_for(bridge_config(tmp_path, panda_server, panda_queue))
    bridge.run("panda_fetcher")
    for panda_id in ids:
        for to_state, actor in (
            ("queued", Actor.TRANSLATOR),
            ("running", Actor.APP_STATUS),
            ("tovalidate", Actor.APP_STATUS),
        ):
            bridge.move(panda_id, to_state, actor, {})
        report = {"xml": panda_server.output_report(panda_id), "transExitCode": 0}
        bridge.move(panda_id, "finished", Actor.VALIDATOR, with_report(report))
    base = bridge.ctx("propagator")
    instances = [
        dataclasses.replace(
            base,
            instance=f"test:propagator:{n}",
            options=PropagatorOptions(batch_size=1, in_flight=1),
            cache={},
        )
        for n in (1, 2)
    ]

    def work(ctx: Context) -> None:
        for _ in range(20):
            resolve("propagator").run_once(ctx)

    threads = [threading.Thread(target=work, args=(ctx,)) for ctx in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert [bridge.job(i).state for i in ids] == ["done"] * 6
    for panda_id in ids:
        assert api_log_updates(panda_server, panda_id) == ["finished"]  # from the server's log
        row = panda_server.job(panda_id)
        assert row is not None and row.status == "holding"
    with bridge.db.read() as conn:
        moved = conn.execute(
            sa.select(transitions.c.job_id).where(
                transitions.c.layer == "panda", transitions.c.to_state == "done"
            )
        ).scalars()
        assert sorted(moved) == sorted(bridge.job(i).id for i in ids)  # once each
