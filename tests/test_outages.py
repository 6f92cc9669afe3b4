"""Outages at system level: the whole pipeline (tests/support/pipeline.py: the PanDA TEST DOUBLE,
a real ``actd`` running every daemon, the local CE) while its database, PanDA or one CE stops
answering for a while. Each test prints its counts ("jobs N, final reports N, duplicates 0, ...")
and asserts that nothing is lost and nothing is done twice.

The unit-level variants (the propagator against an unreachable PanDA, the breaker's states) are
in tests/test_propagator.py and tests/test_breaker.py; these are the whole-system ones."""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from act.common.schema import ce_jobs, ces, panda_jobs
from act.ctl.panda import backlog
from tests.support.pipeline import Pipeline
from tests.support.private_mariadb import PrivateMariaDB, database_url
from tests.support.procs import wait_for

pytestmark = pytest.mark.slow

#: PanDA outage of the normal test, and of its ``long`` variant ("several minutes").
PANDA_OUTAGE = 40.0
PANDA_OUTAGE_LONG = 180.0


def _fast_reporting(config: dict[str, Any]) -> None:
    """One bulk call at a time, in small batches (so the order of final updates the test server
    records is the order the propagator sent them), and a short pause after a failed cycle."""
    config["daemons"]["propagator"]["options"] = {
        "batch_size": 10,
        "in_flight": 1,
        "outage_backoff": 1,
        "outage_backoff_max": 3,
    }


def _panda_outage(tmp_path: Path, outage: float, n_jobs: int) -> None:
    started = time.monotonic()
    pipe = Pipeline(tmp_path / "demo", tweak=_fast_reporting, sleep="1-3")
    try:
        ids = pipe.seed(n_jobs)
        pipe.start()
        # every job fetched (the fetcher needs PanDA too), none reported final yet
        wait_for(
            lambda: sum(pipe.states().values()) == n_jobs, timeout=120, what="all jobs fetched"
        )
        pipe.server.outage()
        down_at = time.monotonic()
        # meanwhile the jobs end: their final reports pile up
        final_now = sum(1 for panda_id in ids if pipe.server.final_state(panda_id))
        wait_for(
            lambda: pipe.states()["finished"] + pipe.states()["failed"] == n_jobs - final_now,
            timeout=outage + 120,
            what="every unreported job finished or failed, its report pending",
        )
        time.sleep(max(0.0, outage - (time.monotonic() - down_at)))
        assert pipe.actd_alive(), pipe.logs_hint()
        with pipe.db.read() as conn:
            pending = backlog(conn)
            due = conn.execute(
                sa.select(panda_jobs.c.panda_id)
                .where(panda_jobs.c.state.in_(("finished", "failed")))
                .order_by(panda_jobs.c.next_report_at, panda_jobs.c.id)
            ).all()
        expected = [int(row.panda_id) for row in due]
        assert len(expected) == n_jobs - final_now
        assert pending.scheduled >= len(expected) and pending.overdue >= len(expected)
        # the outage is logged: "PanDA <error>: N job(s) stay due (...)"
        assert re.search(r"PanDA .*: \d+ job\(s\) stay due", pipe.log("propagator"))
        before = len(pipe.server.final_order)

        pipe.server.restore()
        up_at = time.monotonic()
        pipe.wait_all_final(timeout=300)
        drained = time.monotonic() - up_at
        sent = [panda_id for panda_id, _, _ in pipe.server.final_order[before:]]
        backlog_sent = [panda_id for panda_id in sent if panda_id in set(expected)]
        counts = pipe.counts()
        print(
            f"PanDA outage {outage:.0f}s: {counts.line()}, backlog {len(expected)} drained "
            f"in {drained:.1f}s, oldest first: {backlog_sent == expected}, "
            f"wall {time.monotonic() - started:.1f}s"
        )
        assert backlog_sent == expected  # drained oldest due first, each once
        assert counts.duplicates == 0 and counts.missing_reports == 0
        assert counts.final_reports == n_jobs and counts.final_in_store == n_jobs
        assert counts.extra_ce_jobs == 0
    finally:
        pipe.stop()


def test_a_panda_outage_keeps_the_reports_and_drains_them_oldest_first(tmp_path: Path) -> None:
    _panda_outage(tmp_path, PANDA_OUTAGE, n_jobs=60)


@pytest.mark.long
@pytest.mark.timeout(600)
def test_a_panda_outage_of_three_minutes(tmp_path: Path) -> None:
    _panda_outage(tmp_path, PANDA_OUTAGE_LONG, n_jobs=100)


# -- the database ---------------------------------------------------------------------------------

DB_OUTAGE = 30.0
#: Daemons cycling every half second: each of them meets the outage.
FAST_DAEMONS = (
    "panda_fetcher", "translator", "submitter", "poller", "ce_fetcher", "app_status",
    "validator", "propagator", "canceller",
)  # fmt: skip
UNAVAILABLE = re.compile(r"database unavailable \(.*\); retrying in \d+s")


