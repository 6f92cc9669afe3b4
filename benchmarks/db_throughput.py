"""Throughput of act's own claim and transition code on SQLite, MariaDB and PostgreSQL.

This is a benchmark, not a test: it asserts nothing about speed, it measures and prints. It runs
act's real :func:`~act.common.claims.claim` and :func:`~act.common.transitions.transition` through
:meth:`~act.common.db.Database.run`, so the figures include everything act adds to the raw SQL
(SQLAlchemy compilation, the history rows, the MariaDB lock-then-update, connection checkout).

For each backend, in a throw-away database, and for each repetition of each measurement, the
tables are emptied and refilled with fresh CE jobs in ``tosubmit`` (setup, not timed); then:

1. ``transition``: ``tosubmit -> submitting`` in batches of ``--batch`` ids, one transaction each;
2. ``claim+transition``: claim ``--batch`` rows, then transition them, until nothing is left;
3. the same in ``--processes`` spawned processes at once, checked for rows moved twice;
4. single-row transitions, one transaction per row (the naive pattern), on min(N, 2000) rows.

Run: ``PYTHONPATH=. python -m benchmarks.db_throughput [--backends ...] [--rows N] [--batch B]
[--processes P] [--repeat R] [--json PATH]``. See benchmarks/README.md for how to read it.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import partial
from importlib.metadata import version as dist_version
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL
from tabulate import tabulate

from act.common.claims import claim
from act.common.db import Database
from act.common.schema import ce_jobs
from act.common.schema import transitions as history
from act.common.states import Actor, Layer
from act.common.transitions import create_jobs, transition
from tests.support.dbs import BackendUnavailable, fresh_database, url_text
from tests.support.jobs import ce_row

log = logging.getLogger("act.bench")

ALL_BACKENDS = ("sqlite", "mariadb", "postgresql")
PREFILL_BATCH = 1000
SINGLE_ROW_MAX = 2000
LEASE = 300.0
FROM, TO = "tosubmit", "submitting"
#: A machine with less than this share of its CPUs busy counts as quiet.
QUIET = 0.15
#: Seconds the parent and the workers wait for each other at the start line before giving up.
START_TIMEOUT = 300.0

MEASUREMENTS = (
    "raw_update",
    "transition",
    "claim_transition",
    "claim_transition_parallel",
    "single_row",
)


class BenchmarkError(RuntimeError):
    """The benchmark saw act do something wrong (a row moved twice, a row not moved...)."""


class _Rollback(Exception):
    """Raised inside a transaction to roll back a warm-up."""


class RetryCounter(logging.Handler):
    """Counts the "transient database error" warnings of Database.run (one per retry)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("transient database error"):
            self.count += 1


