"""Submit and status throughput of the ARC back end against the real test CE (jobs/s).

This is a benchmark, not a test: it measures and prints. It goes through act's
:class:`~act.arc.backend.ArcBackend` (so the figures include preparing the xRSL, the delegation
lookup and the keep-alive session) against the CE of ``tests/harness/arc-ce`` (start it first).

Measurements, each repeated ``--repeat`` times (median and spread printed):

1. bulk submit: ``--jobs`` trivial jobs in calls of ``--batch`` descriptions;
2. single submit: ``--jobs`` jobs, one call each;
3. bulk status: ``ArcBackend.status`` (REST ``info``) of every job submitted, ``--batch`` per
   call; and the bare REST ``status`` action the same way;
4. single status: the same jobs, one call each (``info``, then ``status``).

Correctness is checked, not assumed: every submission must return a CE job id, and every status
must name a known state. All jobs are cleaned at the end (also after an error).

Run: ``PYTHONPATH=. python -m benchmarks.arc_throughput [--jobs N] [--batch B] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable

from act.arc.backend import ArcBackend
from act.engine.backend import CE, TERMINAL, SubmitRequest
from act.engine.settings import CESettings, EngineSettings
from act.service.settings import Settings
from benchmarks._common import print_rates
from tests.support.arc_real import environment

log = logging.getLogger("act.bench.arc")


class BenchmarkError(RuntimeError):
    pass


def timed(fn: Callable[[], int]) -> tuple[float, int]:
    start = time.perf_counter()
    count = fn()
    return time.perf_counter() - start, count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    env = environment()
    ce = CE(
        "bench",
        CESettings(
            backend="arc",
            url=env["ACT_ARC_URL"],
            queue="fork",
            credential=env["ACT_ARC_PROXY"],
            ca=env["ACT_ARC_CA_DIR"],
            timeout=120.0,
            options={"submit_batch": args.batch, "status_batch": args.batch},
        ),
    )
    root = tempfile.mkdtemp(prefix="act-arc-bench-")
    settings = Settings(root=root, engine=EngineSettings(ces={ce.name: ce.settings}))
    arc = ArcBackend(settings=settings, db=None, log=log)
    client = arc.client(ce)
    submitted: list[str] = []
    figures: dict[str, list[float]] = {}

    def requests(n: int) -> list[SubmitRequest]:
        return [
            SubmitRequest(i, secrets.token_hex(8), '&(executable="/bin/true")') for i in range(n)
        ]

    def submit(batch: int) -> int:
        jobs = requests(args.jobs)
        for start in range(0, len(jobs), batch):
            for result in arc.submit(ce, jobs[start : start + batch]):
                if result.ce_job_id is None:
                    raise BenchmarkError(f"submission failed: {result.error}")
                submitted.append(result.ce_job_id)
        return len(jobs)

    def status_backend(ids: list[str], batch: int) -> int:
        for start in range(0, len(ids), batch):
            found = arc.status(ce, ids[start : start + batch])
            if any(found.get(i) is None for i in ids[start : start + batch]):
                raise BenchmarkError("a job just submitted is unknown to the CE")
        return len(ids)

    def status_rest(ids: list[str], batch: int) -> int:
        for start in range(0, len(ids), batch):
            found = client.status(ids[start : start + batch])
            if any(not r.ok or not r.state for r in found.values()) or len(found) != len(
                ids[start : start + batch]
            ):
                raise BenchmarkError("a bare status reply lacks a job")
        return len(ids)

    try:
        arc.delegation(ce)  # created once, outside the timings
        for _ in range(args.repeat):
            for name, batch in (("submit bulk", args.batch), ("submit single", 1)):
                seconds, count = timed(functools.partial(submit, batch))
                figures.setdefault(name, []).append(count / seconds)
        ids = submitted[: args.jobs]
        for _ in range(args.repeat):
            for name, fn, batch in (
                ("status bulk (info)", status_backend, args.batch),
                ("status single (info)", status_backend, 1),
                ("status bulk (status)", status_rest, args.batch),
                ("status single (status)", status_rest, 1),
            ):
                seconds, count = timed(functools.partial(fn, ids, batch))
                figures.setdefault(name, []).append(count / seconds)
    finally:
        cleanup(arc, ce, submitted)
        arc.close()
    print(
        f"ARC CE {ce.settings.url}, {args.jobs} jobs per measurement, batch {args.batch}, "
        f"{args.repeat} repetitions, {os.cpu_count()} CPUs"
    )
    print_rates(figures)
    return 0


def cleanup(arc: ArcBackend, ce: CE, ids: list[str], timeout: float = 300.0) -> None:
    """Clean every job once it ended (A-REX cleans only ended jobs); kill what does not end."""
    deadline = time.monotonic() + timeout
    left = list(ids)
    while left and time.monotonic() < deadline:
        states = arc.status(ce, left)
        ended = [i for i, s in states.items() if s is None or s.state in TERMINAL]
        for start in range(0, len(ended), 100):
            arc.clean(ce, ended[start : start + 100])
        left = [i for i in left if i not in set(ended)]
        if left:
            time.sleep(2)
    if left:
        log.warning("%d jobs did not end in %ss: killing them", len(left), timeout)
        arc.kill(ce, left)


if __name__ == "__main__":
    sys.exit(main())