@pytest.fixture
def private_mariadb() -> Iterator[PrivateMariaDB]:
    """A MariaDB server of this test alone (the shared one on 3306 is never stopped)."""
    server = PrivateMariaDB()
    try:
        seconds = server.start()
        print(f"private MariaDB: install {server.install_seconds:.1f}s, start {seconds:.1f}s")
        yield server
    finally:
        server.remove()


def _keep_ce_job_dirs(config: dict[str, Any]) -> None:
    """No cleaner: every local CE job directory stays, one per submission, to be counted."""
    config["daemons"]["cleaner"]["enabled"] = False


@pytest.mark.timeout(600)
def test_a_database_outage_loses_nothing_and_repeats_no_final_report(
    tmp_path: Path, private_mariadb: PrivateMariaDB
) -> None:
    started = time.monotonic()
    n_jobs = 200
    url = database_url(private_mariadb, "act_outage")
    pipe = Pipeline(tmp_path / "demo", db_url=url, tweak=_keep_ce_job_dirs, sleep="1-4")
    try:
        ids = pipe.seed(n_jobs)
        pipe.start()
        # mid-run: some jobs reported, most still in flight
        wait_for(
            lambda: sum(1 for panda_id in ids if pipe.server.final_state(panda_id)) >= 20,
            timeout=180,
            what="20 jobs reported final",
        )
        reported_before = sum(1 for panda_id in ids if pipe.server.final_state(panda_id))
        in_flight = pipe.states()
        private_mariadb.stop()
        down_at = time.monotonic()
        time.sleep(DB_OUTAGE)
        assert pipe.actd_alive(), f"actd exited during the outage: {pipe.logs_hint()}"
        restart = private_mariadb.start()
        print(
            f"database down {time.monotonic() - down_at:.1f}s (restart {restart:.1f}s) with "
            f"{reported_before} jobs reported, in the store: {dict(in_flight)}"
        )
        pipe.wait_all_final(timeout=420)
        assert pipe.actd_alive(), pipe.logs_hint()

        counts = pipe.counts()
        at_ce = pipe.local_ce_jobs()
        twice_at_ce = {panda_id: n for panda_id, n in at_ce.items() if n > 1}
        logged = {name for name in FAST_DAEMONS if UNAVAILABLE.search(pipe.log(name))}
        restarts = len(re.findall(r"exited with code .* restart \d+", pipe.log("actd")))
        print(
            f"database outage {DB_OUTAGE:.0f}s: {counts.line()}, local CE job directories "
            f"{sum(at_ce.values())}, submitted twice {len(twice_at_ce)}, daemons logging the "
            f"outage {len(logged)}/{len(FAST_DAEMONS)}, daemon restarts by actd {restarts}, "
            f"wall {time.monotonic() - started:.1f}s"
        )
        assert set(FAST_DAEMONS) <= logged, (
            f"no 'database unavailable' line: {set(FAST_DAEMONS) - logged}"
        )
        # A final report PanDA accepted while the database went away could not be recorded;
        # its final_sent_at (written before the call) makes the propagator ask PanDA, which
        # shows the job ended: no report is sent twice.
        repeated = {
            p: pipe.server.final_reports(p) for p in ids if pipe.server.final_reports(p) > 1
        }
        in_doubt = len(re.findall(r"answer lost: PanDA shows", pipe.log("propagator")))
        print(
            f"final reports repeated after the outage: {len(repeated)}; final reports whose "
            f"answer the outage lost, checked with PanDA instead: {in_doubt}"
        )
        assert repeated == {}
        assert counts.missing_reports == 0 and counts.final_in_store == n_jobs
        assert counts.final_reports == n_jobs
        assert counts.extra_ce_jobs == 0 and counts.resubmissions == 0
        assert twice_at_ce == {} and set(at_ce) == set(ids)
    finally:
        pipe.stop()


# -- one CE ---------------------------------------------------------------------------------------


BREAKER_FAILURES = 2


def _two_local_ces(work: Path) -> Callable[[dict[str, Any]], None]:
    """ce_a and ce_b, both local CEs serving the demo queue; ce_a's work directory is reached
    through the symlink ``work/ce_a``, so the test can make ce_a stop answering (the symlink then
    points at a regular file: every call of the back end for ce_a raises CEUnavailable) without
    any test hook in act."""

    def tweak(config: dict[str, Any]) -> None:
        base = dict(config["engine"]["ces"].pop("demo-local"))
        config["engine"]["ces"] = {
            "ce_a": {**base, "options": {**base["options"], "workdir": str(work / "ce_a")}},
            "ce_b": {**base, "options": dict(base["options"])},
        }
        config["engine"]["strategy"] = "round_robin"
        config["engine"]["breaker"] = {"failures": BREAKER_FAILURES, "cooldown": 5}
        config["queues"]["serve"]["DEMO_QUEUE"]["ces"] = [
            {"flavour": "arc", "endpoint": "ce_a"},
            {"flavour": "arc", "endpoint": "ce_b"},
        ]

    return tweak