def _install_retry_counter() -> RetryCounter:
    counter = RetryCounter()
    logging.getLogger("act.db").addHandler(counter)
    return counter


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat."""
    with open("/proc/stat", encoding="utf-8") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user/nice
    return total - idle, total


def cpu_busy(since: tuple[int, int]) -> float:
    """Share of all CPUs that was busy since an earlier cpu_times()."""
    busy, total = cpu_times()
    return (busy - since[0]) / max(1, total - since[1])


def wait_quiet(max_wait: float, threshold: float = QUIET) -> float:
    """Wait until the machine is idle (other work would skew the figures); return its load."""
    deadline = time.monotonic() + max_wait
    while True:
        before = cpu_times()
        time.sleep(0.5)
        busy = cpu_busy(before)
        if busy < threshold:
            return busy
        if time.monotonic() >= deadline:
            log.warning(
                "machine still %.0f%% busy after %.0f s: measuring anyway", busy * 100, max_wait
            )
            return busy
        time.sleep(2)


@dataclass
class Run:
    """One repetition of one measurement."""

    rows: int
    seconds: float
    retries: int = 0
    check: dict[str, Any] = field(default_factory=dict)
    #: Share of all CPUs busy just before the start (see wait_quiet) and while it ran.
    quiet_before: float = 0.0
    machine_busy: float = 0.0

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("nan")


# --- setup (not timed) -------------------------------------------------------------------------


def reset(db: Database) -> None:
    """Empty the job and history tables and leave the database tidy for the next repetition."""
    with db.transaction() as conn:
        conn.execute(sa.delete(history))
        conn.execute(sa.delete(ce_jobs))
    _maintain(
        db,
        {
            "postgresql": ["VACUUM ANALYZE ce_jobs", "VACUUM ANALYZE transitions"],
            "sqlite": ["PRAGMA wal_checkpoint(TRUNCATE)"],
        },
    )


def analyze(db: Database) -> None:
    """Fresh planner statistics after a prefill, as autovacuum/InnoDB would soon have them.

    Not on SQLite: it gathers none by itself, and act never runs ANALYZE there.
    """
    _maintain(db, {"postgresql": ["ANALYZE ce_jobs"], "mysql": ["ANALYZE TABLE ce_jobs"]})


def _maintain(db: Database, statements: dict[str, list[str]]) -> None:
    """Run maintenance statements outside any transaction (autocommit)."""
    todo = statements.get(db.backend, [])
    if not todo:
        return
    raw = db.engine.raw_connection()
    try:
        if db.backend == "postgresql":
            raw.driver_connection.autocommit = True  # type: ignore[union-attr]
        cursor = raw.cursor()
        for statement in todo:
            cursor.execute(statement)
            if cursor.description is not None:
                cursor.fetchall()
        cursor.close()
        if db.backend == "postgresql":
            raw.driver_connection.autocommit = False  # type: ignore[union-attr]
        else:
            raw.commit()
    finally:
        raw.close()


def prefill(db: Database, count: int) -> list[int]:
    """``count`` fresh CE jobs in ``tosubmit``, created by act in batches of 1000."""
    reset(db)
    ids: list[int] = []
    for start in range(0, count, PREFILL_BATCH):
        rows = [ce_row() for _ in range(min(PREFILL_BATCH, count - start))]
        create = partial(create_jobs, layer=Layer.CE, rows=rows, state=FROM, actor=Actor.TRANSLATOR)
        ids.extend(db.run(create))
    analyze(db)
    return ids


def warm_up(db: Database, owner: str) -> None:
    """Compile every statement the measurements use, on a real row, then roll it all back."""
    try:
        with db.transaction() as conn:
            got = claim(conn, Layer.CE, [FROM], owner=owner, lease=LEASE, limit=1)
            transition(conn, Layer.CE, got, FROM, TO, actor=Actor.SUBMITTER, owner=owner)
            transition(conn, Layer.CE, got, TO, FROM, actor=Actor.SUBMITTER)
            transition(conn, Layer.CE, got, FROM, TO, actor=Actor.SUBMITTER)
            raise _Rollback
    except _Rollback:
        pass


def verify(
    db: Database, ids: Sequence[int], moved: Sequence[int], *, with_history: bool = True
) -> dict[str, Any]:
    """Every prefilled row moved exactly once: by the ids act returned and by the database
    (``with_history``: one history row each; without it, the raw UPDATE: none)."""
    expected = len(ids)
    duplicates = len(moved) - len(set(moved))
    with db.read() as conn:
        history_rows = conn.execute(
            sa.select(sa.func.count())
            .select_from(history)
            .where(history.c.layer == Layer.CE.value, history.c.to_state == TO)
        ).scalar_one()
        twice = conn.execute(
            sa.select(sa.func.count()).select_from(
                sa.select(history.c.job_id)
                .where(history.c.layer == Layer.CE.value, history.c.to_state == TO)
                .group_by(history.c.job_id)
                .having(sa.func.count() > 1)
                .subquery()
            )
        ).scalar_one()
        states = {
            state: count
            for state, count in conn.execute(
                sa.select(ce_jobs.c.state, sa.func.count()).group_by(ce_jobs.c.state)
            )
        }
        leased = conn.execute(
            sa.select(sa.func.count())
            .select_from(ce_jobs)
            .where(ce_jobs.c.lease_owner.is_not(None))
        ).scalar_one()
    check = {
        "expected": expected,
        "moved_ids": len(moved),
        "duplicate_ids": duplicates,
        "moved_equals_prefilled": set(moved) == set(ids),
        "history_to_submitting": int(history_rows),
        "jobs_with_two_history_rows": int(twice),
        "rows_submitting": int(states.get(TO, 0)),
        "rows_tosubmit": int(states.get(FROM, 0)),
        "rows_still_leased": int(leased),
    }
    check["ok"] = (
        duplicates == 0
        and check["moved_equals_prefilled"]
        and history_rows == (expected if with_history else 0)
        and twice == 0
        and check["rows_submitting"] == expected
        and check["rows_tosubmit"] == 0
        and leased == 0
    )
    if not check["ok"]:
        raise BenchmarkError(f"verification failed: {check}")
    return check


# --- the measured loops --------------------------------------------------------------------------


def batched_transitions(db: Database, ids: Sequence[int], batch: int) -> list[int]:
    moved: list[int] = []
    for start in range(0, len(ids), batch):
        chunk = list(ids[start : start + batch])
        step = partial(
            transition,
            layer=Layer.CE,
            ids=chunk,
            from_state=FROM,
            to_state=TO,
            actor=Actor.SUBMITTER,
        )
        got = db.run(step)
        if len(got) != len(chunk):
            raise BenchmarkError(f"transition moved {len(got)} of {len(chunk)} rows")
        moved.extend(got)
    return moved


def raw_update(db: Database, ids: Sequence[int], batch: int) -> list[int]:
    """The physical ceiling of measurement 1, on the same table, rows and database: a plain
    ``UPDATE ce_jobs SET state, updated_at WHERE id IN (<batch>) AND state = ?`` through the
    driver, one commit per batch; no SQLAlchemy, no history row, no retry. Returns the ids whose
    UPDATE counted them (each batch must count all of its rows)."""
    raw = db.engine.raw_connection()
    mark = "?" if db.backend == "sqlite" else "%s"
    moved: list[int] = []
    try:
        cursor = raw.cursor()
        for start in range(0, len(ids), batch):
            chunk = list(ids[start : start + batch])
            # only placeholders are formatted in: every value is bound
            statement = (
                f"UPDATE ce_jobs SET state = {mark}, updated_at = {mark} "  # noqa: S608
                f"WHERE id IN ({', '.join([mark] * len(chunk))}) AND state = {mark}"
            )
            now = datetime.now(timezone.utc).replace(tzinfo=None)
            cursor.execute(statement, (TO, now, *chunk, FROM))
            if cursor.rowcount != len(chunk):
                raise BenchmarkError(f"raw UPDATE counted {cursor.rowcount} of {len(chunk)} rows")
            raw.commit()
            moved.extend(chunk)
        cursor.close()
    finally:
        raw.close()
    return moved


def claim_loop(db: Database, owner: str, batch: int) -> list[int]:
    """What a submitter does: claim a batch, move it, until there is nothing left to claim."""
    take = partial(claim, layer=Layer.CE, states=[FROM], owner=owner, lease=LEASE, limit=batch)
    moved: list[int] = []
    while True:
        ids = db.run(take)
        if not ids:
            return moved
        step = partial(
            transition,
            layer=Layer.CE,
            ids=ids,
            from_state=FROM,
            to_state=TO,
            actor=Actor.SUBMITTER,
            owner=owner,
        )
        got = db.run(step)
        if got != ids:
            raise BenchmarkError(f"{owner}: claimed {len(ids)} rows but moved {len(got)}")
        moved.extend(got)


def timed(fn: Callable[[], list[int]], counter: RetryCounter) -> tuple[list[int], float, int]:
    retries = counter.count
    start = time.perf_counter()
    moved = fn()
    return moved, time.perf_counter() - start, counter.count - retries


def _worker(url: str, owner: str, batch: int, ready: Barrier, out: Any) -> None:
    """One spawned claimer: own Database, warm connection and caches, then wait for the start."""
    logging.basicConfig(level=logging.WARNING, format=f"%(asctime)s {owner} %(message)s")
    counter = _install_retry_counter()
    db = Database(url)
    try:
        warm_up(db, owner)
        ready.wait(START_TIMEOUT)
        start = time.monotonic()
        moved = claim_loop(db, owner, batch)
        end = time.monotonic()
        out.put(
            {
                "owner": owner,
                "moved": moved,
                "start": start,
                "end": end,
                "retries": counter.count,
                "error": None,
            }
        )
    except BaseException as error:
        out.put({"owner": owner, "error": repr(error)})
        ready.abort()
        raise
    finally:
        db.dispose()


def parallel_claims(url: URL, processes: int, batch: int, rep: int) -> tuple[list[int], float, Any]:
    """``processes`` claimers started together; time from their release to the last one's end."""
    ctx = mp.get_context("spawn")
    ready = ctx.Barrier(processes + 1)
    out = ctx.Queue()
    owners = [f"bench-r{rep}-p{i}" for i in range(processes)]
    procs = [
        ctx.Process(target=_worker, args=(url_text(url), owner, batch, ready, out), name=owner)
        for owner in owners
    ]
    for proc in procs:
        proc.start()
    try:
        ready.wait(START_TIMEOUT)
        released = time.monotonic()
        before = cpu_times()
        results = [out.get(timeout=3600) for _ in procs]
        busy = cpu_busy(before)
    finally:
        for proc in procs:
            proc.join(60)
    failed = [r for r in results if r["error"]]
    if failed or any(p.exitcode for p in procs):
        raise BenchmarkError(f"worker failed: {failed or [p.exitcode for p in procs]}")
    start = min([released, *(r["start"] for r in results)])
    elapsed = max(r["end"] for r in results) - start
    moved = [job_id for r in results for job_id in r["moved"]]
    split = {r["owner"]: len(r["moved"]) for r in sorted(results, key=lambda r: r["owner"])}
    retries = sum(r["retries"] for r in results)
    return moved, elapsed, {"split": split, "retries": retries, "busy": busy}


