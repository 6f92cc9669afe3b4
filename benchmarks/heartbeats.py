"""Heartbeat throughput: the propagator's bulk path vs aCT's one call per job vs a bare bulk loop.

This is a benchmark, not a test: it measures and prints. Three ways of sending one heartbeat
(``running``) for each of N jobs, each repeated ``--repeat`` times (median, min-max):

1. ``propagator``: N jobs due in an act database (``--backend``), sent by the real propagator
   (``act.atlas.propagator.run_once``, cycles until nothing is due): claims, bulk calls of
   ``--batch`` jobs with ``--in-flight`` calls at once, and the DB writes of every outcome;
2. ``per-job, new connection``: aCT's pattern: one ``update_job`` per job, each through a new
   client, i.e. a new TCP + TLS connection with the client certificate (on ``--single-jobs``
   jobs);
3. ``bare bulk client``: the same bulk calls as 1 without any database: the ceiling of act's
   PanDA client against that server.

Every reply is checked (ok, no command); a refused heartbeat stops the benchmark.

The server is by default the PanDA TEST DOUBLE (``act.testing.panda``) in a forked
process, over HTTPS with a throw-away CA and a client proxy (not PanDA: its per-job cost is
near zero, so the figures show act's side). Against a real server (e.g. the recipe of
shared/research/panda.md) give ``--url`` (or ``$PANDA_URL_SSL``), ``--ca`` (``$PANDA_CA_CERT``),
``--proxy`` (``$PANDA_CLIENT_PROXY``) and ``--queue`` (``$PANDA_QUEUE``): the N jobs are acquired
from that queue first, so it must hold at least N activated jobs.

``--real`` measures against the REAL PanDA server of ``tests/harness/panda-server`` (found with
its ``env`` command; it must be running): a fresh queue is seeded with N jobs straight into the
server's database and acquired, the patterns run, and the jobs are deleted from the server's
tables afterwards. The same patterns then run against the test double, and one table shows both,
with the machine's details (CPUs, memory, load average before and after).

Run: ``PYTHONPATH=. python -m benchmarks.heartbeats [--real] [--jobs N] [--batch B]
[--in-flight F[,F...]] [--repeat R] [--backend sqlite|mariadb|postgresql] [--api new|legacy]
[--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing as mp
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from multiprocessing.connection import Connection as Pipe
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection as SAConnection
from tabulate import tabulate

from act.atlas.config import Context as AtlasContext
from act.atlas.credentials import FileCredentials, NoCredentials
from act.atlas.panda_client import JobUpdate, PandaClient, UpdateResult
from act.atlas.panda_settings import PandaServerSettings
from act.atlas.propagator import PropagatorOptions, run_once
from act.common.config import DaemonSettings
from act.common.daemon import Context
from act.common.db import Database
from act.common.schema import panda_jobs
from act.common.states import Layer
from act.common.timeutil import utcnow
from act.service.settings import Settings
from act.testing.panda import PandaTestServer, TestCA
from tests.support.dbs import fresh_database
from tests.support.jobs import make_jobs

log = logging.getLogger("act.bench")


class BenchmarkError(RuntimeError):
    """A heartbeat was refused or lost: the figures would mean nothing."""


@dataclass
class Figure:
    server: str
    pattern: str
    jobs: int
    calls: int
    seconds: list[float]

    @property
    def rates(self) -> list[float]:
        return [self.jobs / s for s in self.seconds]


# -- the server -----------------------------------------------------------------------------------


def _serve(ca: TestCA, jobs: int, queue: str, pipe: Pipe) -> None:
    """The forked child: the TEST DOUBLE over HTTPS until the parent says stop."""
    server = PandaTestServer(tls=True, ca=ca)
    server.seed(jobs, queue=queue)
    server.record_requests = False
    server.start()
    pipe.send(server.port)
    pipe.recv()  # stop
    server.stop()


@contextmanager
def test_double(jobs: int, queue: str, workdir: Path) -> Iterator[PandaServerSettings]:
    """The PanDA TEST DOUBLE in a forked process (its own GIL), and client settings for it."""
    ca = TestCA(workdir / "ca")
    proxy = ca.proxy(workdir / "x509_production", cn="act-bench")
    parent, child = mp.get_context("fork").Pipe()
    process = mp.get_context("fork").Process(target=_serve, args=(ca, jobs, queue, child))
    process.start()
    try:
        port = parent.recv()
        yield PandaServerSettings.model_validate(
            {
                "url": f"https://127.0.0.1:{port}",
                "ca": str(ca.ca_file),
                "retries": 0,
                "roles": {"production": {"proxy": str(proxy)}},
            }
        )
    finally:
        parent.send("stop")
        process.join(timeout=30)


def external(args: argparse.Namespace) -> PandaServerSettings:
    roles = {"production": {"proxy": args.proxy}} if args.proxy else {}
    return PandaServerSettings.model_validate(
        {"url": args.url, "ca": args.ca, "retries": 0, "roles": roles, "api": args.api}
    )


def client(settings: PandaServerSettings) -> PandaClient:
    credentials = FileCredentials(settings) if settings.roles else NoCredentials()
    return PandaClient(settings, credentials)


def acquire(settings: PandaServerSettings, queue: str, n: int) -> list[int]:
    """Take N jobs from the queue, as a bridge does before it reports them."""
    panda_ids: list[int] = []
    with client(settings) as panda:
        while len(panda_ids) < n:
            got = panda.acquire_jobs(
                queue=queue,
                prod_source_label="managed",
                n_jobs=min(100, n - len(panda_ids)),
                node="bench",
            )
            if not got:
                raise BenchmarkError(f"queue {queue} has only {len(panda_ids)} of {n} jobs")
            panda_ids.extend(job.panda_id for job in got)
    return panda_ids


# -- the three patterns ---------------------------------------------------------------------------


def _check(results: Sequence[UpdateResult]) -> None:
    bad = [r for r in results if not r.ok or r.command]
    if bad:
        raise BenchmarkError(f"{len(bad)} heartbeat(s) not accepted, e.g. {bad[0]}")


def _updates(panda_ids: Sequence[int]) -> list[JobUpdate]:
    fields = {"node": "wn1.bench", "coreCount": 1, "cpuConsumptionTime": 100, "siteName": "q"}
    return [JobUpdate(panda_id, "running", 1, fields) for panda_id in panda_ids]


def bare_bulk(
    settings: PandaServerSettings, panda_ids: Sequence[int], batch: int, in_flight: int
) -> float:
    updates = _updates(panda_ids)
    chunks = [updates[i : i + batch] for i in range(0, len(updates), batch)]
    with client(settings) as panda, ThreadPoolExecutor(in_flight) as pool:
        panda.update_jobs_bulk(updates[:1])  # warm: connection and credential loaded
        start = time.perf_counter()
        for results in pool.map(panda.update_jobs_bulk, chunks):
            _check(results)
        return time.perf_counter() - start


def per_job_new_connection(settings: PandaServerSettings, panda_ids: Sequence[int]) -> float:
    start = time.perf_counter()
    for update in _updates(panda_ids):
        with client(settings) as panda:  # a new session: a new TCP + TLS connection
            _check([panda.update_job(update)])
    return time.perf_counter() - start


def _runs(panda_ids: Sequence[int]) -> Iterator[tuple[int, int]]:
    """(first, count) of each run of consecutive PandaIDs, at most 1000 long."""
    ordered = sorted(panda_ids)
    start = 0
    for n in range(1, len(ordered) + 1):
        if n == len(ordered) or ordered[n] != ordered[n - 1] + 1 or n - start == 1000:
            yield ordered[start], n - start
            start = n


def _make_running(conn: SAConnection, *, first: int, count: int) -> None:
    make_jobs(conn, Layer.PANDA, "running", count, first_panda_id=first)


class PropagatorRun:
    """N due jobs in an act database and a propagator context pointed at the server."""

    def __init__(
        self,
        db: Database,
        settings: PandaServerSettings,
        panda_ids: Sequence[int],
        batch: int,
        in_flight: int,
    ) -> None:
        self.db = db
        self.panda_ids = list(panda_ids)
        for first, count in _runs(self.panda_ids):  # make_jobs numbers PandaIDs in a row
            db.run(partial(_make_running, first=first, count=count))
        self.ctx: AtlasContext = Context(
            name="propagator",
            instance="bench:1:000000",
            settings=Settings().model_copy(update={"panda": settings}),
            daemon=DaemonSettings(),
            options=PropagatorOptions(batch_size=batch, in_flight=in_flight, outage_backoff=0.0),
            db=db,
            log=logging.getLogger("act.propagator"),
            stop=threading.Event(),
        )

    def reset(self) -> None:
        due = utcnow()
        self.db.run(
            lambda c: c.execute(
                sa.update(panda_jobs).values(
                    next_report_at=due, panda_status=None, report_failures=0
                )
            )
        )

    def run(self) -> float:
        self.reset()
        start = time.perf_counter()
        while run_once(self.ctx):
            pass
        seconds = time.perf_counter() - start
        with self.db.read() as conn:
            told, failures = conn.execute(
                sa.select(
                    sa.func.sum(sa.case((panda_jobs.c.panda_status == "running", 1), else_=0)),
                    sa.func.sum(panda_jobs.c.report_failures),
                )
            ).one()
        if told != len(self.panda_ids) or failures:
            raise BenchmarkError(f"{told} of {len(self.panda_ids)} reported, {failures} failures")
        return seconds


# -- the real server -----------------------------------------------------------------------------


@contextmanager
def real_server(jobs: int) -> Iterator[tuple[PandaServerSettings, str, str]]:
    """The REAL PanDA server of tests/harness/panda-server: settings, a queue seeded with
    ``jobs`` activated jobs, and the server's version. The queue's jobs are deleted after."""
    from psycopg import sql  # the test extras, as tests.support.panda_real

    from tests.support.panda_real import read_env

    server = read_env()
    version = subprocess.run(
        [
            str(server.python),
            "-c",
            "import importlib.metadata as m; print(m.version('panda-server'))",
        ],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    queue = server.add_queue()
    start = time.perf_counter()
    panda_ids = server.add_jobs(queue, jobs)
    log.info("seeded %d jobs into %s in %.1f s", len(panda_ids), queue, time.perf_counter() - start)
    settings = PandaServerSettings.model_validate(
        {
            "url": server.url,
            "ca": str(server.ca),
            "retries": 0,
            "roles": {"production": {"proxy": str(server.pilot_proxy)}},
        }
    )
    try:
        yield settings, queue, f"panda-server {version or '?'} at {server.url}"
    finally:
        with server.connect() as conn:
            for table in ("filestable4", "jobparamstable", *JOB_TABLES):
                statement = sql.SQL("DELETE FROM {} WHERE pandaid = ANY(%s)")
                conn.execute(statement.format(sql.Identifier(table)), (panda_ids,))
            conn.execute("DELETE FROM schedconfig_json WHERE panda_queue = %s", (queue,))


JOB_TABLES = ("jobsactive4", "jobsdefined4", "jobswaiting4", "jobsarchived4")


# -- main -----------------------------------------------------------------------------------------


def measure(
    server: str, name: str, jobs: int, calls: int, *, repeat: int, fn: Callable[[], float]
) -> Figure:
    seconds = []
    for n in range(repeat):
        seconds.append(fn())
        log.info("%s: %s: repetition %d: %.1f jobs/s", server, name, n + 1, jobs / seconds[-1])
    return Figure(server, name, jobs, calls, seconds)


def render(figures: Sequence[Figure], tablefmt: str = "simple") -> str:
    rows = []
    for f in figures:
        base = next(
            (b for b in figures if b.server == f.server and b.pattern.startswith("per-job")), None
        )
        rates = f.rates
        ratio = statistics.median(rates) / statistics.median(base.rates) if base else None
        rows.append(
            [
                f.server,
                f.pattern,
                f.jobs,
                f.calls,
                f"{statistics.median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f})",
                f"{ratio:.2f}x" if ratio else "",
            ]
        )
    return tabulate(
        rows,
        headers=[
            "server",
            "pattern",
            "jobs/rep",
            "calls/rep",
            "jobs/s median (min-max)",
            "vs per-job",
        ],
        tablefmt=tablefmt,
    )


def machine() -> str:
    """CPUs, memory, load: the figures depend on them (and on what else runs)."""
    model = "?"
    memory = "?"
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as meminfo:
        for line in meminfo:
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs ({model}), {memory}, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run_patterns(
    args: argparse.Namespace,
    server: str,
    settings: PandaServerSettings,
    queue: str,
    workdir: Path,
) -> list[Figure]:
    """Every pattern against one server (its jobs acquired from ``queue`` first)."""
    panda_ids = acquire(settings, queue, args.jobs)
    single = panda_ids[: min(args.single_jobs, len(panda_ids))]
    calls = -(-len(panda_ids) // args.batch)
    figures = []
    with fresh_database(args.backend, workdir / server.replace(" ", "-")) as url:
        db = Database(url)
        try:
            for in_flight in args.in_flight:
                run = PropagatorRun(db, settings, panda_ids, args.batch, in_flight)
                figures.append(
                    measure(
                        server,
                        f"propagator ({args.backend}), {args.batch} x {in_flight} in flight",
                        len(panda_ids),
                        calls,
                        repeat=args.repeat,
                        fn=run.run,
                    )
                )
                db.run(lambda c: c.execute(sa.delete(panda_jobs)))
        finally:
            db.dispose()
    figures.append(
        measure(
            server,
            "per-job update_job, new connection each (aCT)",
            len(single),
            len(single),
            repeat=args.repeat,
            fn=lambda: per_job_new_connection(settings, single),
        )
    )
    for in_flight in args.in_flight:
        figures.append(
            measure(
                server,
                f"bare bulk client, {args.batch} x {in_flight} in flight",
                len(panda_ids),
                calls,
                repeat=args.repeat,
                fn=partial(bare_bulk, settings, panda_ids, args.batch, in_flight),
            )
        )
    return figures


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.heartbeats", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--real", action="store_true", help="the real server of tests/harness/panda-server too"
    )
    parser.add_argument("--jobs", type=int, help="default: 3000, with --real 1000")
    parser.add_argument("--single-jobs", type=int, help="per-job pattern (default 1000/300)")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument(
        "--in-flight",
        type=lambda text: [int(x) for x in text.split(",")],
        help="bulk calls at once, a comma list (default: 4, with --real 1,4)",
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", default="sqlite", choices=["sqlite", "mariadb", "postgresql"])
    parser.add_argument("--api", default="new", choices=["new", "legacy"])
    parser.add_argument("--url", default=os.environ.get("PANDA_URL_SSL"), help="another server")
    parser.add_argument("--ca", default=os.environ.get("PANDA_CA_CERT"))
    parser.add_argument("--proxy", default=os.environ.get("PANDA_CLIENT_PROXY"))
    parser.add_argument("--queue", default=os.environ.get("PANDA_QUEUE", "TEST_QUEUE"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (1000 if args.real else 3000)
    args.single_jobs = args.single_jobs or (300 if args.real else 1000)
    args.in_flight = args.in_flight or ([1, 4] if args.real else [4])
    return args


def collect(args: argparse.Namespace) -> tuple[list[str], list[Figure]]:
    """Every pattern against the servers ``args`` name: (the servers, the figures)."""
    figures: list[Figure] = []
    servers: list[str] = []
    with tempfile.TemporaryDirectory(prefix="act-bench-") as tmp:
        workdir = Path(tmp)
        if args.real:
            with real_server(max(args.jobs, args.single_jobs)) as (settings, queue, name):
                servers.append(name)
                figures += run_patterns(args, "real PanDA", settings, queue, workdir)
        if args.url and not args.real:
            servers.append(f"{args.url} (api {args.api})")
            figures += run_patterns(args, "external", external(args), args.queue, workdir)
        else:
            with test_double(max(args.jobs, args.single_jobs), args.queue, workdir) as settings:
                servers.append("PanDA TEST DOUBLE (forked process, HTTPS, client proxy)")
                figures += run_patterns(
                    args,
                    "test double",
                    settings.model_copy(update={"api": args.api}),
                    args.queue,
                    workdir,
                )
    return servers, figures


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("act.propagator").setLevel(logging.WARNING)
    logging.getLogger("act.atlas").setLevel(logging.WARNING)
    load_before = load()
    servers, figures = collect(args)
    print(f"\nmachine: {machine()}")
    print(f"load average (1/5/15 min): {load_before} before, {load()} after")
    print(f"servers: {'; '.join(servers)}; api {args.api}; DB {args.backend}")
    print(render(figures))
    if args.json:
        args.json.write_text(json.dumps([asdict(f) for f in figures], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