def _point(link: Path, target: Path) -> None:
    """Repoint the symlink ``link`` at ``target`` atomically."""
    spare = link.with_name(link.name + ".new")
    spare.unlink(missing_ok=True)
    spare.symlink_to(target)
    spare.replace(link)


def _ce_row(pipe: Pipeline, name: str) -> Any:
    with pipe.db.read() as conn:
        return conn.execute(sa.select(ces).where(ces.c.name == name)).one_or_none()


def _ce_of_jobs(pipe: Pipeline, ids: list[int]) -> Counter[str]:
    with pipe.db.read() as conn:
        rows = conn.execute(sa.select(ce_jobs.c.ce_name).where(ce_jobs.c.panda_id.in_(ids))).all()
    return Counter(str(row.ce_name) for row in rows)


def test_a_ce_outage_opens_its_breaker_the_other_ce_takes_the_jobs_and_a_probe_closes_it(
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    work = tmp_path / "ces"
    (work / "ce_a.real").mkdir(parents=True)
    (work / "blocked").write_text("ce_a does not answer\n")
    (work / "ce_a").symlink_to(work / "ce_a.real")
    pipe = Pipeline(tmp_path / "demo", tweak=_two_local_ces(work), sleep="0.5-1.5")
    try:
        before = pipe.seed(20)
        pipe.start()
        pipe.wait_all_final(timeout=180)
        shares = _ce_of_jobs(pipe, before)
        assert shares["ce_a"] > 0 and shares["ce_b"] > 0, shares  # both serve the queue

        _point(work / "ce_a", work / "blocked")  # ce_a stops answering
        # A failed submission sends its jobs to another CE; each new wave of jobs tries ce_a
        # again (round robin) until breaker.failures consecutive failures open its breaker.
        during: list[int] = []
        for _ in range(BREAKER_FAILURES + 2):
            failures = _ce_row(pipe, "ce_a").failures
            during += pipe.seed(10)
            wait_for(
                lambda: (row := _ce_row(pipe, "ce_a")).failures > failures or row.breaker == "open",
                timeout=120,
                what="another failed submission to ce_a",
            )
            if _ce_row(pipe, "ce_a").breaker == "open":
                break
        assert _ce_row(pipe, "ce_a").breaker == "open"
        opened = _ce_row(pipe, "ce_a")
        pipe.wait_all_final(timeout=240, ids=during)
        on_ce = _ce_of_jobs(pipe, during)
        with pipe.db.read() as conn:
            ran_on_a = conn.execute(
                sa.select(sa.func.count()).where(
                    ce_jobs.c.panda_id.in_(during),
                    ce_jobs.c.ce_name == "ce_a",
                    ce_jobs.c.submitted_at.is_not(None),
                )
            ).scalar_one()
        assert ran_on_a == 0  # nothing reached ce_a while it was down
        assert _ce_row(pipe, "ce_a").breaker in ("open", "half_open")

        _point(work / "ce_a", work / "ce_a.real")  # ce_a answers again
        # Jobs keep coming, as at a site: one that is submitted once the cool-down has passed is
        # ce_a's probe. (One wave alone may all go to ce_b before the cool-down ends.)
        after: list[int] = []
        deadline = time.monotonic() + 120
        while _ce_row(pipe, "ce_a").breaker != "closed":
            assert time.monotonic() < deadline, "ce_a's breaker not closed again by a probe job"
            after += pipe.seed(5)
            time.sleep(2)
        pipe.wait_all_final(timeout=240)
        later = _ce_of_jobs(pipe, after)
        submitter = pipe.log("submitter")
        probes = re.findall(r"ce=ce_a: breaker open -> half_open \(probe job id=\d+\)", submitter)
        closed = re.findall(r"ce=ce_a: breaker half_open -> closed", submitter)
        counts = pipe.counts()
        print(
            f"CE outage: {counts.line()}, before {dict(shares)}, during {dict(on_ce)} "
            f"(breaker opened after {opened.failures} failures: {opened.last_error}), "
            f"after {dict(later)}, probes {len(probes)}, closed {len(closed)}, "
            f"wall {time.monotonic() - started:.1f}s"
        )
        assert probes and closed
        assert later["ce_a"] > 0  # ce_a takes jobs again
        assert counts.duplicates == 0 and counts.missing_reports == 0
        assert counts.final_reports == len(pipe.ids) and counts.final_in_store == len(pipe.ids)
    finally:
        pipe.stop()