# --- per backend -------------------------------------------------------------------------------


def server_info(db: Database) -> str:
    with db.read() as conn:
        if db.backend == "mysql":
            row = conn.exec_driver_sql(
                "SELECT VERSION(), @@innodb_flush_log_at_trx_commit, @@innodb_buffer_pool_size"
            ).one()
            return (
                f"MariaDB {row[0]} (innodb_flush_log_at_trx_commit={row[1]}, "
                f"buffer pool {int(row[2]) // 2**20} MiB; act uses READ COMMITTED)"
            )
        if db.backend == "postgresql":
            ver = conn.exec_driver_sql("SHOW server_version").scalar_one()
            sync = conn.exec_driver_sql("SHOW synchronous_commit").scalar_one()
            buffers = conn.exec_driver_sql("SHOW shared_buffers").scalar_one()
            return f"PostgreSQL {ver} (synchronous_commit={sync}, shared_buffers={buffers})"
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar_one()
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
        return (
            f"SQLite {sqlite3.sqlite_version} (journal_mode={mode}, "
            f"synchronous={names.get(int(sync), sync)}, file in {tempfile.gettempdir()})"
        )


def bench_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    counter = _install_retry_counter()
    runs: dict[str, list[Run]] = {name: [] for name in MEASUREMENTS}
    with fresh_database(backend, workdir) as url:
        db = Database(url)
        try:
            info = server_info(db)
            log.warning("%s: %s", backend, info)
            for rep in range(1, args.repeat + 1):
                for name in MEASUREMENTS:
                    runs[name].append(
                        measure(name, db, url=url, rep=rep, args=args, counter=counter)
                    )
                    _progress(backend, name, rep, runs[name][-1])
        finally:
            db.dispose()
    logging.getLogger("act.db").removeHandler(counter)
    return {"server": info, "runs": runs}


