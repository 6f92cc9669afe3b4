"""The running bridge: each daemon's memory with 100,000 active jobs, and end-to-end jobs/min
with the CPU time actd and its daemons spend per job.

This is a benchmark, not a test: it measures and prints. Both parts run the real ``actd`` with
every daemon of the demo (tests/support/pipeline.py: the PanDA TEST DOUBLE in this process, a
local CE, file:// storage, a SQLite job store):

* ``rss``: the store is filled first (benchmarks/daemon_queries.fill, in the database) with
  ``--active`` PanDA jobs that are all live (running, queued, transferring) and as many CE jobs
  running or submitted on the local CE (which does not know them: the poller finds them lost,
  and the daemons work through them); then VmRSS and VmHWM of each
  daemon process are read from /proc. The memory is read once every daemon
  completed 3 cycles on that store (its liveness row counts them; a daemon whose interval is
  longer than the run: 1), and at least ``--seconds`` after the start; ``BenchmarkError`` if
  that takes 10 minutes more, or a daemon has no process.
* ``e2e``: ``--jobs`` jobs seeded in the test double run through the whole pipeline (fetched from
  PanDA, translated, submitted to the local CE, polled, fetched, validated, reported). Jobs/min is
  from actd's start to the last final report; the bridge's CPU is utime+stime of actd and of
  every daemon process ever seen (sampled from /proc every 0.2 s until actd is stopped; the pilot
  payloads and the local CE's runners are not counted). It stops with ``BenchmarkError`` unless
  every job got exactly one final report and none was submitted twice.

Run: ``PYTHONPATH=. python -m benchmarks.bridge [--active N (100000)] [--seconds S (60)]
[--jobs J (500)]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from act.common import liveness
from benchmarks._common import BenchmarkError
from benchmarks.daemon_queries import fill
from tests.support.pipeline import QUEUE, Pipeline

log = logging.getLogger("act.bench")

TICK = 0.2
CE = "demo-local"
#: Cycles each daemon completes before its memory is read.
CYCLES = 3
#: Seconds past ``--seconds`` the daemons get to complete them.
RSS_GRACE = 600.0


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(x) for x in task.read_text().split()]
        except OSError:
            continue
    return found


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _cpu_seconds(pid: int) -> float | None:
    """utime + stime of ``pid`` itself (not of its children), in seconds."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def daemons(actd: int) -> dict[int, str]:
    """The daemon processes of actd: pid -> daemon name."""
    found = {}
    for pid in _children(actd):
        argv = _cmdline(pid)
        if "act.service.daemon" in argv:
            found[pid] = argv[argv.index("act.service.daemon") + 1]
    return found


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of ``pid`` in KiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


