"""The engine daemons end to end against the real ARC CE (A-REX 6.17 of tests/harness/arc-ce).

Each test puts CE jobs into ``tosubmit`` with an xRSL description and drives the real daemons'
``run_once`` (or ``act-daemon NAME --once`` in a child process) until the CE has run them: the
submitter, the poller (with ``next_check_at`` reset before each cycle so that it asks the CE every
time; the CE's states lag its info provider, 5 s on the test CE), the CE fetcher, the canceller
and the cleaner. Nothing is faked: every job is a real fork job at the CE.

Start the CE first: ``sudo tests/harness/arc-ce start`` (``make test`` does). The end-to-end,
breaker and crash tests run on every database of ``ACT_TEST_BACKENDS``; the others on
SQLite only, for wall time (each waits for jobs to end at the CE; the database layer is covered
by the other suites).
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace as dc_replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from act.arc import xrsl
from act.arc.proxy import load_credential
from act.arc.rest import ArcRest
from act.atlas.queues import QueueCE
from act.atlas.translate.xrsl import to_xrsl
from act.common.db import Database
from act.common.faults import EXIT_CODE
from act.common.schema import ce_jobs, ces, delegations, processes
from act.common.states import Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs, transition
from act.engine import canceller, cleaner, fetcher, poller, submitter
from act.engine.config import Context
from act.engine.runtime import pool
from act.service.settings import Settings
from tests.support.arc_real import RealArc, arc_ce
from tests.support.dbs import url_text
from tests.support.follow import context, history, row_of, set_columns
from tests.support.procs import REPO, env, write_config
from tests.support.translate_cases import TRUEPILOT, cases

__all__ = ["arc_ce"]  # the session fixture, imported for pytest
pytestmark = pytest.mark.arc

#: Seconds a test waits for the CE to bring a job to a state (a fork job takes 15-60 s).
WAIT = 240.0
#: Seconds between two poller cycles while waiting.
POLL_PAUSE = 2.0
ACT_DAEMON = [sys.executable, "-m", "act.service.daemon"]
DAEMONS = ("submitter", "poller", "ce_fetcher", "canceller", "cleaner")
#: The real text A-REX 6.17 gives a payload that exits with 3.
EXIT3_TEXT = "wrong exit code - 3 != 0"


# ------------------------------------------------------------------------ set-up ---
def ce_config(arc: RealArc, **changes: Any) -> dict[str, Any]:
    """``engine.ces.<name>`` for the test CE."""
    fields: dict[str, Any] = {
        "backend": "arc",
        "url": arc.url,
        "queue": "fork",
        "credential": arc.proxy,
        "ca": arc.ca_dir,
        "timeout": 30.0,
        "min_spacing": 0,
        "options": {"refresh_seconds": 5},
    }
    fields.update(changes)
    return fields


def config(tmp_path: Path, ces_: dict[str, dict[str, Any]], **engine: Any) -> Settings:
    return Settings.model_validate(
        {
            "root": str(tmp_path / "root"),
            "engine": {
                "ces": ces_,
                "strategy": "round_robin",
                # The test resets next_check_at before each poller cycle; these only keep the
                # values the poller writes small.
                "poll": {"submitted": 1, "running": 1, "finishing": 1, "cancelling": 1},
                **engine,
            },
        }
    )


def sh(command: str, **extra: str) -> str:
    """An xRSL description running ``command`` with /bin/sh in the session directory."""
    relations = "".join(f"({k}={v})" for k, v in extra.items())
    quoted = command.replace('"', '""')
    return f'&(executable="/bin/sh")(arguments="-c" "{quoted}"){relations}'


def requested(
    db: Database, description: str, *, candidates: str = "arc1", attempts: int = 1, panda_id: int
) -> int:
    """A CE job in ``tosubmit``, as the application layer makes it."""
    row = {
        "backend": "arc",
        "candidates": candidates,
        "description": description,
        "attempts_left": attempts,
        "panda_id": panda_id,
    }
    [job] = db.run(
        lambda conn: create_jobs(conn, Layer.CE, [row], "tosubmit", actor=Actor.TRANSLATOR)
    )
    return job


def app_moves(db: Database, job: int, target: str) -> None:
    """The application layer moves a job on (to tocancel, toclean)."""
    state = row_of(db, job)["state"]
    moved = db.run(
        lambda conn: transition(conn, Layer.CE, [job], state, target, actor=Actor.APP_STATUS)
    )
    assert moved == [job], f"{state} -> {target} refused"


def poll_until(
    db: Database, ctx: Context, jobs: Iterable[int], states: set[str], timeout: float = WAIT
) -> dict[int, str]:
    """Run the poller (asking the CE each time) until every job is in one of ``states``."""
    jobs = list(jobs)
    deadline = time.monotonic() + timeout
    while True:
        for job in jobs:
            if row_of(db, job)["state"] not in states:
                set_columns(db, job, next_check_at=None)
        poller.run_once(ctx)
        now = {job: str(row_of(db, job)["state"]) for job in jobs}
        if all(state in states for state in now.values()):
            return now
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not in {sorted(states)} after {timeout:.0f}s: "
                + "; ".join(f"{job}: {history(db, job)}" for job in jobs)
            )
        time.sleep(POLL_PAUSE)


def ce_names(client: ArcRest) -> dict[str, str | None]:
    """Every job the CE has for our credential: ``ce_job_id -> token`` (from the job's name, or
    from its description while A-REX has not named it yet)."""
    ids = client.jobs()
    names: dict[str, str | None] = {}
    for job_id, reply in client.info(ids).items():
        doc = reply.raw.get("info_document")
        activity = doc.get("ComputingActivity") if isinstance(doc, dict) else None
        name = activity.get("Name") if isinstance(activity, dict) else None
        token = xrsl.token_of(name if isinstance(name, str) else None)
        if token is None and not reply.gone:
            text = client.diagnose(job_id, "description") or ""
            found = re.search(r"act:([A-Za-z0-9._-]{1,64})", text)
            token = found.group(1) if found else None
        names[job_id] = token
    return names


class Run:
    """The daemons' contexts for one test, and the CE jobs to remove from the CE afterwards."""

    def __init__(self, db: Database, settings: Settings, arc: RealArc) -> None:
        self.db = db
        self.settings = settings
        self.arc = arc
        self.ctx = {name: context(db, settings, name) for name in DAEMONS}

    def close(self) -> None:
        for ctx in self.ctx.values():
            pool(ctx).close()
        with self.db.read() as conn:
            ids = [
                str(i)
                for i in conn.execute(
                    sa.select(ce_jobs.c.ce_job_id).where(ce_jobs.c.ce_job_id.is_not(None))
                ).scalars()
            ]
        if ids:  # leave the shared test CE as we found it (best effort: A-REX queues both)
            client = self.arc.client()
            try:
                client.kill(ids)
                client.clean(ids)
            finally:
                client.close()