def measure(
    name: str, db: Database, *, url: URL, rep: int, args: argparse.Namespace, counter: RetryCounter
) -> Run:
    """One repetition of one measurement, on fresh rows, started on a quiet machine."""
    ids = prefill(db, min(args.rows, SINGLE_ROW_MAX) if name == "single_row" else args.rows)
    warm_up(db, "bench-warmup")
    quiet = wait_quiet(args.max_wait)
    extra: dict[str, Any] = {}
    if name == "claim_transition_parallel":
        moved, secs, extra = parallel_claims(url, args.processes, args.batch, rep)
        retries, busy = extra.pop("retries"), extra.pop("busy")
    else:
        loops: dict[str, Callable[[], list[int]]] = {
            "raw_update": partial(raw_update, db, ids, args.batch),
            "transition": partial(batched_transitions, db, ids, args.batch),
            "claim_transition": partial(claim_loop, db, f"bench-r{rep}-single", args.batch),
            "single_row": partial(batched_transitions, db, ids, 1),
        }
        before = cpu_times()
        moved, secs, retries = timed(loops[name], counter)
        busy = cpu_busy(before)
    check = {**verify(db, ids, moved, with_history=name != "raw_update"), **extra}
    return Run(len(moved), secs, retries, check, quiet_before=quiet, machine_busy=busy)