@dataclass
class CpuSampler:
    """CPU seconds of actd and of every daemon process ever seen, sampled every TICK."""

    actd: int
    last: dict[int, tuple[str, float]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        named = {self.actd: "actd", **daemons(self.actd)}
        for pid, name in named.items():
            cpu = _cpu_seconds(pid)
            if cpu is not None:
                self.last[pid] = (name, cpu)

    def loop(self) -> None:
        while not self.stop.wait(TICK):
            self.sample()

    @property
    def total(self) -> float:
        return sum(cpu for _, cpu in self.last.values())

    def by_name(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for name, cpu in self.last.values():
            out[name] = out.get(name, 0.0) + cpu
        return out


@contextmanager
def pipeline(directory: Path, sleep: str) -> Iterator[Pipeline]:
    pipe = Pipeline(directory, sleep=sleep)
    try:
        yield pipe
    finally:
        pipe.stop()


# --- RSS with N active jobs -----------------------------------------------------------------------


@dataclass
class Rss:
    active: int
    seconds: float
    #: daemon -> (VmRSS KiB, VmHWM KiB, cycles)
    daemons: dict[str, tuple[int, int, int]]


def rss(active: int, seconds: float) -> Rss:
    with (
        tempfile.TemporaryDirectory(prefix="act-bench-rss-") as tmp,
        pipeline(Path(tmp), "0.1-0.3") as pipe,
    ):
        started = time.perf_counter()
        fill(
            pipe.db,
            active,
            panda_mix=[("running", 800), ("queued", 100), ("transferring", 100)],
            ce_mix=[("running", 800), ("submitted", 200)],
            queues=[QUEUE],
            ces=[CE],
        )
        log.warning("rss: filled %d active jobs in %.1f s", active, time.perf_counter() - started)
        pipe.start()
        actd = pipe.proc.pid
        # Every daemon cycles a few times on that store (one whose interval is longer than the
        # run: once), and the run lasts at least ``seconds``.
        want = {
            name: 1 if daemon.interval >= seconds else CYCLES
            for name, daemon in pipe.settings.daemons.items()
            if daemon.enabled
        }
        start = time.monotonic()
        while True:
            if not pipe.actd_alive():
                raise BenchmarkError(f"actd exited: {pipe.logs_hint()}")
            with pipe.db.read() as conn:
                cycles = {
                    str(row["role"]): int(row["cycles"])
                    for row in liveness.process_rows(conn, include_stopped=False)
                }
            behind = sorted(name for name, n in want.items() if cycles.get(name, 0) < n)
            elapsed = time.monotonic() - start
            if elapsed >= seconds and not behind:
                break
            if elapsed > seconds + RSS_GRACE:
                raise BenchmarkError(
                    f"daemons short of {CYCLES} cycles after {elapsed:.0f} s: {behind}"
                )
            time.sleep(1.0)
        found = {}
        for pid, name in daemons(actd).items():
            try:
                found[name] = memory(pid)
            except (OSError, KeyError):
                continue
        missing = sorted(set(want) - set(found))
        if missing:
            raise BenchmarkError(f"no running process for daemons {missing}")
        return Rss(
            active,
            time.monotonic() - start,
            {name: (*found[name], cycles[name]) for name in sorted(found)},
        )


# --- end to end ---------------------------------------------------------------------------------


@dataclass
class EndToEnd:
    jobs: int
    seconds: float
    cpu: dict[str, float]
    counts: str

    @property
    def per_minute(self) -> float:
        return self.jobs / self.seconds * 60

    @property
    def cpu_per_job_ms(self) -> float:
        return sum(self.cpu.values()) / self.jobs * 1000


def end_to_end(jobs: int, timeout: float) -> EndToEnd:
    with (
        tempfile.TemporaryDirectory(prefix="act-bench-e2e-") as tmp,
        pipeline(Path(tmp), "0.1-0.5") as pipe,
    ):
        pipe.seed(jobs)
        start = time.perf_counter()
        pipe.start()
        sampler = CpuSampler(pipe.proc.pid)
        thread = threading.Thread(target=sampler.loop, daemon=True)
        thread.start()
        try:
            pipe.wait_all_final(timeout)
            seconds = time.perf_counter() - start
        finally:
            sampler.stop.set()
            thread.join()
        sampler.sample()  # the last word, while actd still runs
        counts = pipe.counts()
        if counts.duplicates or counts.missing_reports or counts.extra_ce_jobs:
            raise BenchmarkError(f"the pipeline lost or doubled work: {counts.line()}")
        return EndToEnd(jobs, seconds, sampler.by_name(), counts.line())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--active", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--jobs", type=int, default=500)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    found = rss(args.active, args.seconds)
    for name, (now, peak, cycles) in found.daemons.items():
        print(
            f"{name:16s} VmRSS {now / 1024:7.1f} MiB  VmHWM {peak / 1024:7.1f} MiB  {cycles} cycles"
        )
    e2e = end_to_end(args.jobs, timeout=1800)
    print(
        f"{e2e.jobs} jobs in {e2e.seconds:.1f} s: {e2e.per_minute:.0f} jobs/min, "
        f"bridge CPU {e2e.cpu_per_job_ms:.1f} ms/job; {e2e.counts}"
    )
    print(", ".join(f"{n} {s:.1f} s" for n, s in sorted(e2e.cpu.items())))


if __name__ == "__main__":
    main()