@pytest.fixture
def make_run(arc_ce: RealArc) -> Iterator[Callable[[Database, Settings], Run]]:
    runs: list[Run] = []

    def make(db: Database, settings: Settings) -> Run:
        runs.append(Run(db, settings, arc_ce))
        return runs[-1]

    yield make
    for run in runs:
        run.close()


# ------------------------------------------------------------------------- tests ---
def test_submit_finish_fetch_clean(
    db: Database, arc_ce: RealArc, tmp_path: Path, make_run: Callable[[Database, Settings], Run]
) -> None:
    run = make_run(db, config(tmp_path, {"arc1": ce_config(arc_ce)}))
    job = requested(
        db,
        sh(
            "echo hello from the engine > out.txt; mkdir -p logs; echo nested > logs/n.txt",
            outputfiles='("out.txt" "")("logs/" "")',
        ),
        panda_id=101,
    )
    submitter.run_once(run.ctx["submitter"])
    row = row_of(db, job)
    assert row["state"] == "submitted", history(db, job)
    assert row["ce_name"] == "arc1" and row["ce_job_id"] and row["token"]
    ce_job_id = str(row["ce_job_id"])
    assert run.arc.client().status([ce_job_id])[ce_job_id].ok  # the CE has it

    assert poll_until(db, run.ctx["poller"], [job], {"finished"}) == {job: "finished"}
    row = row_of(db, job)
    assert row["ce_state"] == "FINISHED" and row["exit_code"] in (0, None)
    assert row["worker_node"] and row["last_seen_at"] is not None
    assert row["error_text"] is None

    fetcher.run_once(run.ctx["ce_fetcher"])
    row = row_of(db, job)
    assert row["state"] == "done", history(db, job)
    out = Path(row["output_dir"])
    assert out == tmp_path / "root" / "ce-jobs" / "arc1" / str(job)
    assert (out / "out.txt").read_text() == "hello from the engine\n"
    assert (out / "logs" / "n.txt").read_text() == "nested\n"

    app_moves(db, job, "toclean")
    cleaner.run_once(run.ctx["cleaner"])
    assert row_of(db, job)["state"] == "cleaned"
    assert history(db, job)[-1] == ("toclean", "cleaned", "cleaner", "CE confirmed the clean")
    client = run.arc.client()
    reply = client.status([ce_job_id])[ce_job_id]
    assert reply.code == 404, reply  # the CE no longer knows the job
    assert ce_job_id not in client.jobs()
    assert [h[1] for h in history(db, job)][:3] == ["tosubmit", "submitting", "submitted"]


