"""The benchmarks of issue 8 in one command, one report with the machine's details.

``python -m benchmarks [--only SECTION[,...]] [--quick] [--markdown PATH]`` runs, in this order:

1. ``heartbeats``: heartbeat throughput, the propagator's bulk path vs one call per job vs a bare
   bulk client, against the real PanDA server of tests/harness/panda-server and the test double
   (benchmarks/heartbeats.py ``--real``);
2. ``db``: claims and transitions/s on SQLite, MariaDB and PostgreSQL next to a raw batched
   UPDATE on the same table (benchmarks/db_throughput.py);
3. ``queries``: each daemon's per-cycle query with 1,000,000 rows in the job tables, p50/p99
   (benchmarks/daemon_queries.py);
4. ``rss``: VmRSS/VmHWM of each daemon of a running actd with 100,000 active jobs;
5. ``e2e``: end-to-end jobs/min through the local back end and the bridge's CPU per job
   (4 and 5: benchmarks/bridge.py).

``--quick`` uses small sizes (a smoke test of the command, not figures to quote). Every section
checks its own results and stops the command with an error if they are wrong. The report goes to
stdout (progress to stderr); ``--markdown`` also writes it, with the command line, to a file.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tabulate import tabulate

SECTIONS = ("heartbeats", "db", "queries", "rss", "e2e")
TITLES = {
    "heartbeats": "1. Heartbeat throughput (bulk vs per-job vs bare bulk client)",
    "db": "2. Job-table transitions and claims/s next to a raw batched UPDATE",
    "queries": "3. Daemon query times with a big store, ms p50 / p99",
    "rss": "4. Memory of each daemon with active jobs",
    "e2e": "5. End to end through the local back end, and the bridge's CPU per job",
}

#: Sizes of the full run (about 15 minutes on 2 cores) and of --quick.
FULL = SimpleNamespace(
    hb_jobs=1000,
    hb_single=300,
    hb_repeat=2,
    db_rows=20000,
    db_repeat=2,
    db_processes=4,
    db_max_wait=5,
    q_rows=1_000_000,
    q_repeat=30,
    rss_active=100_000,
    rss_seconds=60.0,
    e2e_jobs=500,
)
QUICK = SimpleNamespace(
    hb_jobs=100,
    hb_single=20,
    hb_repeat=1,
    db_rows=500,
    db_repeat=1,
    db_processes=2,
    db_max_wait=0,
    q_rows=20000,
    q_repeat=5,
    rss_active=1000,
    rss_seconds=10.0,
    e2e_jobs=20,
)
BACKENDS = ("sqlite", "mariadb", "postgresql")


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def machine(backends: tuple[str, ...]) -> list[str]:
    """The machine, the software and the database servers, one ``key: value`` a line."""
    from act.common.db import Database
    from benchmarks.db_throughput import machine_info, server_info
    from tests.support.dbs import fresh_database

    info = machine_info()
    lines = [
        f"date: {info['date_utc']}",
        f"act commit: {info['act_commit']}",
        f"cpu: {info['cpu']}, {info['nproc']} cores; memory {info['ram']}",
        f"kernel: {info['kernel']}; Python {info['python']}; {info['libraries']}",
    ]
    with tempfile.TemporaryDirectory(prefix="act-bench-") as tmp:
        for backend in backends:
            # an empty database is enough to ask the server (no schema: faster)
            with fresh_database(backend, Path(tmp), migrated=False) as url:
                db = Database(url)
                try:
                    lines.append(f"{backend}: {server_info(db)}")
                finally:
                    db.dispose()
    return lines


# --- the sections: each returns its report (markdown) ------------------------------------------


def heartbeats(size: SimpleNamespace) -> str:
    from benchmarks import heartbeats as hb

    args = hb.parse_args(
        [
            "--real",
            "--jobs",
            str(size.hb_jobs),
            "--single-jobs",
            str(size.hb_single),
            "--repeat",
            str(size.hb_repeat),
        ]
    )
    logging.getLogger("act.propagator").setLevel(logging.WARNING)
    logging.getLogger("act.atlas").setLevel(logging.WARNING)
    servers, figures = hb.collect(args)
    return "\n".join(
        [
            f"servers: {'; '.join(servers)}; propagator's DB {args.backend}; "
            f"{args.repeat} repetitions, jobs/s median (min-max)",
            "",
            hb.render(figures, tablefmt="github"),
        ]
    )


def db(size: SimpleNamespace) -> str:
    from benchmarks import db_throughput as dbt

    args = dbt.parse_args(
        [
            "--rows",
            str(size.db_rows),
            "--repeat",
            str(size.db_repeat),
            "--processes",
            str(size.db_processes),
            "--max-wait",
            str(size.db_max_wait),
        ]
    )
    results = {}
    with tempfile.TemporaryDirectory(prefix="act-bench-") as tmp:
        for backend in args.backends:
            results[backend] = dbt.bench_backend(backend, args, Path(tmp))
    lines = [
        f"rows={args.rows} per repetition, batch={args.batch}, processes={args.processes}, "
        f"repeat={args.repeat}; CE jobs tosubmit -> submitting, fresh rows every repetition. "
        "Row 0 is the physical ceiling of row 1: a plain batched UPDATE through the driver on "
        "the same table, rows and database, no history row. Every repetition is verified "
        "(each row moved exactly once).",
        "",
        dbt.table(results, args),
        "",
        "act's batched transition as a share of the raw UPDATE: "
        + ", ".join(
            f"{backend} {_share(result, 'transition', 'raw_update'):.0%}"
            for backend, result in results.items()
        ),
    ]
    return "\n".join(lines)


def _share(result: dict[str, Any], name: str, ceiling: str) -> float:
    from benchmarks import db_throughput as dbt

    runs = result["runs"]
    return dbt.summary(runs[name])["median"] / dbt.summary(runs[ceiling])["median"]


def queries(size: SimpleNamespace) -> str:
    from act.common.config import DaemonSettings
    from benchmarks import daemon_queries as dq

    results = {backend: dq.measure(backend, size.q_rows, size.q_repeat) for backend in BACKENDS}
    fills = ", ".join(f"{b} {r[0]:.0f} s" for b, r in results.items())
    return "\n".join(
        [
            f"{size.q_rows:,} PanDA jobs + {size.q_rows:,} CE jobs + {size.q_rows:,} history rows "
            f"(~91% final); each query {size.q_repeat} times (fewer, at least 5, once it took "
            f"{dq.BUDGET:.0f} s), in a rolled-back transaction; "
            f"claims take a full batch of {DaemonSettings().batch}. Fill (not timed): {fills}.",
            "",
            tabulate(
                dq.table(results),
                headers=["query: ms p50 / p99 (repetitions)", *results],
                tablefmt="github",
                colalign=("left",),
            ),
        ]
    )


def rss(size: SimpleNamespace) -> str:
    from benchmarks import bridge

    found = bridge.rss(size.rss_active, size.rss_seconds)
    rows = [
        [name, f"{now / 1024:.1f}", f"{peak / 1024:.1f}", cycles]
        for name, (now, peak, cycles) in found.daemons.items()
    ]
    total = sum(now for now, _, _ in found.daemons.values()) / 1024
    return "\n".join(
        [
            f"actd with every daemon of the demo (SQLite store, PanDA test double, local CE), "
            f"{found.active:,} active PanDA jobs and as many CE jobs; read after "
            f"{found.seconds:.0f} s. Sum of VmRSS: {total:.0f} MiB.",
            "",
            tabulate(
                rows,
                headers=["daemon", "VmRSS MiB", "VmHWM MiB", "cycles"],
                tablefmt="github",
            ),
        ]
    )


def e2e(size: SimpleNamespace) -> str:
    from benchmarks import bridge

    got = bridge.end_to_end(size.e2e_jobs, timeout=max(600.0, size.e2e_jobs * 3.0))
    rows = [[name, f"{cpu:.2f}"] for name, cpu in sorted(got.cpu.items())]
    return "\n".join(
        [
            f"{got.jobs} jobs (demo pilot sleeping 0.1-0.5 s) through actd, the PanDA test "
            f"double and the local CE on SQLite: {got.seconds:.1f} s from actd's start to the "
            f"last final report = **{got.per_minute:.0f} jobs/min**; bridge CPU (actd + every "
            f"daemon process, utime+stime) {sum(got.cpu.values()):.1f} s = "
            f"**{got.cpu_per_job_ms:.0f} ms per job**.",
            f"check: {got.counts}",
            "",
            tabulate(rows, headers=["process", "CPU s"], tablefmt="github"),
        ]
    )


RUNNERS: dict[str, Callable[[SimpleNamespace], str]] = {
    "heartbeats": heartbeats,
    "db": db,
    "queries": queries,
    "rss": rss,
    "e2e": e2e,
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--only", help=f"sections, a comma list of {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    wanted = {s.strip() for s in args.only.split(",")} if args.only else set(SECTIONS)
    unknown = wanted - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    args.sections = [s for s in SECTIONS if s in wanted]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", stream=sys.stderr)
    size = QUICK if args.quick else FULL
    command = shlex.join(["python", "-m", "benchmarks", *(sys.argv[1:] if argv is None else argv)])
    started = time.monotonic()
    load_before = _load()
    parts = [
        "# act benchmarks"
        + (" (--quick: smoke-test sizes, not figures to quote)" if args.quick else ""),
        "",
        f"command: `{command}`",
        "",
        *(f"- {line}" for line in machine(BACKENDS)),
        f"- load average (1/5/15 min) before: {load_before}",
    ]
    for section in args.sections:
        t0 = time.monotonic()
        print(f"== {TITLES[section]}", file=sys.stderr)
        body = RUNNERS[section](size)
        parts += ["", f"## {TITLES[section]}", "", body, "", f"({time.monotonic() - t0:.0f} s)"]
    parts += [
        "",
        f"load average (1/5/15 min) after: {_load()}; "
        f"whole run {(time.monotonic() - started) / 60:.1f} min",
    ]
    text = "\n".join(parts) + "\n"
    print(text, end="")
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