def _progress(backend: str, name: str, rep: int, run: Run) -> None:
    split = run.check.get("split")
    log.warning(
        "%s %-26s rep %d: %6d rows in %7.3f s = %8.0f rows/s, retries %d, check %s, "
        "machine busy %.0f%% before, %.0f%% during%s",
        backend,
        name,
        rep,
        run.rows,
        run.seconds,
        run.rate,
        run.retries,
        "ok" if run.check.get("ok") else "FAILED",
        run.quiet_before * 100,
        run.machine_busy * 100,
        f", split {split}" if split else "",
    )


# --- report ------------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = "unknown"
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    libs = ", ".join(
        f"{name} {dist_version(name)}" for name in ("SQLAlchemy", "mysqlclient", "psycopg")
    )
    try:
        commit = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "act_commit": commit,
        "cpu": cpu,
        "nproc": str(os.cpu_count()),
        "ram": ram,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "libraries": libs,
    }


def summary(runs: Sequence[Run]) -> dict[str, float]:
    rates = [r.rate for r in runs]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def labels(args: argparse.Namespace) -> dict[str, str]:
    single = min(args.rows, SINGLE_ROW_MAX)
    return {
        "raw_update": f"0. raw UPDATE, {args.batch} ids/tx, 1 process (ceiling of 1)",
        "transition": f"1. transition, {args.batch} ids/tx, 1 process",
        "claim_transition": f"2. claim {args.batch} + transition, 1 process",
        "claim_transition_parallel": (
            f"3. claim {args.batch} + transition, {args.processes} processes (total)"
        ),
        "single_row": f"4. single-row transition, 1 tx/row, 1 process ({single} rows)",
    }


