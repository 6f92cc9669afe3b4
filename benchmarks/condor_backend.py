"""How fast the HTCondor back end prepares, submits and reads back jobs, ON THE FAKE SCHEDD.

A benchmark, not a test: it measures and prints. The schedd is FakeSchedd (in memory; no HTCondor
daemons can be installed here), so the figures are act's own work plus htcondor2's parsing
(``Submit`` of every description, item data expanded per proc by the fake) and classad2's
constraint evaluation, never a schedd's: a real schedd's transaction and network time come on top.
Per repetition: ``--jobs`` translator descriptions (condor flavour) submitted in batches of
``--batch`` (one ``Schedd.submit`` per batch and set of environment names), then one ``status``
and one ``find`` over all of them. It stops with an error if a job is missing, submitted twice or
not found.

Run: ``PYTHONPATH=. python -m benchmarks.condor_backend [--jobs N] [--batch B] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path

from act.condor import schedd as schedd_access
from act.condor.backend import CondorBackend
from act.condor.fake_schedd import FakeSchedd
from act.condor.options import CondorOptions
from act.condor.schedd import ScheddLike
from act.engine.backend import CE, SubmitRequest
from act.engine.settings import CESettings
from act.service.settings import Settings
from benchmarks._common import BenchmarkError, print_rates
from tests.support.condor import descriptions


def _once(jobs: int, batch: int, root: Path, figures: dict[str, list[float]]) -> None:
    fake = FakeSchedd()

    def opener(options: CondorOptions) -> ScheddLike:
        return fake

    schedd_access.open_schedd = opener
    options = {"submit_batch": batch, "status_batch": 1000}
    ce = CE("bench", CESettings(backend="condor", url="ce.example.org", options=options))
    backend = CondorBackend(
        settings=Settings.model_validate({"root": str(root)}),
        db=None,
        log=logging.getLogger("bench"),
    )
    texts = [text for _, text in descriptions("condor") if "HARVESTER" not in text]
    requests = [SubmitRequest(n, f"b{root.name}x{n}", texts[n % len(texts)]) for n in range(jobs)]
    start = time.perf_counter()
    ids: list[str] = []
    for first in range(0, jobs, batch):
        results = backend.submit(ce, requests[first : first + batch])
        ids.extend(r.ce_job_id or "" for r in results)
    figures["submit"].append(jobs / (time.perf_counter() - start))
    tokens = Counter(str(job.ad["ActToken"]) for job in fake.jobs.values())
    if len(ids) != jobs or "" in ids or len(tokens) != jobs or max(tokens.values()) != 1:
        raise BenchmarkError("a job was not submitted exactly once")
    start = time.perf_counter()
    states = backend.status(ce, ids)
    figures["status"].append(jobs / (time.perf_counter() - start))
    if sum(1 for s in states.values() if s is not None) != jobs:
        raise BenchmarkError("status did not find every job")
    start = time.perf_counter()
    found = backend.find(ce, [r.token for r in requests])
    figures["find"].append(jobs / (time.perf_counter() - start))
    if len(found) != jobs:
        raise BenchmarkError("find did not find every job")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    figures: dict[str, list[float]] = {"submit": [], "status": [], "find": []}
    for n in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix=f"condor-bench{n}-") as root:
            _once(args.jobs, args.batch, Path(root), figures)
    print(f"HTCondor back end on FakeSchedd (NOT a schedd): {args.jobs} jobs, batch {args.batch}")
    print_rates(figures)


if __name__ == "__main__":
    main()
