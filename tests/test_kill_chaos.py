"""The kill test (issue 8): jobs flow through the whole pipeline while daemons are SIGKILLed.

The demo's pieces (act/demo/run.py) on a fresh MariaDB database: the PanDA TEST DOUBLE in this
process, the real actd as a subprocess with every daemon, the local CE, the demo pilot with short
sleeps, file:// storage. A killer thread SIGKILLs one of actd's children (a daemon) every 2-5 s;
actd restarts it. At the end every job must have reached exactly one final report at PanDA, no
CE job may have been submitted twice, and no job may be left in a non-final state. The counts are
printed (run with ``-s`` to see them).

How a double submission is seen: the local CE makes one job directory per submission, named
``<token prefix>-<random>`` (act/local/backend.py); the pilot wrapper of this test appends its job
directory's name to a ledger before it runs, and the killer thread also notes every job directory
it sees (the cleaner removes them later). Two directories for one token are two submissions of
one CE job.
"""

from __future__ import annotations

import contextlib
import os
import random
import shlex
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs
from act.demo import progress, run
from act.local import jobfiles as jf
from act.local.backend import token_prefix
from act.service.settings import load_settings
from act.testing.panda import FINAL, PandaTestServer
from tests.support import dbs

#: Seconds between kills (uniformly drawn).
KILL_EVERY = (2.0, 5.0)
#: The pilot's sleep (seconds, a range drawn per job).
PILOT_SLEEP = "0.1-0.5"
SLOTS = 64
#: Seconds after which the PanDA test double hands out again a job it never heard of.
SENT_TIMEOUT = 60.0
LEDGER = "pilot-starts.ledger"


