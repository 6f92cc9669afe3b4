"""How fast jobs are translated, and how fast ARC's parser accepts the result.

A benchmark, not a test: it measures and prints. For each representative job of
tests/support/translate_cases.py it runs :func:`~act.atlas.translate.to_xrsl` (and
:func:`~act.atlas.translate.to_condor` for truepilot queues) ``--repeat`` times, then has ARC's
parser (Debian's /usr/bin/python3 with python3-nordugrid-arc) read ``--parse`` descriptions in
one subprocess, as the tests do.

Run: ``PYTHONPATH=. python -m benchmarks.translate_speed [--repeat N] [--parse N]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from act.atlas.translate import to_condor, to_xrsl
from tests.support.translate_cases import ARC_CE, CONDOR_CE, cases

ARC_PARSE = Path(__file__).resolve().parent.parent / "tests" / "support" / "arc_parse.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--parse", type=int, default=1000)
    args = parser.parse_args()
    jobs = [case.job for case in cases()]
    input_dir = Path("/var/lib/act/inputs/1")
    start = time.perf_counter()
    for _ in range(args.repeat):
        for job in jobs:
            to_xrsl(job, ARC_CE, input_dir=input_dir)
    xrsl_rate = args.repeat * len(jobs) / (time.perf_counter() - start)
    truepilot = [job for job in jobs if job.queue.truepilot]
    start = time.perf_counter()
    for _ in range(args.repeat):
        for job in truepilot:
            to_condor(job, CONDOR_CE, input_dir=input_dir, web_dir=None)
    condor_rate = args.repeat * len(truepilot) / (time.perf_counter() - start)
    texts = [to_xrsl(jobs[i % len(jobs)], ARC_CE, input_dir=input_dir).description
             for i in range(args.parse)]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/python3", str(ARC_PARSE)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        check=True,
    )
    parse_seconds = time.perf_counter() - start
    refused = sum("error" in fields for fields in json.loads(done.stdout))
    print(f"to_xrsl:   {xrsl_rate:8.0f} jobs/s")
    print(f"to_condor: {condor_rate:8.0f} jobs/s")
    print(f"ARC parse: {args.parse} descriptions in {parse_seconds:.2f}s (one subprocess), "
          f"{refused} refused")  # fmt: skip


if __name__ == "__main__":
    main()