def test_a_failing_payload_ends_donefailed_with_the_ces_error(
    sqlite_db: Database,
    arc_ce: RealArc,
    tmp_path: Path,
    make_run: Callable[[Database, Settings], Run],
) -> None:
    db = sqlite_db
    # No resubmit rule: a failure is final.
    run = make_run(db, config(tmp_path, {"arc1": ce_config(arc_ce)}, resubmit=[]))
    job = requested(db, sh("echo about to fail; echo bad >&2; exit 3"), panda_id=102)
    submitter.run_once(run.ctx["submitter"])
    assert row_of(db, job)["state"] == "submitted", history(db, job)

    assert poll_until(db, run.ctx["poller"], [job], {"failed"}) == {job: "failed"}
    row = row_of(db, job)
    assert row["ce_state"] == "FAILED" and row["exit_code"] == 3
    assert EXIT3_TEXT in row["error_text"]
    assert "no resubmit rule matches" in str(history(db, job)[-1][3])

    fetcher.run_once(run.ctx["ce_fetcher"])
    row = row_of(db, job)
    assert row["state"] == "donefailed", history(db, job)
    # The CE's own words stay first; the diagnostics the fetcher got are added, without the
    # lines the poller already stored (the CE's failure reason is said once).
    assert row["error_text"].startswith("LRMS error: (3)"), row["error_text"]
    assert row["error_text"].count(EXIT3_TEXT) == 1, row["error_text"]
    assert "--- errors (end) ---" in row["error_text"]
    assert row["output_dir"] and Path(row["output_dir"]).is_dir()