@dataclass
class Killer:
    """Kills a random child of actd every few seconds; notes every local CE job directory."""

    actd_pid: int
    jobs_dirs: Path
    rng: random.Random
    kills: list[tuple[float, int, str]] = field(default_factory=list)
    seen_dirs: dict[str, int | None] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)

    def children(self) -> list[int]:
        """actd's children (as ``pgrep -P``: every thread's children, not only the main one's)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == self.actd_pid:
                    pids.append(int(stat.parent.name))
        return sorted(pids)

    def note_dirs(self) -> None:
        for jobs in self.jobs_dirs.glob(f"*/{jf.JOBS}"):
            with contextlib.suppress(FileNotFoundError):
                for jobdir in jobs.iterdir():
                    if jobdir.name not in self.seen_dirs and jf.JOB_ID.fullmatch(jobdir.name):
                        job = jf.read_json(jobdir / jf.JOB)
                        if job is None:  # being written: read again next time
                            continue
                        panda_id = job.get("panda_id")
                        self.seen_dirs[jobdir.name] = (
                            panda_id if isinstance(panda_id, int) else None
                        )

    def kill_one(self) -> None:
        live = [pid for pid in self.children() if _name_of(pid)]
        if not live:
            return
        pid = self.rng.choice(live)
        name = _name_of(pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            self.kills.append((time.monotonic(), pid, name))

    def run(self) -> None:
        try:
            next_kill = time.monotonic() + self.rng.uniform(*KILL_EVERY)
            while not self.stop.wait(0.3):
                self.note_dirs()
                if time.monotonic() >= next_kill:
                    self.kill_one()
                    next_kill = time.monotonic() + self.rng.uniform(*KILL_EVERY)
        except BaseException as error:  # reported by the test
            self.errors.append(error)


def _name_of(pid: int) -> str:
    """The daemon a child of actd runs (from its command line), "" if it is gone."""
    try:
        words = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return ""
    text = [w.decode(errors="replace") for w in words if w]
    if "act.service.daemon" in text:
        after = text[text.index("act.service.daemon") + 1 :]
        return after[0] if after else "daemon"
    return " ".join(text[-2:]) or "?"


def write_ledger_pilot(directory: Path, sleep: str = PILOT_SLEEP) -> tuple[Path, Path]:
    """A pilot wrapper that notes its job directory in a ledger (one line, appended) before it
    runs the demo pilot."""
    ledger = directory / LEDGER
    wrapper = directory / "bin" / "ledger-pilot"
    command = [sys.executable, "-I", "-S", str(run.pilot_module()), "--fail-fraction", "0"]
    command += ["--sleep", sleep]
    wrapper.write_text(
        "#!/bin/sh\n"
        # the job directory's name (PWD is its work/), without forking basename and dirname
        'jobdir="${PWD%/*}"\n'
        f'echo "${{jobdir##*/}}" >> {shlex.quote(str(ledger))}\n'
        f'exec {shlex.join(command)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper, ledger


def chaos_config(path: Path, db_url: str) -> None:
    """The demo config, tuned for the kill test: MariaDB, quick restarts, short leases, bigger
    batches and more slots."""
    config: dict[str, Any] = yaml.safe_load(path.read_text())
    config["db"] = {"url": db_url}
    # A killed daemon's liveness row keeps its share of the work (the other instances' split
    # counts it) until dead_after: keep that short, or a kill stalls a share for a minute.
    config["liveness"] = {"heartbeat_interval": 1, "dead_after": 4}
    config["supervisor"] = {
        "stop_timeout": 10,
        "restart_delay": 0.2,
        "restart_delay_max": 1,
        "stable_after": 1,
    }
    for name, daemon in config["daemons"].items():
        daemon["lease"] = 10
        if name not in {"janitor", "weblogs"}:
            daemon["batch"] = 200
    # the submitter's lease must outlast one CE call (the CE's timeout)
    config["daemons"]["submitter"]["lease"] = 30
    ce = config["engine"]["ces"]["demo-local"]
    ce["timeout"] = 20
    ce["max_per_cycle"] = SLOTS
    ce["max_queued"] = 2 * SLOTS
    ce["options"]["slots"] = SLOTS
    queue = config["queues"]["serve"][run.QUEUE]
    queue["max_queued"] = 4 * SLOTS
    queue["jobs_per_cycle"] = 2 * SLOTS
    queue["max_jobs"] = 100_000
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


@dataclass
class Result:
    seeded: int
    one_final_report: int
    several_final_reports: list[int]
    reported_after_final: list[int]
    never_reported: list[int]
    submitted_twice: dict[str, int]  # token prefix -> job directories (CE submissions)
    panda_id_submitted_twice: dict[int, int]  # PanDA job -> job directories, all its tokens
    pilot_runs: Counter[int]
    sent_again: list[int]  # handed out more than once by PanDA (a reply lost in a kill)
    submissions_column: Counter[int]  # the ce_jobs.submissions values (submission intents)
    stuck: dict[int, str]
    ce_not_cleaned: Counter[str]
    kills: Counter[str]
    wall: float
    finished: bool

    def text(self) -> str:
        runs_over_1 = sorted(p for p, n in self.pilot_runs.items() if n > 1)
        never_ran = sorted(set(range(1, self.seeded + 1)) - set(self.pilot_runs))
        return "\n".join(
            [
                f"kill test: {self.seeded} jobs seeded, all final and reported: {self.finished} "
                f"after {self.wall:.0f} s ({self.seeded / self.wall * 60:.0f} jobs/min)",
                f"  jobs with exactly one final report at PanDA: {self.one_final_report}",
                f"  jobs with more than one final report: {len(self.several_final_reports)} "
                f"{self.several_final_reports[:20]}",
                f"  jobs reported to after their final report: {len(self.reported_after_final)}",
                f"  jobs never finally reported: {len(self.never_reported)} "
                f"{self.never_reported[:20]}",
                f"  CE jobs submitted more than once (job dirs per token): "
                f"{len(self.submitted_twice)} {dict(list(self.submitted_twice.items())[:20])}",
                f"  PanDA jobs with more than one CE submission (job dirs): "
                f"{len(self.panda_id_submitted_twice)} "
                f"{dict(list(self.panda_id_submitted_twice.items())[:20])}",
                f"  PanDA jobs whose pilot ran more than once: {len(runs_over_1)} "
                f"{runs_over_1[:20]}",
                f"  PanDA jobs whose pilot never ran: {len(never_ran)} {never_ran[:20]}",
                f"  PanDA jobs handed out again (reply lost in a fetcher kill, re-sent after "
                f"{SENT_TIMEOUT:.0f} s): {len(self.sent_again)} {self.sent_again[:20]}",
                f"  ce_jobs.submissions (intents, incl. ones a kill stopped before the CE call): "
                f"{dict(sorted(self.submissions_column.items()))}",
                f"  PanDA jobs stuck in a non-final state: {len(self.stuck)} "
                f"{dict(list(self.stuck.items())[:20])}",
                f"  CE jobs not cleaned: {sum(self.ce_not_cleaned.values())} "
                f"{dict(self.ce_not_cleaned)}",
                f"  kills: {sum(self.kills.values())} ({dict(sorted(self.kills.items()))})",
            ]
        )


@contextlib.contextmanager
def mariadb_url(workdir: Path) -> Iterator[str]:
    with dbs.fresh_database("mariadb", workdir) as url:
        yield dbs.url_text(url)


def chaos_run(tmp_path: Path, jobs: int, timeout: float, pilot_sleep: str = PILOT_SLEEP) -> Result:
    directory = run.prepare_dir(tmp_path / "demo")
    seed = int(os.environ.get("ACT_KILL_SEED") or random.SystemRandom().randrange(1 << 30))
    print(f"\nkill test: random seed {seed} (ACT_KILL_SEED={seed} repeats the kill choices)")
    rng = random.Random(seed)
    with mariadb_url(tmp_path) as db_url:
        server, ids = run.start_panda(directory, jobs)
        # A fetcher killed while PanDA's reply is still in its socket loses those jobs (before
        # the spool; act/atlas/fetcher.py): PanDA sends such jobs again after a timeout.
        server.sent_timeout = SENT_TIMEOUT
        proc = None
        settings = None
        killer: Killer | None = None
        thread: threading.Thread | None = None
        db: Database | None = None
        try:
            pilot, ledger = write_ledger_pilot(directory, pilot_sleep)
            config, _ = run.write_config(directory, server.url, pilot)
            chaos_config(config, db_url)
            settings = load_settings(config)
            db = Database(settings.db_url(), pool_size=1)
            start = time.monotonic()
            proc = run.start_actd(config, directory)
            killer = Killer(proc.pid, Path(settings.root) / "local-ce", rng)
            thread = threading.Thread(target=killer.run, name="killer", daemon=True)
            thread.start()
            finished = False
            last_line = 0.0
            while time.monotonic() - start < timeout:
                assert proc.poll() is None, f"actd exited with {proc.returncode}"
                now = progress.snapshot(db, server, ids)
                if now.finished() and _all_cleaned(db):
                    finished = True
                    break
                elapsed = time.monotonic() - start
                if elapsed - last_line >= 15:
                    print(f"{now.line(elapsed)} | kills {len(killer.kills)}", flush=True)
                    last_line = elapsed
                time.sleep(1.0)
            wall = time.monotonic() - start
            killer.stop.set()
            thread.join(timeout=30)
            killer.note_dirs()
            assert not killer.errors, killer.errors
            return _result(db, server, ids, ledger, killer, wall, finished)
        finally:
            if killer is not None:
                killer.stop.set()
            if thread is not None:
                thread.join(timeout=30)
            if db is not None:
                db.dispose()
            if proc is not None and settings is not None:
                run.stop_actd(proc, settings)
                run.stop_local_jobs(settings)
            server.stop()


def _result(
    db: Database,
    server: PandaTestServer,
    ids: list[int],
    ledger: Path,
    killer: Killer,
    wall: float,
    finished: bool,
) -> Result:
    with db.read() as conn:
        panda_rows = {r.panda_id: r.state for r in conn.execute(sa.select(panda_jobs))}
        ce_rows = list(
            conn.execute(
                sa.select(
                    ce_jobs.c.panda_id, ce_jobs.c.token, ce_jobs.c.state, ce_jobs.c.submissions
                )
            )
        )
    prefix_to_panda_id = {token_prefix(r.token): r.panda_id for r in ce_rows if r.token}
    started = ledger.read_text().split() if ledger.exists() else []
    dirs: dict[str, int | None] = {name: prefix_to_panda_id.get(_prefix(name)) for name in started}
    dirs.update({name: p for name, p in killer.seen_dirs.items() if p is not None})
    per_token = Counter(_prefix(name) for name in dirs)
    per_panda_id = Counter(p if p is not None else -1 for p in dirs.values())
    pilot_runs = Counter(dirs.get(name) or -1 for name in started)
    several, after_final, never = [], [], []
    for panda_id in ids:
        states = server.states(panda_id)
        finals = [i for i, s in enumerate(states) if s in FINAL]
        if not finals:
            never.append(panda_id)
            continue
        if server.final_reports(panda_id) > 1:
            several.append(panda_id)
        if len(states) > finals[0] + 1:
            after_final.append(panda_id)
    stuck = {p: s for p, s in panda_rows.items() if s not in progress.FINAL_STATES}
    stuck.update({p: "(not fetched)" for p in ids if p not in panda_rows})
    return Result(
        seeded=len(ids),
        one_final_report=sum(1 for p in ids if server.final_reports(p) == 1),
        several_final_reports=several,
        reported_after_final=after_final,
        never_reported=never,
        submitted_twice={t: n for t, n in per_token.items() if n > 1},
        panda_id_submitted_twice={p: n for p, n in per_panda_id.items() if n > 1},
        pilot_runs=pilot_runs,
        sent_again=sorted(p for p in ids if int(server.jobs[p].spec.get("nSent", 0)) > 1),
        submissions_column=Counter(int(r.submissions) for r in ce_rows),
        stuck=stuck,
        ce_not_cleaned=Counter(r.state for r in ce_rows if r.state != "cleaned"),
        kills=Counter(name for _, _, name in killer.kills),
        wall=wall,
        finished=finished,
    )


def _prefix(job_dir: str) -> str:
    return job_dir.split("-", maxsplit=1)[0]


def _all_cleaned(db: Database) -> bool:
    with db.read() as conn:
        left = conn.execute(
            sa.select(sa.func.count()).where(ce_jobs.c.state != "cleaned")
        ).scalar_one()
    return int(left) == 0


def check(result: Result, min_kills: int) -> None:
    print("\n" + result.text())
    assert result.finished, "not every job was final and reported before the timeout"
    assert result.one_final_report == result.seeded
    assert not result.several_final_reports and not result.reported_after_final
    assert not result.never_reported
    assert not result.submitted_twice and not result.panda_id_submitted_twice
    assert not result.stuck and not result.ce_not_cleaned
    # the ledger saw every pilot, each under a known CE job
    assert sorted(result.pilot_runs) == sorted(set(range(1, result.seeded + 1)))
    assert set(result.pilot_runs.values()) == {1}
    assert sum(result.kills.values()) >= min_kills


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_300_jobs_survive_a_daemon_killed_every_few_seconds(tmp_path: Path) -> None:
    # Pilots of 5-15 s keep the 300 jobs flowing for about a minute, long enough for the kills
    # (with the 0.1-0.5 s pilots of the 5,000-job run, 300 jobs took 25 s: 6 kills). The 240 s
    # wait is for a machine loaded far more.
    check(chaos_run(tmp_path, jobs=300, timeout=240, pilot_sleep="5-15"), min_kills=10)


@pytest.mark.long
@pytest.mark.timeout(960)
def test_5000_jobs_survive_a_daemon_killed_every_few_seconds(tmp_path: Path) -> None:
    # The issue's own size. On the 2-core development machine, shared with other test runs:
    # 308 s and 355 s at a load average of 9-20 (974 and 845 jobs/min, 83 and 98 kills), 524 s
    # at 15-27 (573 jobs/min); the 840 s wait leaves room for a machine loaded more, and a fast
    # run still sees more than 50 kills.
    check(chaos_run(tmp_path, jobs=5000, timeout=840), min_kills=50)