def table(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    names = labels(args)
    rows = []
    for name in MEASUREMENTS:
        cells = [names[name]]
        for backend in results:
            stats = summary(results[backend]["runs"][name])
            cells.append(f"{stats['median']:,.0f} ({stats['min']:,.0f}-{stats['max']:,.0f})")
        rows.append(cells)
    headers = ["rows/s: median (min-max)", *results]
    return tabulate(rows, headers=headers, tablefmt="github", colalign=("left",))


def report(results: dict[str, dict[str, Any]], machine: dict[str, str], args: Any) -> str:
    servers = {"mariadb": "MariaDB", "postgresql": "PostgreSQL"}
    lines = [
        "act claim/transition throughput (benchmarks/db_throughput.py)",
        f"date:       {machine['date_utc']}; act at commit {machine['act_commit']}",
        f"cpu:        {machine['cpu']} x {machine['nproc']} (nproc), RAM {machine['ram']}",
        f"kernel:     {machine['kernel']}; Python {machine['python']}; {machine['libraries']}",
        f"sqlite:     {results['sqlite']['server'] if 'sqlite' in results else machine['sqlite']}",
    ]
    for backend, name in servers.items():
        text = results[backend]["server"] if backend in results else "(not run)"
        lines.append(f"{backend + ':':<11} {text if backend in results else name + ' ' + text}")
    lines.append(
        f"params:     rows={args.rows} batch={args.batch} processes={args.processes} "
        f"repeat={args.repeat}; CE jobs tosubmit -> submitting, fresh rows every repetition"
    )
    every = [run for result in results.values() for runs in result["runs"].values() for run in runs]
    noisy = sum(run.quiet_before >= QUIET for run in every)
    lines.append(
        f"quiet:      each repetition started once all CPUs were < {QUIET:.0%} busy "
        f"(busiest start {max(run.quiet_before for run in every):.0%}; "
        f"{noisy} of {len(every)} started busy after --max-wait)"
    )
    lines += ["", table(results, args), "", "machine CPU busy while measuring (median, all CPUs):"]
    for number, name in enumerate(MEASUREMENTS):
        shares = ", ".join(
            f"{backend} {statistics.median(r.machine_busy for r in result['runs'][name]):.0%}"
            for backend, result in results.items()
        )
        lines.append(f"  {number}. {name}: {shares}")
    lines += ["", "verification (3. parallel claims):"]
    for backend, result in results.items():
        for rep, run in enumerate(result["runs"]["claim_transition_parallel"], 1):
            c = run.check
            lines.append(
                f"  {backend:<10} rep {rep}: moved {c['moved_ids']}/{c['expected']} ids, "
                f"{c['duplicate_ids']} duplicates, history rows to submitting "
                f"{c['history_to_submitting']}, jobs with >1 such row "
                f"{c['jobs_with_two_history_rows']}, retries {run.retries}, "
                f"split {'/'.join(str(n) for n in c['split'].values())} "
                f"-> {'OK' if c['ok'] else 'FAILED'}"
            )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.db_throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--backends", default=",".join(ALL_BACKENDS))
    parser.add_argument("--rows", type=int, default=20000, help="jobs per repetition")
    parser.add_argument("--batch", type=int, default=100, help="ids per transition/claim")
    parser.add_argument("--processes", type=int, default=4, help="claimers in measurement 3")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of each measurement")
    parser.add_argument(
        "--max-wait",
        type=float,
        default=300.0,
        help="seconds to wait, before each repetition, for other work on the machine to stop",
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - set(ALL_BACKENDS)
    if unknown:
        parser.error(f"unknown backends {sorted(unknown)}; choose from {', '.join(ALL_BACKENDS)}")
    if min(args.rows, args.batch, args.processes, args.repeat) < 1:
        parser.error("--rows, --batch, --processes and --repeat must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    machine = machine_info()
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="act-bench-") as tmp:
        for backend in args.backends:
            try:
                results[backend] = bench_backend(backend, args, Path(tmp))
            except BackendUnavailable as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
    print(report(results, machine, args))
    if args.json:
        raw = {
            "machine": machine,
            "params": {k: v for k, v in vars(args).items() if k != "json"},
            "labels": labels(args),
            "results": {
                backend: {
                    "server": result["server"],
                    "measurements": {
                        name: {
                            "runs": [{**asdict(r), "rows_per_s": r.rate} for r in runs],
                            **summary(runs),
                        }
                        for name, runs in result["runs"].items()
                    },
                }
                for backend, result in results.items()
            },
        }
        args.json.write_text(json.dumps(raw, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