def test_kill_through_canceller_and_poller(
    sqlite_db: Database,
    arc_ce: RealArc,
    tmp_path: Path,
    make_run: Callable[[Database, Settings], Run],
) -> None:
    db = sqlite_db
    run = make_run(db, config(tmp_path, {"arc1": ce_config(arc_ce)}))
    seconds = 3000 + secrets.randbelow(900)  # finds this payload among the CE's processes
    job = requested(db, sh(f"sleep {seconds}"), panda_id=103)
    submitter.run_once(run.ctx["submitter"])
    assert row_of(db, job)["state"] == "submitted", history(db, job)
    # Let it start, so that the kill has a payload to end.
    poll_until(db, run.ctx["poller"], [job], {"running"})

    app_moves(db, job, "tocancel")
    canceller.run_once(run.ctx["canceller"])
    assert row_of(db, job)["state"] == "cancelling", history(db, job)
    assert history(db, job)[-1][3] == "kill sent to the CE"

    assert poll_until(db, run.ctx["poller"], [job], {"cancelled"}) == {job: "cancelled"}
    row = row_of(db, job)
    assert history(db, job)[-1] == ("cancelling", "cancelled", "poller", "CE confirmed the kill")
    assert row["ce_state"] == "KILLED"
    assert "canceled by external request" in (row["error_text"] or "")
    # The payload is gone too (the harness fixes 6.17's fork cancel).
    survivors = subprocess.run(
        ["pgrep", "-u", "arcjob", "-f", f"sleep {seconds}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert survivors.returncode == 1, f"payload still running: {survivors.stdout}"


def test_resubmit_on_a_matching_error(
    sqlite_db: Database,
    arc_ce: RealArc,
    tmp_path: Path,
    make_run: Callable[[Database, Settings], Run],
) -> None:
    """Two names for the test CE: a job resubmitted for a matching error goes to the other one
    (the CE it failed at is excluded), with a new CE job id."""
    db = sqlite_db
    settings = config(
        tmp_path,
        {"arc1": ce_config(arc_ce), "arc2": ce_config(arc_ce)},
        resubmit=[{"pattern": r"wrong exit code - 3 != 0", "action": "resubmit"}],
    )
    run = make_run(db, settings)
    # Fails at its first attempt only (fork jobs share the machine's /tmp), ...
    marker = Path(f"/tmp/act-test-resubmit-{secrets.token_hex(6)}")
    flaky = requested(
        db,
        sh(
            f"if [ -e {marker} ]; then echo second > out.txt; else touch {marker}; exit 3; fi",
            outputfiles='("out.txt" "")',
        ),
        candidates="arc1 arc2",
        attempts=2,
        panda_id=104,
    )
    # ... fails every time: after its two attempts it ends failed, its last outputs fetched.
    always = requested(
        db, sh("echo always; exit 3"), candidates="arc1 arc2", attempts=2, panda_id=105
    )
    try:
        submitter.run_once(run.ctx["submitter"])
        first = {job: row_of(db, job) for job in (flaky, always)}
        assert all(r["state"] == "submitted" for r in first.values()), first

        assert poll_until(db, run.ctx["poller"], [flaky, always], {"toresubmit", "failed"}) == {
            flaky: "toresubmit",
            always: "toresubmit",
        }
        assert "resubmit rule 0" in str(history(db, flaky)[-1][3])

        submitter.run_once(run.ctx["submitter"])  # cleans the old CE jobs, submits again
        client = run.arc.client()
        for job in (flaky, always):
            again = row_of(db, job)
            assert again["state"] == "submitted", history(db, job)
            assert again["ce_job_id"] and again["ce_job_id"] != first[job]["ce_job_id"]
            assert again["ce_name"] != first[job]["ce_name"]  # the other name
            assert again["excluded"] == first[job]["ce_name"]
            assert again["submissions"] == 2 and again["attempts_left"] == 1
            assert again["token"] != first[job]["token"]
            old = str(first[job]["ce_job_id"])
            assert client.status([old])[old].code == 404  # the old CE job was cleaned
            states = [h[1] for h in history(db, job)]
            assert states[-4:] == ["toresubmit", "tosubmit", "submitting", "submitted"]

        ended = {"finished", "failed", "toresubmit"}
        final = poll_until(db, run.ctx["poller"], [flaky, always], ended)
        assert final == {flaky: "finished", always: "failed"}
        # The last attempt failed: it is not resubmitted, and not cleaned before its fetch.
        assert "no attempts left" in str(history(db, always)[-1][3])
        assert EXIT3_TEXT in row_of(db, always)["error_text"]
        fetcher.run_once(run.ctx["ce_fetcher"])
        assert row_of(db, flaky)["state"] == "done"
        assert (Path(row_of(db, flaky)["output_dir"]) / "out.txt").read_text() == "second\n"
        last = row_of(db, always)
        assert last["state"] == "donefailed", history(db, always)
        assert "outputs lost at the CE" not in last["error_text"]
        assert "--- errors (end) ---" in last["error_text"]
    finally:
        marker.unlink(missing_ok=True)


def test_a_ce_that_is_down_opens_its_breaker_and_jobs_go_to_the_live_one(
    db: Database,
    arc_ce: RealArc,
    tmp_path: Path,
    make_run: Callable[[Database, Settings], Run],
) -> None:
    """On every database (no job needs to end)."""
    failures = 2
    settings = config(
        tmp_path,
        {
            "down": ce_config(arc_ce, url="https://localhost:1/arex", timeout=5.0),
            "arc1": ce_config(arc_ce),
        },
        breaker={"failures": failures, "cooldown": 3600},
    )
    run = make_run(db, settings)
    waves: list[list[int]] = []
    for wave in range(failures + 1):
        # New jobs each cycle: round robin gives some of them to "down" while it is admitted.
        waves.append(
            [
                requested(db, sh("true"), candidates="down arc1", panda_id=200 + 10 * wave + i)
                for i in range(4)
            ]
        )
        submitter.run_once(run.ctx["submitter"])
        with db.read() as conn:
            row = conn.execute(sa.select(ces).where(ces.c.name == "down")).mappings().one()
        assert row["failures"] == min(wave + 1, failures), dict(row)
    submitter.run_once(run.ctx["submitter"])  # the last ones sent back go to arc1 too

    with db.read() as conn:
        rows = {r["name"]: dict(r) for r in conn.execute(sa.select(ces)).mappings()}
    assert rows["down"]["breaker"] == "open" and rows["down"]["opened_at"] is not None
    assert "connection" in str(rows["down"]["last_error"]).lower(), rows["down"]
    assert rows["arc1"]["breaker"] == "closed" and rows["arc1"]["failures"] == 0
    jobs = [job for wave in waves for job in wave]
    placed = {job: row_of(db, job) for job in jobs}
    assert {r["state"] for r in placed.values()} == {"submitted"}, placed
    assert {r["ce_name"] for r in placed.values()} == {"arc1"}
    tried_down = [job for job, r in placed.items() if r["excluded"] == "down"]
    assert len(tried_down) >= failures  # one batch per failure
    # Once the breaker was open, no job was tried at the dead CE.
    assert all(placed[job]["excluded"] is None for job in waves[-1])
    assert all(placed[job]["submissions"] == 2 for job in tried_down)
    at_ce = run.arc.client().status([str(r["ce_job_id"]) for r in placed.values()])
    assert len(at_ce) == len(jobs) and all(reply.ok for reply in at_ce.values())


def test_an_expiring_delegation_is_renewed_by_the_next_submission(
    sqlite_db: Database,
    arc_ce: RealArc,
    tmp_path: Path,
    make_run: Callable[[Database, Settings], Run],
) -> None:
    db = sqlite_db
    run = make_run(db, config(tmp_path, {"arc1": ce_config(arc_ce)}))
    first = requested(db, sh("true"), panda_id=106)
    submitter.run_once(run.ctx["submitter"])
    assert row_of(db, first)["state"] == "submitted"
    with db.read() as conn:
        [before] = conn.execute(sa.select(delegations)).mappings().all()
    # A day ahead, or as long as the credential lives (the harness keeps it 12 h or more).
    floor = min(utcnow() + timedelta(hours=23), load_credential(arc_ce.proxy).not_after)
    floor -= timedelta(minutes=5)
    assert before["ce"] == "arc1" and before["expires_at"] > floor
    # As if it had nearly run out (under the default one-day renewal margin).
    with db.transaction() as conn:
        conn.execute(delegations.update().values(expires_at=utcnow() + timedelta(minutes=5)))

    second = requested(
        db,
        sh(
            'openssl x509 -in "$X509_USER_PROXY" -noout -enddate > out.txt',
            outputfiles='("out.txt" "")',
        ),
        panda_id=107,
    )
    submitter.run_once(run.ctx["submitter"])
    assert row_of(db, second)["state"] == "submitted", history(db, second)
    with db.read() as conn:
        [after] = conn.execute(sa.select(delegations)).mappings().all()
    assert after["delegation_id"] == before["delegation_id"]  # renewed, not replaced
    assert after["expires_at"] > floor
    assert after["updated_at"] > before["updated_at"]
    ce_job_id = str(row_of(db, second)["ce_job_id"])
    used = run.arc.client().action("delegations", [ce_job_id])[ce_job_id]
    assert used.raw.get("delegation_id") == after["delegation_id"]

    assert poll_until(db, run.ctx["poller"], [first, second], {"finished"}) == {
        first: "finished",
        second: "finished",
    }
    fetcher.run_once(run.ctx["ce_fetcher"])
    assert row_of(db, second)["state"] == "done"
    text = (Path(row_of(db, second)["output_dir"]) / "out.txt").read_text()
    assert text.startswith("notAfter="), text  # the job had a proxy


def _rows(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(ce_jobs).order_by(ce_jobs.c.id)).mappings()]


def _heartbeats_aged(db: Database, dead_after: float) -> bool:
    with db.read() as conn:
        last = conn.execute(sa.select(sa.func.max(processes.c.heartbeat_at))).scalar()
    return last is None or utcnow() - last > timedelta(seconds=dead_after * 1.2)


def test_a_submitter_killed_after_the_ce_accepted_is_reconciled_exactly_once(
    db: Database,
    db_url: URL,
    tmp_path: Path,
    arc_ce: RealArc,
    make_run: Callable[[Database, Settings], Run],
) -> None:
    """``act-daemon submitter --once`` dies after A-REX accepted the jobs (before the commit);
    the next run finds them by token: each is at the CE exactly once, and submitted. On every
    database (the runs take seconds: the jobs need not end)."""
    _crash_and_reconcile(db, db_url, tmp_path, arc_ce, make_run, jobs=3)


def _crash_and_reconcile(
    db: Database,
    url: URL,
    tmp_path: Path,
    arc_ce: RealArc,
    make_run: Callable[[Database, Settings], Run],
    *,
    jobs: int,
) -> None:
    dead_after = 1.0
    document = {
        "root": str(tmp_path / "root"),
        "db": {"url": url_text(url)},
        "liveness": {"heartbeat_interval": 0.2, "dead_after": dead_after},
        # A short lease, so that the dead process's claims expire soon (a warning says it is
        # shorter than the CE timeout: the CE answers within it here).
        "daemons": {"submitter": {"lease": 2, "batch": 100}},
        "engine": {"ces": {"arc1": ce_config(arc_ce)}},
    }
    path = write_config(tmp_path / "act.yaml", document)
    make_run(db, Settings.model_validate({k: v for k, v in document.items() if k != "db"}))
    made = [requested(db, sh("true"), panda_id=300 + i) for i in range(jobs)]

    def act_daemon(fault: str | None) -> int:
        extra = {"ACT_FAULT": fault} if fault else {}
        done = subprocess.run(
            [*ACT_DAEMON, "submitter", "--once", "--config", str(path)],
            env=env(tmp_path / "root", **extra),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        (tmp_path / f"submitter-{fault or 'clean'}.log").write_text(done.stderr)
        return done.returncode

    assert act_daemon("submitter:after-submit") == EXIT_CODE
    stuck = _rows(db)
    assert [r["state"] for r in stuck] == ["submitting"] * jobs
    assert all(r["ce_job_id"] is None and r["token"] for r in stuck)
    tokens = {str(r["token"]) for r in stuck}
    client = arc_ce.client()
    # A-REX accepted them: the database does not know their ids, the CE knows their tokens.
    before = ce_names(client)
    assert Counter(t for t in before.values() if t in tokens) == dict.fromkeys(tokens, 1), (
        tokens,
        before,
    )

    deadline = time.monotonic() + 60
    while not (
        all(r["lease_expires"] < utcnow() for r in _rows(db)) and _heartbeats_aged(db, dead_after)
    ):
        assert time.monotonic() < deadline, "the dead submitter's claims never expired"
        time.sleep(0.2)
    assert act_daemon(None) == 0

    final = _rows(db)
    assert [r["state"] for r in final] == ["submitted"] * jobs, final
    assert all(r["submissions"] == 1 for r in final)  # reconciled, never sent again
    assert {h[3] for job in made for h in history(db, job)[-1:]} == {
        "reconciled: the CE has the job"
    }
    after = ce_names(client)
    per_token = Counter(t for t in after.values() if t in tokens)
    assert per_token == dict.fromkeys(tokens, 1), per_token  # each job exactly once at the CE
    by_token = {t: job_id for job_id, t in after.items() if t in tokens}
    assert {str(r["token"]): r["ce_job_id"] for r in final} == by_token
    log = (tmp_path / "submitter-clean.log").read_text()
    assert "reconciled: submitted as" in log
    client.close()


def test_a_truepilot_job_translated_to_xrsl_runs_through_the_engine(
    sqlite_db: Database,
    arc_ce: RealArc,
    tmp_path: Path,
    make_run: Callable[[Database, Settings], Run],
) -> None:
    """The translator's xRSL (``to_xrsl``) for a truepilot queue whose CE is the test CE: A-REX
    takes it (RTE ENV/PROXY, environment, the job files uploaded from ``input_dir``) and runs the
    pilot wrapper, here a stand-in script that records what the job got in a file of the
    machine's /tmp (a truepilot job declares no output files: its session is emptied)."""
    db = sqlite_db
    run = make_run(db, config(tmp_path, {"arc1": ce_config(arc_ce)}))
    inputs = tmp_path / "inputs" / "1"
    inputs.mkdir(parents=True)
    record = Path(f"/tmp/act-test-truepilot-{secrets.token_hex(6)}")
    wrapper = inputs / "stand-in-wrapper.sh"
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec > {record}\n"
        'echo "args: $*"\n'
        'echo "GTAG=$GTAG"\n'
        'test -s "$X509_USER_PROXY" && echo "proxy: yes"\n'
        'test -s pandaJobData.out && echo "job data: $(head -c 20 pandaJobData.out)"\n'
    )
    queue_ce = QueueCE(flavour="arc", endpoint=arc_ce.url, ce_queue="fork", state="ACTIVE")
    queue = dc_replace(TRUEPILOT, ces=(queue_ce,), pilot_wrapper=str(wrapper))
    [case] = [c for c in cases() if c.name == "analysis_truepilot"]
    translated = to_xrsl(dc_replace(case.job, queue=queue), queue_ce, input_dir=inputs)
    assert '(runtimeenvironment = "ENV/PROXY")' in translated.description
    for name, content in translated.files.items():
        (inputs / name).write_bytes(content)
    job = requested(db, translated.description, panda_id=case.job.panda_id)
    set_columns(db, job, input_dir=str(inputs))
    try:
        submitter.run_once(run.ctx["submitter"])
        assert row_of(db, job)["state"] == "submitted", history(db, job)
        final = poll_until(db, run.ctx["poller"], [job], {"finished", "failed"})
        assert final == {job: "finished"}, row_of(db, job)["error_text"]
        fetcher.run_once(run.ctx["ce_fetcher"])
        assert row_of(db, job)["state"] == "done", history(db, job)
        text = record.read_text()
        assert "args: -q ANALY_EXAMPLE -j user" in text, text
        assert f"GTAG={case.job.log_url}" in text
        assert "proxy: yes" in text  # ENV/PROXY gave the job its delegated proxy
        assert 'job data: {"7003": {"PandaID":' in text, text  # Harvester mode: its ids are set
    finally:
        record.unlink(missing_ok=True)
