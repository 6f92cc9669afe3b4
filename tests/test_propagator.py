"""The propagator against the PanDA TEST DOUBLE (act.testing.panda), on every backend."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from act.atlas.config import Context
from act.atlas.propagator import DAEMON, PropagatorOptions, run_once
from act.atlas.propagator.jobs import CRASH_POINT, TOLD
from act.atlas.reporting import due_now, report_fields, with_report
from act.common.config import DaemonSettings
from act.common.daemon import run_daemon
from act.common.db import Database
from act.common.faults import EXIT_CODE
from act.common.schema import panda_jobs
from act.common.schema import transitions as history
from act.common.states import Actor, Layer, PandaJobState
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs, transition
from act.service.daemons import resolve
from act.service.settings import Settings
from act.testing.panda import PandaTestServer, Received, new_api
from tests.support.contexts import daemon_context
from tests.support.dbs import url_text
from tests.support.jobs import ce_row, make_jobs
from tests.support.panda import settings_for
from tests.support.procs import daemon_once, write_config

DONE = {"finished": "done", "failed": "donefailed", "cancelled": "donecancelled"}


class CountingPandaTestServer(PandaTestServer):
    """The PanDA TEST DOUBLE, counting how many requests it serves at the same time."""

    __test__ = False

    def __init__(self) -> None:
        super().__init__()
        self.active = 0
        self.most_active = 0
        self._count_lock = threading.Lock()

    def _handle(self, request: Any) -> tuple[int, str, str] | None:
        with self._count_lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        try:
            return super()._handle(request)
        finally:
            with self._count_lock:
                self.active -= 1


@pytest.fixture(params=["new", "legacy"])
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server() -> Iterator[CountingPandaTestServer]:
    test_server = CountingPandaTestServer()  # its __enter__ is typed as PandaTestServer's
    with test_server:
        yield test_server


def context(db: Database, server: PandaTestServer, *, api: str = "new", **options: Any) -> Context:
    """A propagator context like run_daemon makes, with the client pointed at ``server``."""
    panda = settings_for(server, api=api)  # panda.retries as configured: 3
    settings = Settings().model_copy(update={"panda": panda})
    values = {"outage_backoff": 0.0, **options}
    return daemon_context(
        db, settings, "propagator", options=PropagatorOptions.model_validate(values)
    )


def jobs_in(
    db: Database,
    server: PandaTestServer,
    state: str,
    count: int = 1,
    *,
    due: datetime | None = None,
    seed: bool = True,
    **columns: Any,
) -> list[int]:
    """``count`` PanDA jobs in ``state`` (also held by the test server), due now; their PandaIDs."""
    if seed:
        panda_ids = server.seed(count)
    else:  # jobs PanDA does not know
        panda_ids = list(range(900_000 + len(server.jobs), 900_000 + len(server.jobs) + count))
    ids = db.run(lambda c: make_jobs(c, Layer.PANDA, state, count, first_panda_id=panda_ids[0]))
    values = {"next_report_at": due or utcnow() - timedelta(seconds=1), **columns}
    db.run(lambda c: c.execute(sa.update(panda_jobs).where(panda_jobs.c.id.in_(ids)), values))
    return panda_ids


def row(db: Database, panda_id: int) -> Any:
    with db.read() as conn:
        return conn.execute(sa.select(panda_jobs).where(panda_jobs.c.panda_id == panda_id)).one()


def drain(ctx: Context, cycles: int = 50) -> int:
    """Run cycles while the propagator says more work is waiting; how many ran."""
    for n in range(1, cycles + 1):
        if not run_once(ctx):
            return n
    raise AssertionError("the propagator never ran out of work")


def bulk_calls(server: PandaTestServer) -> list[list[int]]:
    """The PandaIDs of each bulk call the server answered, in order."""
    calls: list[list[int]] = []
    for request in server.received():
        calls.extend(_bulk_ids(request))
    return calls


def sent(server: PandaTestServer) -> list[int]:
    """The PandaIDs of every bulk call, in the order they were sent."""
    return [panda_id for call in bulk_calls(server) for panda_id in call]


def _bulk_ids(request: Received) -> list[list[int]]:
    if request.method == "pilot/update_jobs_bulk":
        return [[item["job_id"] for item in request.params["job_list"]]]
    if request.method == "updateJobsInBulk":
        return [[int(item["jobId"]) for item in json.loads(request.params["jobList"])]]
    return []


def cancel(db: Database, job_id: int) -> None:
    """What the app layer does when the CE job of a job to be killed has ended."""
    db.run(
        lambda c: transition(
            c,
            Layer.PANDA,
            [job_id],
            "tobekilled",
            "cancelled",
            actor=Actor.APP_STATUS,
            values=due_now(),
        )
    )


def field(fields: dict[str, Any], legacy: str, new: str) -> Any:
    return fields.get(new, fields.get(legacy))


# -- what PanDA is told ---------------------------------------------------------------------------


def test_every_state_is_reported_as_panda_expects(
    db: Database, server: CountingPandaTestServer, api: str
) -> None:
    report = {"xml": {"out.root": {"guid": "g1", "fsize": 10, "adler32": "0a0b0c0d"}}}
    panda_ids: dict[PandaJobState, int] = {}
    for state in TOLD:
        extra: dict[str, Any] = {"report": json.dumps(report)} if state == "finished" else {}
        (panda_ids[state],) = jobs_in(db, server, state, **extra)
    (operator_killed,) = jobs_in(db, server, "tobekilled", panda_status="running")
    ctx = context(db, server, api=api)
    before = utcnow()

    assert run_once(ctx) is False  # fewer due jobs than one cycle takes

    for state, panda_id in panda_ids.items():
        assert server.states(panda_id) == [TOLD[state]], state
        job = row(db, panda_id)
        assert job.panda_status == TOLD[state]
        assert job.panda_reported_at >= before
        assert job.report_failures == 0 and job.lease_owner is None
        if state in DONE:
            assert job.state == DONE[state] and job.next_report_at is None
        else:
            assert job.state == state
            interval, jitter = ctx.options.interval, ctx.options.jitter
            assert job.next_report_at >= before + timedelta(seconds=interval * (1 - jitter))
            assert job.next_report_at <= utcnow() + timedelta(seconds=interval * (1 + jitter))
    assert server.states(operator_killed) == ["running"]
    assert row(db, operator_killed).state == "tobekilled"
    cancelled = server.last_fields(panda_ids[PandaJobState.CANCELLED])
    assert int(field(cancelled, "pilotErrorCode", "pilot_error_code")) == 1144
    assert field(cancelled, "pilotErrorDiag", "pilot_error_diag") == "job killed by act"
    finished = server.last_fields(panda_ids[PandaJobState.FINISHED])
    assert json.loads(field(finished, "xml", "job_output_report")) == report["xml"]
    assert field(finished, "siteName", "site_name") == "TEST_QUEUE"
    assert field(finished, "schedulerID", "scheduler_id") == "act"
    for panda_id in panda_ids.values():
        assert server.final_reports(panda_id) == (1 if server.final_state(panda_id) else 0)


def test_a_state_change_makes_the_report_due_at_once(
    db: Database, server: CountingPandaTestServer
) -> None:
    (panda_id,) = jobs_in(db, server, "queued")
    ctx = context(db, server)
    run_once(ctx)
    assert server.states(panda_id) == ["starting"]
    assert row(db, panda_id).next_report_at > utcnow() + timedelta(minutes=20)
    run_once(ctx)
    assert server.states(panda_id) == ["starting"]  # not due again yet

    job_id = row(db, panda_id).id
    db.run(
        lambda c: transition(
            c, Layer.PANDA, [job_id], "queued", "running", actor=Actor.APP_STATUS, values=due_now()
        )
    )
    assert row(db, panda_id).next_report_at <= utcnow()
    run_once(ctx)
    assert server.states(panda_id) == ["starting", "running"]

    final = with_report({"pilotErrorCode": 1305, "pilotErrorDiag": "payload failed"})
    db.run(
        lambda c: transition(
            c, Layer.PANDA, [job_id], "running", "failed", actor=Actor.APP_STATUS, values=final
        )
    )
    run_once(ctx)
    assert server.states(panda_id) == ["starting", "running", "failed"]
    assert int(field(server.last_fields(panda_id), "pilotErrorCode", "pilot_error_code")) == 1305
    assert row(db, panda_id).state == "donefailed"


def test_reports_go_in_batches_with_a_bounded_number_in_flight(
    db: Database, server: CountingPandaTestServer
) -> None:
    panda_ids = jobs_in(db, server, "running", 14)
    server.delay = 0.3  # every call takes a while, so the pool's calls overlap
    ctx = context(db, server, batch_size=2, in_flight=3)

    assert run_once(ctx) is True  # a full cycle: more may be waiting
    assert [len(call) for call in bulk_calls(server)] == [2, 2, 2]
    assert 1 < server.most_active <= 3
    assert drain(ctx) == 2  # then 6 and 2 more jobs
    assert [len(call) for call in bulk_calls(server)] == [2] * 7
    assert server.most_active <= 3
    assert sorted(sent(server)) == panda_ids
    assert all(server.states(panda_id) == ["running"] for panda_id in panda_ids)


def test_big_reports_make_smaller_bulk_calls_and_one_over_the_cap_goes_alone(
    db: Database, server: CountingPandaTestServer
) -> None:
    """A final report's metaData can take megabytes; a web server refuses a request body above
    its limit (HTTP 413, measured on the real PanDA server: 10 MiB), which would fail every job
    of the call. Batches are cut by size as well as by count."""
    panda_ids = jobs_in(db, server, "running", 5)
    sizes = [60_000, 60_000, 60_000, 300_000, 10]
    for panda_id, size in zip(panda_ids, sizes, strict=True):
        report = with_report({"metaData": json.dumps({"pad": "x" * size})})
        db.run(
            lambda c: c.execute(
                sa.update(panda_jobs).where(panda_jobs.c.panda_id == panda_id).values(**report)
            )
        )
    ctx = context(db, server, batch_size=100, in_flight=1, max_request_bytes=150_000)
    drain(ctx)
    calls = bulk_calls(server)
    assert calls == [panda_ids[:2], [panda_ids[2]], [panda_ids[3]], [panda_ids[4]]]
    for panda_id, size in zip(panda_ids, sizes, strict=True):
        sent_meta = server.last_fields(panda_id)["meta_data"]
        assert json.loads(sent_meta) == {"pad": "x" * size}  # whole, never cut


def test_two_instances_never_report_a_job_twice(
    db: Database, server: CountingPandaTestServer
) -> None:
    panda_ids = jobs_in(db, server, "running", 60)
    server.delay = 0.05
    contexts = [context(db, server, batch_size=5, in_flight=2) for _ in range(2)]
    contexts[1].instance = "test:2:def"
    errors: list[BaseException] = []

    def work(ctx: Context) -> None:
        try:
            drain(ctx)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(ctx,)) for ctx in contexts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert sorted(sent(server)) == panda_ids  # each job in exactly one bulk call
    assert all(server.states(panda_id) == ["running"] for panda_id in panda_ids)


# -- outages ---------------------------------------------------------------------------------------


def test_a_backlog_after_an_outage_is_kept_and_drains_oldest_first(
    db: Database, server: CountingPandaTestServer, api: str, caplog: pytest.LogCaptureFixture
) -> None:
    now = utcnow()
    # Due times in an order unrelated to the PandaIDs; finals and heartbeats mixed.
    ages = [5, 40, 12, 33, 1, 27, 18, 9]
    due = {}
    for n, age in enumerate(ages):
        state = "finished" if n % 2 else "running"
        (panda_id,) = jobs_in(db, server, state, due=now - timedelta(minutes=age))
        due[panda_id] = now - timedelta(minutes=age)
    ctx = context(db, server, api=api, batch_size=2, in_flight=1)
    before = {panda_id: row(db, panda_id) for panda_id in due}

    server.outage()
    with caplog.at_level(logging.INFO, logger="act"):
        assert run_once(ctx) is False
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1 and "unreachable" in problems[0].getMessage()
    assert problems[0].levelno == logging.ERROR
    for panda_id, old in before.items():
        job = row(db, panda_id)
        assert (job.state, job.next_report_at, job.report_failures, job.panda_status) == (
            old.state,
            old.next_report_at,
            0,
            None,
        )
        assert job.lease_owner is None  # given back: any instance may send it later

    server.restore()
    drain(ctx)
    oldest_first = sorted(due, key=lambda panda_id: due[panda_id])
    assert sent(server) == oldest_first
    for panda_id in due:
        job = row(db, panda_id)
        if server.final_state(panda_id):
            assert server.final_reports(panda_id) == 1 and job.state == "done"
        else:
            assert server.states(panda_id) == ["running"] and job.state == "running"


def test_an_outage_pauses_the_daemon_with_backoff(
    db: Database, server: CountingPandaTestServer
) -> None:
    jobs_in(db, server, "running", 3)
    ctx = context(db, server, outage_backoff=300.0)
    server.outage()
    assert run_once(ctx) is False
    server.restore()
    assert run_once(ctx) is False  # paused: no call even though PanDA is back
    assert server.received() == []
    ctx.cache["propagator_pause"].until = 0.0  # the pause is over
    run_once(ctx)
    assert len(bulk_calls(server)) == 1


def test_an_auth_error_is_logged_once_per_cycle(
    db: Database, server: CountingPandaTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    panda_ids = jobs_in(db, server, "running", 6)
    server.refuse_role = True
    ctx = context(db, server, batch_size=1, in_flight=3)
    for cycle in (1, 2):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="act"):
            run_once(ctx)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1, (cycle, [r.getMessage() for r in errors])
        assert "credential" in errors[0].getMessage()
    for panda_id in panda_ids:
        job = row(db, panda_id)
        assert job.panda_status is None and job.report_failures == 0
        assert job.next_report_at <= utcnow()  # still due
    server.refuse_role = False
    drain(ctx)
    assert all(row(db, panda_id).panda_status == "running" for panda_id in panda_ids)


# -- PanDA's commands -----------------------------------------------------------------------------


def test_tobekilled_kills_the_job_and_panda_gets_no_more_reports(
    db: Database, server: CountingPandaTestServer, api: str
) -> None:
    (panda_id,) = jobs_in(db, server, "running")
    server.set_command(panda_id, "tobekilled")
    ctx = context(db, server, api=api)
    run_once(ctx)
    job = row(db, panda_id)
    assert (job.state, job.panda_command, job.next_report_at) == ("tobekilled", "tobekilled", None)
    assert job.panda_command_at is not None

    run_once(ctx)
    assert server.states(panda_id) == ["running"]  # no heartbeat while the CE job is killed

    # The app layer cancels the CE job; then PanDA gets what a killed pilot sends.
    cancel(db, job.id)
    run_once(ctx)
    assert server.states(panda_id) == ["running", "failed"]
    fields = server.last_fields(panda_id)
    assert int(field(fields, "pilotErrorCode", "pilot_error_code")) == 1144
    assert "PanDA's request" in field(fields, "pilotErrorDiag", "pilot_error_diag")
    assert row(db, panda_id).state == "donecancelled"  # PanDA answered tobekilled again: over


@pytest.mark.parametrize("command", ["badattemptnr", "alreadydone"])
def test_badattemptnr_and_alreadydone_stop_reports_and_kill_the_ce_job(
    db: Database, server: CountingPandaTestServer, command: str
) -> None:
    (panda_id,) = jobs_in(db, server, "queued")
    server.set_command(panda_id, command)
    ctx = context(db, server)
    run_once(ctx)
    job = row(db, panda_id)
    assert (job.state, job.panda_command, job.next_report_at) == ("tobekilled", command, None)
    cancel(db, job.id)
    run_once(ctx)
    assert server.states(panda_id) == ["starting"]  # PanDA wants no final report
    assert row(db, panda_id).state == "donecancelled"


def test_a_wrong_attempt_number_stops_the_job(
    db: Database, server: CountingPandaTestServer, api: str
) -> None:
    (panda_id,) = jobs_in(db, server, "running", attempt=2)  # PanDA is at attempt 1
    run_once(context(db, server, api=api))
    job = row(db, panda_id)
    # panda-server 1.0.4 answers tobekilled (tests/test_panda_real_server.py); older ones
    # (the legacy API) badattemptnr
    command = "tobekilled" if api == "new" else "badattemptnr"
    assert (job.state, job.panda_command) == ("tobekilled", command)


def test_a_command_answering_a_final_report_ends_the_job(
    db: Database, server: CountingPandaTestServer
) -> None:
    (known,) = jobs_in(db, server, "finished")
    (unknown,) = jobs_in(db, server, "failed", seed=False)  # PanDA answers tobekilled
    ctx = context(db, server)
    # PanDA already has the final report of `known` (e.g. the reply was lost): alreadydone.
    server._update(known, "finished", 1, {})
    run_once(ctx)
    assert (row(db, known).state, row(db, known).panda_command) == ("done", "alreadydone")
    assert (row(db, unknown).state, row(db, unknown).panda_command) == (
        "donefailed",
        "tobekilled",
    )


# -- final reports whose answer was lost ----------------------------------------------------------


def final_reasons(db: Database, panda_id: int) -> list[str]:
    with db.read() as conn:
        job_id = conn.execute(
            sa.select(panda_jobs.c.id).where(panda_jobs.c.panda_id == panda_id)
        ).scalar_one()
        return list(
            conn.execute(
                sa.select(history.c.reason).where(
                    history.c.layer == Layer.PANDA.value,
                    history.c.job_id == job_id,
                    history.c.to_state.in_(DONE.values()),
                )
            ).scalars()
        )


def test_a_final_report_whose_answer_was_lost_is_checked_not_sent_again(
    db: Database, server: CountingPandaTestServer, api: str
) -> None:
    finished, failed = jobs_in(db, server, "finished"), jobs_in(db, server, "failed")
    (running,) = jobs_in(db, server, "running")
    ctx = context(db, server, api=api)
    server.inject("lose_reply")  # PanDA takes the bulk update, its answer never arrives
    assert run_once(ctx) is False
    for panda_id in (*finished, *failed):
        assert server.final_reports(panda_id) == 1
        assert row(db, panda_id).state in DONE and row(db, panda_id).final_sent_at is not None
    assert row(db, running).final_sent_at is None  # only final reports are marked
    ctx.cache["propagator_pause"].until = 0.0
    drain(ctx)
    [finished_id], [failed_id] = finished, failed
    for panda_id, done in ((finished_id, "done"), (failed_id, "donefailed")):
        assert (row(db, panda_id).state, server.final_reports(panda_id)) == (done, 1)
        [reason] = final_reasons(db, panda_id)
        assert "in doubt: PanDA shows" in reason
    assert server.states(running) == ["running", "running"]  # the heartbeat simply went again


def test_a_final_report_in_doubt_that_panda_never_got_is_sent(
    db: Database, server: CountingPandaTestServer, api: str
) -> None:
    (panda_id,) = jobs_in(db, server, "finished", final_sent_at=utcnow() - timedelta(minutes=5))
    ctx = context(db, server, api=api)
    drain(ctx)
    assert (row(db, panda_id).state, server.final_reports(panda_id)) == ("done", 1)
    assert final_reasons(db, panda_id) == ["final report (finished) accepted"]


def test_final_reports_in_doubt_stay_due_while_panda_cannot_be_asked(
    db: Database, server: CountingPandaTestServer
) -> None:
    (panda_id,) = jobs_in(db, server, "failed", final_sent_at=utcnow())
    ctx = context(db, server)
    server.outage()
    assert run_once(ctx) is False
    assert row(db, panda_id).state == "failed" and row(db, panda_id).lease_owner is None
    server.restore()
    ctx.cache["propagator_pause"].until = 0.0
    drain(ctx)
    assert (row(db, panda_id).state, server.final_reports(panda_id)) == ("donefailed", 1)


@pytest.mark.slow
def test_a_propagator_killed_after_panda_took_the_final_reports_never_sends_them_twice(
    db: Database, db_url: URL, server: CountingPandaTestServer, tmp_path: Path
) -> None:
    panda_ids = jobs_in(db, server, "finished", 3)
    config = write_config(
        tmp_path / "act.yaml",
        {
            "root": str(tmp_path),
            "db": {"url": url_text(db_url)},
            "panda": settings_for(server, retries=0).model_dump(mode="json", exclude_unset=True),
            "daemons": {"propagator": {"lease": 1}},
        },
    )
    crashed = daemon_once("propagator", config, tmp_path, fault=CRASH_POINT)
    assert crashed.returncode == EXIT_CODE, crashed.stderr
    assert [server.final_reports(p) for p in panda_ids] == [1, 1, 1]
    assert {row(db, p).state for p in panda_ids} == {"finished"}
    time.sleep(1.2)  # the dead process's lease expires
    clean = daemon_once("propagator", config, tmp_path)
    assert clean.returncode == 0, clean.stderr
    assert {row(db, p).state for p in panda_ids} == {"done"}
    assert [server.final_reports(p) for p in panda_ids] == [1, 1, 1]


def test_a_final_report_sent_by_a_killed_propagator_is_not_sent_twice(
    db: Database, server: CountingPandaTestServer, api: str
) -> None:
    # A propagator killed after sending final reports, before recording PanDA's answers, left
    # final_sent_at: the next one asks PanDA and sends again only what PanDA did not get.
    sent_at = utcnow() - timedelta(seconds=30)
    arrived, lost = jobs_in(db, server, "finished", 2, final_sent_at=sent_at)
    server._update(arrived, "finished", 1, {})  # what the killed propagator's call did
    (fresh,) = jobs_in(db, server, "failed")  # an ordinary final report, nothing noted
    run_once(context(db, server, api=api))
    assert [server.final_reports(p) for p in (arrived, lost, fresh)] == [1, 1, 1]
    assert [row(db, p).state for p in (arrived, lost, fresh)] == ["done", "done", "donefailed"]
    assert row(db, arrived).panda_status == "finished"
    assert sorted(sent(server)) == sorted([lost, fresh])  # `arrived` was only looked up


def test_final_reports_are_noted_before_the_call(
    db: Database, server: CountingPandaTestServer
) -> None:
    (panda_id,) = jobs_in(db, server, "finished")
    noted: list[Any] = []
    original = server._update

    def spy(panda_id: int, *args: Any, **kwargs: Any) -> str:
        noted.append(row(db, panda_id).final_sent_at)  # what the database says during the call
        return original(panda_id, *args, **kwargs)

    server._update = spy  # type: ignore[method-assign]
    run_once(context(db, server))
    assert noted and noted[0] is not None
    assert server.final_reports(panda_id) == 1 and row(db, panda_id).state == "done"


# -- errors ---------------------------------------------------------------------------------------


def test_a_job_panda_refuses_is_retried_with_backoff(
    db: Database,
    server: CountingPandaTestServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad, good = jobs_in(db, server, "running", 2)
    original = new_api.NewApi._one_update

    def refuse_bad(api: Any, params: Any) -> tuple[bool, str, Any]:
        """The TEST DOUBLE answering a database error for one job (StatusCode 30)."""
        if params.get("job_id") == bad:
            return False, "failed to update the job", {"StatusCode": 30}
        return original(api, params)

    monkeypatch.setattr(new_api.NewApi, "_one_update", refuse_bad)
    ctx = context(db, server, retry_backoff=60.0)
    panda_job_id = row(db, bad).id
    for endpoint in ("old-ce.example", "new-ce.example"):  # the log lines name the newest CE job's
        db.run(
            lambda c: create_jobs(
                c,
                Layer.CE,
                [{**ce_row(endpoint), "panda_job_id": panda_job_id, "panda_id": bad}],
                "tosubmit",
                actor=Actor.TRANSLATOR,
            )
        )
    for failures in (1, 2):
        db.run(
            lambda c: c.execute(
                sa.update(panda_jobs)
                .where(panda_jobs.c.panda_id == bad)
                .values(next_report_at=utcnow() - timedelta(seconds=1))
            )
        )
        start = utcnow()
        with caplog.at_level(logging.WARNING, logger="act.propagator"):
            run_once(ctx)
        job = row(db, bad)
        assert job.report_failures == failures and job.panda_status is None
        delay = 60.0 * 2 ** (failures - 1)
        assert start + timedelta(seconds=delay) <= job.next_report_at
        assert job.next_report_at <= utcnow() + timedelta(seconds=delay)
    assert any(f"panda_id={bad} ce=new-ce.example:" in r.getMessage() for r in caplog.records)
    assert row(db, good).panda_status == "running" and row(db, good).report_failures == 0


def test_a_bulk_call_panda_refuses_counts_as_a_failure_of_each_job(
    db: Database, server: CountingPandaTestServer
) -> None:
    # the real server's web server answers a request body over its limit with HTTP 413
    panda_ids = jobs_in(db, server, "running", 2)
    server.inject("http", status=413, method="pilot/update_jobs_bulk")
    run_once(context(db, server, interval=100.0, retry_backoff=500.0))
    for panda_id in panda_ids:
        job = row(db, panda_id)
        assert job.report_failures == 1 and job.panda_status is None
        assert job.next_report_at > utcnow() + timedelta(seconds=90)  # capped at interval


def test_a_field_the_new_api_would_refuse_is_left_out_not_sent(
    db: Database, server: CountingPandaTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The new API refuses the whole call when one job's field has the wrong type: act does not
    # send such a field (logged with the job), and the report goes through.
    panda_ids = jobs_in(db, server, "running", 2, report=json.dumps({"nEvents": "many"}))
    with caplog.at_level(logging.WARNING):
        run_once(context(db, server))
    for panda_id in panda_ids:
        assert row(db, panda_id).report_failures == 0
        assert row(db, panda_id).panda_status == "running"
        assert "n_events" not in server.last_fields(panda_id)
        assert any(f"panda_id={panda_id}" in r.getMessage() and "nEvents" in r.getMessage()
                   for r in caplog.records)  # fmt: skip


def test_a_report_that_is_not_json_is_an_error_of_that_job(
    db: Database, server: CountingPandaTestServer
) -> None:
    (broken,) = jobs_in(db, server, "finished", report="{not json")
    run_once(context(db, server))
    job = row(db, broken)
    assert (job.state, job.report_failures) == ("finished", 1)
    assert server.received() == []


# -- heartbeat-less jobs --------------------------------------------------------------------------


def test_heartbeat_less_jobs_get_a_report_file_and_no_call(
    db: Database, server: CountingPandaTestServer, tmp_path: Path
) -> None:
    points = {name: tmp_path / name for name in ("finished", "cancelled", "running")}
    for point in points.values():
        point.mkdir()
    report = {"xml": {"f.root": {"guid": "g", "fsize": 1}}, "transExitCode": 0}
    (finished,) = jobs_in(
        db,
        server,
        "finished",
        heartbeat_less=True,
        access_point=str(points["finished"]),
        report=json.dumps(report),
    )
    (cancelled,) = jobs_in(
        db, server, "cancelled", heartbeat_less=True, access_point=str(points["cancelled"])
    )
    (running,) = jobs_in(
        db, server, "running", heartbeat_less=True, access_point=str(points["running"])
    )
    (nowhere,) = jobs_in(db, server, "failed", heartbeat_less=True, access_point="relative/dir")

    run_once(context(db, server))

    assert server.received() == []
    written = json.loads((points["finished"] / "jobReport.json").read_text())
    assert written == {
        "jobId": finished,
        "state": "finished",
        "attemptNr": 1,
        "siteName": "TEST_QUEUE",
        "schedulerID": "act",
        **report,
    }
    killed = json.loads((points["cancelled"] / "jobReport.json").read_text())
    assert (killed["state"], killed["pilotErrorCode"]) == ("failed", 1144)
    assert [p.name for p in points["finished"].iterdir()] == ["jobReport.json"]  # no temp left
    assert list(points["running"].iterdir()) == []
    assert row(db, finished).state == "done" and row(db, cancelled).state == "donecancelled"
    assert (row(db, running).state, row(db, running).next_report_at) == ("running", None)
    assert (row(db, nowhere).state, row(db, nowhere).report_failures) == ("failed", 1)


def test_jobs_with_a_log_url_send_it_as_pilot_id(
    db: Database, server: CountingPandaTestServer, api: str
) -> None:
    url = "https://act.example.org/jobs/2026-03-01/TEST_QUEUE/{}.out"
    (running,) = jobs_in(db, server, "running")
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs)
            .where(panda_jobs.c.panda_id == running)
            .values(log_url=url.format(running))
        )
    )
    own = with_report({"pilotID": "set-by-the-validator|x"})
    (finished,) = jobs_in(db, server, "finished", log_url=url.format(0), report=own["report"])
    (no_url,) = jobs_in(db, server, "running")

    run_once(context(db, server, api=api))

    sent_id = field(server.last_fields(running), "pilotID", "pilot_id")
    assert sent_id == url.format(running) + "|Unknown|Unknown|Unknown|Unknown"
    assert sent_id.split("|")[0] == url.format(running)  # what the monitor links
    assert field(server.last_fields(finished), "pilotID", "pilot_id") == "set-by-the-validator|x"
    assert field(server.last_fields(no_url), "pilotID", "pilot_id") is None
    assert server.states(running) == ["running"] and server.final_state(finished) == "finished"


# -- the daemon and the helpers -------------------------------------------------------------------


def test_the_propagator_runs_as_a_registered_daemon(
    db: Database, server: CountingPandaTestServer
) -> None:
    (panda_id,) = jobs_in(db, server, "finished")
    settings = Settings().model_copy(
        update={
            "panda": settings_for(server, retries=0),
            "daemons": {"propagator": DaemonSettings(options={"batch_size": 10})},
        }
    )
    assert resolve("propagator") is DAEMON
    assert run_daemon(DAEMON, settings, "propagator", once=True, db=db) == 0
    assert server.final_state(panda_id) == "finished"
    assert row(db, panda_id).state == "done"


def test_reports_must_be_json_objects_without_the_fields_act_sets() -> None:
    with pytest.raises(ValueError, match="jobId"):
        with_report({"jobId": 1})
    values = with_report({"xml": "{}"}, {"error_code": 3})
    assert values["error_code"] == 3 and json.loads(values["report"]) == {"xml": "{}"}
    assert values["next_report_at"] <= utcnow()
    assert report_fields(None) == {}
    assert report_fields('{"state": "x", "node": "wn1"}') == {"node": "wn1"}
    with pytest.raises(ValueError, match="not an object"):
        report_fields("[1]")


@pytest.mark.slow
def test_the_propagator_and_actctl_panda_use_indexes(
    db: Database, server: CountingPandaTestServer
) -> None:
    from act.ctl.panda import backlog
    from tests.support.plans import analyze, capture, full_scans

    # A long-running service: most jobs are over, a few hundred are reported.
    db.run(lambda c: make_jobs(c, Layer.PANDA, "done", 6000, first_panda_id=10**6))
    jobs_in(db, server, "running", 200)
    jobs_in(db, server, "running", 200, due=utcnow() + timedelta(minutes=30))
    jobs_in(db, server, "finished", 20)
    analyze(db, ["panda_jobs", "transitions"])
    ctx = context(db, server, batch_size=50, in_flight=2)
    with capture(db) as statements:
        drain(ctx)
        with db.read() as conn:
            found = backlog(conn)
    assert found.scheduled == 400 and found.overdue == 0
    assert len(statements) >= 10
    # An executemany (the heartbeats' UPDATE) is explained with its first parameter set.
    single = [(sql, p[0] if isinstance(p, list) else p) for sql, p in statements]
    assert full_scans(db, single, {"panda_jobs", "transitions"}) == []
