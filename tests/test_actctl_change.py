"""actctl's changing commands on every backend: kill, resubmit, retry, queue enable|disable,
the operator record (operator_actions) of every change, and actctl history / queues.

The daemons that act on an operator's change run once each: app_status, the translator, the
canceller (against the scripted CE back end, a TEST DOUBLE) and the panda_fetcher (against the
PanDA TEST DOUBLE)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import URL

from act.atlas import app_status, fetcher, translator
from act.atlas.reporting import with_report
from act.common import exitcodes
from act.common.db import Database
from act.common.schema import ce_jobs, operator_actions, panda_jobs, queues
from act.common.schema import transitions as history
from act.common.states import Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs, transition
from act.ctl import audit, durations, jobchange
from act.ctl.cli import cli
from act.engine import canceller
from act.service.settings import Settings
from act.testing.panda import PandaTestServer, make_job_spec
from tests.support.contexts import daemon_context
from tests.support.dbs import url_text
from tests.support.jobs import make_jobs, path_to
from tests.support.panda import settings_for
from tests.support.procs import write_config
from tests.support.scripted_backend import NAME, Script

QUEUE = "TESTQ"
OTHER = "OTHERQ"
ARC_CE = {"flavour": "arc", "endpoint": "arc1", "ce_queue": "grid"}


pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture(autouse=True)
def _no_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(jobchange, "interactive", lambda: False)  # CliRunner has no terminal


def config_data(tmp_path: Path, server: PandaTestServer | None = None) -> dict[str, Any]:
    queue = {"ces": [ARC_CE], "truepilot": True, "max_jobs": 20, "jobs_per_cycle": 5}
    data: dict[str, Any] = {
        "root": str(tmp_path / "root"),
        "engine": {
            "ces": {
                "ce1": {"backend": NAME},
                "arc1": {"backend": "arc", "url": "https://arc1.example.org/arex", "queue": "grid"},
            }
        },
        "queues": {"serve": {QUEUE: queue, OTHER: dict(queue)}},
    }
    if server is not None:
        data["panda"] = settings_for(server).model_dump(mode="json")
    return data


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path / "act.yaml", config_data(tmp_path))


def actctl(url: URL, config_file: Path, *args: str, stdin: str | None = None) -> Result:
    argv = ["--config", str(config_file), "--db-url", url_text(url), *args]
    return CliRunner().invoke(cli, argv, input=stdin)


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def fails(result: Result, code: int) -> str:
    assert result.exit_code == code, (result.output, result.exception)
    return result.stderr


# -- set-up ----------------------------------------------------------------------------------------


def panda_job(db: Database, state: str, panda_id: int, queue: str = QUEUE) -> int:
    (pid,) = db.run(lambda c: make_jobs(c, Layer.PANDA, state, first_panda_id=panda_id))
    db.run(
        lambda c: c.execute(sa.update(panda_jobs).where(panda_jobs.c.id == pid).values(queue=queue))
    )
    return pid


def ce_job(db: Database, pid: int, state: str, *, ce: str = "ce1", **values: Any) -> int:
    """A CE job of PanDA job ``pid`` walked to ``state`` along allowed edges."""
    path = path_to(Layer.CE, state)
    row = {"backend": NAME, "ce_name": ce, "description": "d", "attempts_left": 3}

    def make(conn: Any) -> int:
        [job] = create_jobs(conn, Layer.CE, [row], path[0].to_state, actor=min(path[0].actors))
        for edge in path[1:]:
            assert edge.from_state is not None
            transition(
                conn, Layer.CE, [job], edge.from_state, edge.to_state, actor=min(edge.actors)
            )
        conn.execute(
            sa.update(ce_jobs).where(ce_jobs.c.id == job).values(panda_job_id=pid, **values)
        )
        return job

    return db.run(make)


def state_of(db: Database, layer: Layer, job_id: int) -> str:
    table = panda_jobs if layer is Layer.PANDA else ce_jobs
    with db.read() as conn:
        return str(conn.execute(sa.select(table.c.state).where(table.c.id == job_id)).scalar())


def panda_row(db: Database, pid: int) -> Any:
    with db.read() as conn:
        return conn.execute(sa.select(panda_jobs).where(panda_jobs.c.id == pid)).one()


def last_transition(db: Database, layer: Layer, job_id: int) -> tuple[Any, ...]:
    with db.read() as conn:
        row = conn.execute(
            sa.select(history.c.from_state, history.c.to_state, history.c.actor, history.c.reason)
            .where(history.c.layer == layer.value, history.c.job_id == job_id)
            .order_by(history.c.id.desc())
            .limit(1)
        ).one()
    return tuple(row)


def actions(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(sa.select(operator_actions).order_by(operator_actions.c.id))
        return [dict(row) for row in rows.mappings()]


def daemon(db: Database, settings: Settings, name: str, options: Any = None) -> Any:
    return daemon_context(db, settings, name, options=options)


# -- kill ------------------------------------------------------------------------------------------


def test_kill_by_id_moves_only_that_job_records_it_and_its_ce_job_is_cancelled(
    db: Database, db_url: URL, config_file: Path, script: Script, tmp_path: Path
) -> None:
    settings = Settings.model_validate(config_data(tmp_path))
    ce_ctx = daemon(db, settings, "canceller")
    pid = panda_job(db, "running", 101)
    other = panda_job(db, "running", 102)
    ce_job_id = ce_job_at_ce(ce_ctx, "tok-101")
    cid = ce_job(db, pid, "running", ce_job_id=ce_job_id, token="tok-101")

    out = ok(actctl(db_url, config_file, "kill", "101", "--reason", "bad task", "--who", "al"))
    assert "101" in out and "moved -> tobekilled" in out and "1 job(s) to be killed" in out
    assert state_of(db, Layer.PANDA, pid) == "tobekilled"
    assert state_of(db, Layer.PANDA, other) == "running"
    assert last_transition(db, Layer.PANDA, pid) == (
        "running",
        "tobekilled",
        "operator",
        "by al: bad task",
    )
    assert panda_row(db, pid).error_text == "killed by operator al: bad task"
    (action,) = actions(db)
    assert (action["who"], action["command"], action["target"], action["reason"]) == (
        "al",
        "kill",
        "job:101",
        "bad task",
    )
    assert json.loads(action["details"])["panda_ids"] == [101]

    # The existing machinery takes over: app_status asks for the CE job's kill, the canceller
    # sends it to the CE.
    app_status.run_once(daemon(db, settings, "app_status", app_status.AppStatusOptions()))
    assert state_of(db, Layer.CE, cid) == "tocancel"
    canceller.run_once(ce_ctx)
    assert state_of(db, Layer.CE, cid) == "cancelling"
    assert script.jobs()[ce_job_id]["killed"]
    # actctl job shows who and why in the job's history.
    assert "by al: bad task" in ok(actctl(db_url, config_file, "job", "101"))


def ce_job_at_ce(ctx: Any, token: str) -> str:
    """Have the scripted CE ``ce1`` accept a job; its CE job id."""
    from tests.support.follow import submit_at_ce

    return submit_at_ce(ctx, "ce1", token)


def test_kill_by_filter_needs_yes_without_a_terminal(
    db: Database, db_url: URL, config_file: Path
) -> None:
    mine = [panda_job(db, state, 200 + i) for i, state in enumerate(["queued", "running"])]
    mine.append(panda_job(db, "tovalidate", 203))
    over = panda_job(db, "donefailed", 204)
    elsewhere = panda_job(db, "running", 205, queue=OTHER)

    err = fails(actctl(db_url, config_file, "kill", "--queue", QUEUE, "--reason", "r"), 2)
    assert "3 jobs match" in err and "--yes" in err
    assert [state_of(db, Layer.PANDA, p) for p in mine] == ["queued", "running", "tovalidate"]
    assert actions(db) == []

    result = actctl(db_url, config_file, "kill", "--queue", QUEUE, "--reason", "r", "--yes")
    assert "3 job(s) to be killed" in ok(result)
    report = json.loads(
        ok(actctl(db_url, config_file, "history", "--json", "--target", f"jobs:queue={QUEUE}"))
    )
    assert all(state_of(db, Layer.PANDA, p) == "tobekilled" for p in mine)
    assert state_of(db, Layer.PANDA, over) == "donefailed"
    assert state_of(db, Layer.PANDA, elsewhere) == "running"
    (action,) = report
    assert action["command"] == "kill" and action["details"]["panda_ids"] == [200, 201, 203]
    assert action["details"]["filter"]["queue"] == QUEUE


def test_confirmation_prompt_declined_changes_nothing_and_accepted_moves(
    db: Database, db_url: URL, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobchange, "interactive", lambda: True)
    jobs = [panda_job(db, "running", 300 + i) for i in range(2)]
    args = ("kill", "--state", "running", "--reason", "r")
    declined = actctl(db_url, config_file, *args, stdin="n\n")
    assert "kill these 2 jobs?" in fails(declined, exitcodes.FAILURE)
    assert [state_of(db, Layer.PANDA, p) for p in jobs] == ["running", "running"]
    assert actions(db) == []
    ok(actctl(db_url, config_file, *args, stdin="y\n"))
    assert [state_of(db, Layer.PANDA, p) for p in jobs] == ["tobekilled", "tobekilled"]
    assert len(actions(db)) == 1


def test_dry_run_lists_and_changes_nothing(db: Database, db_url: URL, config_file: Path) -> None:
    jobs = [panda_job(db, "running", 400 + i) for i in range(3)]
    ce_job(db, jobs[0], "running")
    args = ("resubmit", "--queue", QUEUE, "--reason", "r", "--dry-run")
    out = ok(actctl(db_url, config_file, *args))
    assert "would move 3 job(s) to toresubmit" in out and "nothing changed" in out
    assert all(str(400 + i) in out for i in range(3)) and "ce1" in out
    report = json.loads(ok(actctl(db_url, config_file, *args, "--json")))
    assert report["dry_run"] is True and report["moved"] == 0
    assert [(j["panda_id"], j["result"]) for j in report["jobs"]] == [
        (400, "would move"),
        (401, "would move"),
        (402, "would move"),
    ]
    assert all(state_of(db, Layer.PANDA, p) == "running" for p in jobs)
    assert actions(db) == []
    # --older-than: only jobs in their state for longer than that.
    older = ("resubmit", "--older-than", "1h", "--reason", "r", "--dry-run")
    fails(actctl(db_url, config_file, *older), exitcodes.NOT_FOUND)
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs)
            .where(panda_jobs.c.id == jobs[1])
            .values(state_changed_at=utcnow() - timedelta(hours=2))
        )
    )
    report = json.loads(ok(actctl(db_url, config_file, *older, "--json")))
    assert [j["panda_id"] for j in report["jobs"]] == [401]


def test_refusals_and_not_found(db: Database, db_url: URL, config_file: Path) -> None:
    panda_job(db, "donefailed", 500)
    panda_job(db, "running", 501)
    for command in ("kill", "resubmit", "retry"):
        err = fails(actctl(db_url, config_file, command, "--reason", "r"), exitcodes.USAGE)
        assert "never applies to all jobs" in err
    assert fails(actctl(db_url, config_file, "kill", "501"), exitcodes.USAGE)  # no --reason
    err = fails(actctl(db_url, config_file, "kill", "501", "--reason", "  "), exitcodes.USAGE)
    assert "--reason" in err
    err = fails(actctl(db_url, config_file, "kill", "999", "--reason", "r"), exitcodes.NOT_FOUND)
    assert "no job matches" in err
    result = actctl(db_url, config_file, "kill", "500", "--reason", "r")
    assert "no job matches" in fails(result, exitcodes.NOT_FOUND)
    assert "donefailed is not a state kill moves" in result.stdout
    result = actctl(db_url, config_file, "resubmit", "--queue", "NOPE", "--reason", "r")
    fails(result, exitcodes.NOT_FOUND)
    result = actctl(db_url, config_file, "kill", "501", "999", "--reason", "r", "--json")
    report = json.loads(ok(result))
    assert {(j["panda_id"], j["result"]) for j in report["jobs"]} == {
        (501, "moved"),
        (999, "not found"),
    }
    assert len(actions(db)) == 1


# -- resubmit --------------------------------------------------------------------------------------


def test_resubmit_cancels_the_old_ce_job_and_the_translator_makes_a_new_one(
    db: Database, db_url: URL, config_file: Path, script: Script, tmp_path: Path
) -> None:
    settings = Settings.model_validate(config_data(tmp_path))
    ce_ctx = daemon(db, settings, "canceller")
    pid = panda_job(db, "running", 601)
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs)
            .where(panda_jobs.c.id == pid)
            .values(spec=json.dumps(make_job_spec(601)))
        )
    )
    ce_job_id = ce_job_at_ce(ce_ctx, "tok-601")
    old = ce_job(db, pid, "running", ce_job_id=ce_job_id, token="tok-601")

    ok(actctl(db_url, config_file, "resubmit", "601", "--reason", "node broken", "--who", "bo"))
    assert state_of(db, Layer.PANDA, pid) == "toresubmit"
    assert panda_row(db, pid).next_report_at is not None
    assert state_of(db, Layer.CE, old) == "tocancel"
    assert last_transition(db, Layer.CE, old)[2:] == (
        "operator",
        "by bo: node broken (PanDA job resubmitted)",
    )
    (action,) = actions(db)
    assert (
        action["command"] == "resubmit" and json.loads(action["details"])["ce_jobs_cancelled"] == 1
    )

    translator.run_once(daemon(db, settings, "translator", translator.TranslatorOptions()))
    assert state_of(db, Layer.PANDA, pid) == "queued"
    with db.read() as conn:
        rows = conn.execute(
            sa.select(ce_jobs.c.id, ce_jobs.c.state, ce_jobs.c.candidates)
            .where(ce_jobs.c.panda_job_id == pid)
            .order_by(ce_jobs.c.id)
        ).all()
    assert [(r.id, r.state) for r in rows] == [(old, "tocancel"), (rows[1].id, "tosubmit")]
    assert rows[1].candidates == "arc1"

    canceller.run_once(ce_ctx)
    assert state_of(db, Layer.CE, old) == "cancelling"
    assert script.jobs()[ce_job_id]["killed"]
    app_status.run_once(daemon(db, settings, "app_status", app_status.AppStatusOptions()))
    assert state_of(db, Layer.PANDA, pid) == "queued"  # the old CE job's end does not fail it


def test_a_job_changed_meanwhile_is_skipped(db: Database) -> None:
    first, second = panda_job(db, "running", 701), panda_job(db, "running", 702)
    selection = jobchange.Selection(queue=QUEUE)
    with db.read() as conn:
        found = jobchange.select(conn, jobchange.RESUBMIT, selection)
    assert [r["panda_id"] for r in found.movable] == [701, 702]
    db.run(
        lambda c: transition(
            c, Layer.PANDA, [second], "running", "transferring", actor=Actor.APP_STATUS
        )
    )
    results = db.run(
        lambda c: jobchange.apply(
            c, jobchange.RESUBMIT, found.movable, who="al", reason="r", selection=selection
        )
    )
    assert [(r["panda_id"], r["result"]) for r in results] == [(701, "moved"), (702, "skipped")]
    assert results[1]["why"] == "changed state meanwhile (now transferring)"
    assert state_of(db, Layer.PANDA, first) == "toresubmit"
    assert state_of(db, Layer.PANDA, second) == "transferring"
    assert json.loads(actions(db)[0]["details"])["panda_ids"] == [701]


# -- retry -----------------------------------------------------------------------------------------


def failed_job(db: Database, panda_id: int) -> int:
    pid = panda_job(db, "failed", panda_id)
    values = with_report(
        {"pilotErrorCode": 1305, "pilotErrorDiag": "stage-in"},
        {"error_code": 1305, "error_text": "stage-in", "report_failures": 2},
    )
    db.run(lambda c: c.execute(sa.update(panda_jobs).where(panda_jobs.c.id == pid).values(values)))
    return pid


def test_retry_moves_a_failed_job_to_toresubmit_with_a_fresh_report(
    db: Database, db_url: URL, config_file: Path, tmp_path: Path
) -> None:
    pid = failed_job(db, 801)
    reported = panda_job(db, "donefailed", 802)
    ok(actctl(db_url, config_file, "retry", "801", "802", "--reason", "SE back", "--yes"))
    row = panda_row(db, pid)
    assert row.state == "toresubmit"
    assert (row.report, row.error_code, row.error_text, row.report_failures) == (
        None,
        None,
        None,
        0,
    )
    assert last_transition(db, Layer.PANDA, pid)[1:] == (
        "toresubmit",
        "operator",
        f"by {audit.person(None)}: SE back",
    )
    assert state_of(db, Layer.PANDA, reported) == "donefailed"  # PanDA has its report already
    (action,) = actions(db)
    assert action["target"] == "job:801"  # the only job it could move
    assert json.loads(action["details"])["panda_ids"] == [801]


def test_retry_skips_a_job_whose_report_is_being_sent(
    db: Database, db_url: URL, config_file: Path
) -> None:
    sending, idle = failed_job(db, 901), failed_job(db, 902)
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs)
            .where(panda_jobs.c.id == sending)
            .values(lease_owner="propagator:host:1", lease_expires=utcnow() + timedelta(minutes=1))
        )
    )
    result = actctl(db_url, config_file, "retry", "--state", "failed", "--reason", "r", "--yes")
    out = ok(result)
    assert "busy: claimed by propagator:host:1" in out
    assert state_of(db, Layer.PANDA, sending) == "failed"
    assert panda_row(db, sending).lease_owner == "propagator:host:1"  # its claim untouched
    assert state_of(db, Layer.PANDA, idle) == "toresubmit"
    result = actctl(db_url, config_file, "retry", "901", "--reason", "r")
    assert "no job was moved" in fails(result, exitcodes.NOT_FOUND)
    # Once the propagator's claim has expired, the job can be retried.
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs)
            .where(panda_jobs.c.id == sending)
            .values(lease_expires=utcnow() - timedelta(seconds=1))
        )
    )
    ok(actctl(db_url, config_file, "retry", "901", "--reason", "r"))
    assert state_of(db, Layer.PANDA, sending) == "toresubmit"


# -- queues ----------------------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[PandaTestServer]:
    with PandaTestServer() as test_server:
        yield test_server


def test_queue_disable_stops_the_fetcher_and_enable_resumes_it(
    db: Database, db_url: URL, server: PandaTestServer, tmp_path: Path
) -> None:
    data = config_data(tmp_path, server)
    config_file = write_config(tmp_path / "fetch.yaml", data)
    ctx = daemon(db, Settings.model_validate(data), "panda_fetcher", fetcher.FetcherOptions())
    server.seed(3, queue=QUEUE)

    out = ok(
        actctl(
            db_url, config_file, "queue", "disable", QUEUE, "--reason", "downtime", "--who", "al"
        )
    )
    assert out.startswith(f"{QUEUE}: disabled")
    fetcher.run_once(ctx)
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(panda_jobs)).scalar() == 0
    asked = [call.params["site_name"] for call in server.received("pilot/acquire_jobs")]
    assert QUEUE not in asked and OTHER in asked  # only the disabled queue is left alone
    records = {
        r["queue"]: r for r in json.loads(ok(actctl(db_url, config_file, "queues", "--json")))
    }
    assert (records[QUEUE]["enabled"], records[QUEUE]["reason"], records[QUEUE]["updated_by"]) == (
        False,
        "downtime",
        "al",
    )
    assert records[OTHER]["enabled"] is True and records[OTHER]["config_max_jobs"] == 20
    assert "disabled" in ok(actctl(db_url, config_file, "queues"))

    ok(actctl(db_url, config_file, "queue", "enable", QUEUE, "--reason", "back"))
    fetcher.run_once(ctx)
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(panda_jobs)).scalar() == 3
    records = {
        r["queue"]: r for r in json.loads(ok(actctl(db_url, config_file, "queues", "--json")))
    }
    assert records[QUEUE]["enabled"] is True and records[QUEUE]["jobs"] == {"received": 3}
    assert [(a["command"], a["target"]) for a in actions(db)] == [
        ("queue disable", f"queue:{QUEUE}"),
        ("queue enable", f"queue:{QUEUE}"),
    ]


def test_unknown_queue_is_not_found_and_a_recorded_one_is_known(
    db: Database, db_url: URL, config_file: Path
) -> None:
    result = actctl(db_url, config_file, "queue", "disable", "NOPE", "--reason", "r")
    assert "no queue 'NOPE'" in fails(result, exitcodes.NOT_FOUND)
    assert actions(db) == []
    db.run(
        lambda c: c.execute(
            sa.insert(queues).values(name="OLDQ", enabled=True, updated_at=utcnow())
        )
    )
    ok(actctl(db_url, config_file, "queue", "disable", "OLDQ", "--reason", "retired"))
    records = {
        r["queue"]: r for r in json.loads(ok(actctl(db_url, config_file, "queues", "--json")))
    }
    assert records["OLDQ"]["configured"] is False and records["OLDQ"]["enabled"] is False


# -- the record of ce and storage commands, and history --------------------------------------------


def test_ce_and_storage_commands_are_recorded_and_history_lists_them(
    db: Database, db_url: URL, config_file: Path
) -> None:
    ok(actctl(db_url, config_file, "ce", "open", "arc1", "--reason", "downtime", "--who", "al"))
    ok(actctl(db_url, config_file, "ce", "close", "arc1", "--reason", "force", "--who", "bo"))
    ok(actctl(db_url, config_file, "ce", "drain", "ce1", "--reason", "retiring", "--who", "al"))
    ok(
        actctl(
            db_url, config_file, "storage", "down", "root://se.example.org:1094", "--reason", "x"
        )
    )
    fails(actctl(db_url, config_file, "ce", "open", "nope", "--reason", "r"), exitcodes.NOT_FOUND)
    panda_job(db, "running", 1001)
    panda_job(db, "running", 1002)
    ok(actctl(db_url, config_file, "kill", "1001", "1002", "--reason", "r", "--yes", "--who", "cy"))

    rows = json.loads(ok(actctl(db_url, config_file, "history", "--json")))
    assert [(r["command"], r["target"]) for r in rows] == [
        ("kill", "jobs:panda_id=1001,1002"),
        ("storage down", "storage:root://se.example.org:1094"),
        ("ce drain", "ce:ce1"),
        ("ce close", "ce:arc1"),
        ("ce open", "ce:arc1"),
    ]
    history_of = [
        (r["who"], r["command"])
        for r in json.loads(
            ok(actctl(db_url, config_file, "history", "--target", "arc1", "--json"))
        )
    ]
    assert history_of == [("bo", "ce close"), ("al", "ce open")]
    mine = json.loads(ok(actctl(db_url, config_file, "history", "--who", "al", "--json")))
    assert [r["command"] for r in mine] == ["ce drain", "ce open"]
    by_job = json.loads(
        ok(actctl(db_url, config_file, "history", "--target", "job:1002", "--json"))
    )
    assert [r["command"] for r in by_job] == ["kill"]
    assert (
        json.loads(ok(actctl(db_url, config_file, "history", "--target", "job:100", "--json")))
        == []
    )
    assert (
        len(json.loads(ok(actctl(db_url, config_file, "history", "--limit", "2", "--json")))) == 2
    )

    # --since: an action of last week is left out.
    db.run(
        lambda c: c.execute(
            sa.update(operator_actions)
            .where(operator_actions.c.command == "ce open")
            .values(at=utcnow() - timedelta(days=7))
        )
    )
    recent = json.loads(ok(actctl(db_url, config_file, "history", "--since", "1d", "--json")))
    assert "ce open" not in [r["command"] for r in recent] and len(recent) == 4
    text = ok(actctl(db_url, config_file, "history"))
    assert "downtime" in text and "storage:root://se.example.org:1094" in text
    assert fails(actctl(db_url, config_file, "history", "--since", "soon"), exitcodes.USAGE)


def test_parse_duration() -> None:
    assert durations.parse("90") == timedelta(seconds=90)
    assert durations.parse("30m") == timedelta(minutes=30)
    assert durations.parse("1d12h") == timedelta(hours=36)
    assert durations.parse("2w") == timedelta(weeks=2)
    for bad in ("", "h", "1x", "1h 2", "-1h"):
        with pytest.raises(ValueError):
            durations.parse(bad)


def test_ce_filter_goes_by_the_newest_ce_job(db: Database, db_url: URL, config_file: Path) -> None:
    at_ce1 = panda_job(db, "running", 1101)
    ce_job(db, at_ce1, "running", ce="ce1")
    moved_on = panda_job(db, "running", 1102)
    ce_job(db, moved_on, "cancelled", ce="ce1")
    ce_job(db, moved_on, "running", ce="arc1")  # its newest CE job is elsewhere
    ok(actctl(db_url, config_file, "kill", "--ce", "ce1", "--reason", "ce1 broken"))
    assert state_of(db, Layer.PANDA, at_ce1) == "tobekilled"
    assert state_of(db, Layer.PANDA, moved_on) == "running"
    (action,) = actions(db)
    assert action["target"] == "job:1101"
