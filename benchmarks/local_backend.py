"""Cost of the local back end's calls: submit (one runner start per job), status, find, clean.

A benchmark, not a test: it measures and prints. Each repetition submits ``--jobs`` jobs running
``true`` in one batch to a fresh work directory with ``--slots`` slots, waits for all of them to
end, then times one status call over all of them, one find over all tokens and one clean.

Run: ``PYTHONPATH=. python -m benchmarks.local_backend [--jobs N] [--slots S] [--repeat R]``.
The machine's load average is printed with the figures: a submission is dominated by starting
one Python process (the runner), so it scales with the CPU available.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time

from act.engine.backend import CE, TERMINAL, SubmitRequest
from act.engine.settings import CESettings
from act.local.backend import LocalBackend
from act.service.settings import Settings


def once(jobs: int, slots: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as root:
        backend = LocalBackend(
            settings=Settings(root=root), db=None, log=logging.getLogger("bench")
        )
        ce = CE("bench", CESettings(backend="local", options={"slots": slots}))
        description = json.dumps({"executable": "true"})
        requests = [
            SubmitRequest(job_id=i, token=f"bench-{i}", description=description)
            for i in range(jobs)
        ]
        start = time.monotonic()
        ids = [r.ce_job_id or "" for r in backend.submit(ce, requests)]
        submitted = time.monotonic()
        while not all(
            s is not None and s.state in TERMINAL for s in backend.status(ce, ids).values()
        ):
            time.sleep(0.02)
        ended = time.monotonic()
        backend.status(ce, ids)
        status = time.monotonic()
        backend.find(ce, [r.token for r in requests])
        find = time.monotonic()
        backend.clean(ce, ids)
        clean = time.monotonic()
    return {
        "submit_ms_per_job": (submitted - start) / jobs * 1000,
        "all_ended_s": ended - start,
        "status_ms_per_job": (status - ended) / jobs * 1000,
        "find_ms_per_token": (find - status) / jobs * 1000,
        "clean_ms_per_job": (clean - find) / jobs * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--slots", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [once(args.jobs, args.slots) for _ in range(args.repeat)]
    print(f"{args.jobs} jobs, {args.slots} slots, load average {os.getloadavg()[0]:.1f}")
    for key in runs[0]:
        values = [run[key] for run in runs]
        print(f"  {key:20} median {statistics.median(values):8.2f}  (min {min(values):.2f})")


if __name__ == "__main__":
    main()
