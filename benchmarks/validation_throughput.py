"""How many output files StorageChecker checks per second, per kind of endpoint.

A benchmark, not a test: it measures and prints. It writes ``--files`` small files (1-4 kB,
random) into the data directory of the real XRootD server of tests/harness/xrootd-server
(started if it is not running) and checks all of them through
:class:`~act.atlas.storage.checker.StorageChecker` (size and adler32 each) over ``root://``,
``https://`` (XrdHttp, TLS) and ``file://``, with ``--per-endpoint`` checks in flight (one
endpoint per kind, so that is the concurrency). The first pass over fresh files makes the server
compute and cache each adler32 (an extended attribute); the following ``--repeat`` passes find
it cached, as a validator re-checking a deferred job would. Every pass must find every file OK,
or the benchmark stops with BenchmarkError.

Run: ``PYTHONPATH=. python -m benchmarks.validation_throughput [--files N] [--repeat R]
[--per-endpoint P[,P...]]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import time
import uuid

from act.atlas.storage.checker import StorageChecker
from act.atlas.storage.model import Expected, Verdict
from act.atlas.storage.settings import StorageSettings
from benchmarks._common import BenchmarkError
from tests.support.xrootd_real import XRootDServer, read_env

KINDS = ("root", "https", "file")


def write_files(server: XRootDServer, folder: str, count: int) -> list[tuple[str, int, str]]:
    files = []
    for index in range(count):
        path = f"{folder}/f{index:05d}.root"
        size, adler = server.write(path, os.urandom(1024 + (index * 37) % 3072))
        files.append((path, size, adler))
    return files


def one_pass(checker: StorageChecker, files: list[Expected]) -> float:
    """Seconds to check ``files``; BenchmarkError unless every one is OK."""
    started = time.perf_counter()
    results = checker.check(files)
    seconds = time.perf_counter() - started
    wrong = [result.detail for result in results if result.verdict is not Verdict.OK]
    if wrong or len(results) != len(files):
        raise BenchmarkError(f"{len(wrong)} of {len(files)} checks not OK, e.g. {wrong[:3]}")
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--per-endpoint", default="4,16")
    args = parser.parse_args(argv)
    server = read_env()
    folder = f"act-bench/{uuid.uuid4().hex}"
    paths = write_files(server, folder, args.files)
    log = logging.getLogger("benchmark.storage")
    print(f"{args.files} files of 1-4 kB; median of {args.repeat} warm passes (range), first pass")
    try:
        for per_endpoint in (int(value) for value in args.per_endpoint.split(",")):
            settings = StorageSettings(
                timeout=30, concurrency=per_endpoint, per_endpoint=per_endpoint, ca=str(server.ca)
            )
            checker = StorageChecker(settings, log)
            try:
                for kind in KINDS:
                    url = getattr(server, kind)
                    files = [Expected(p, url(p), size, adler) for p, size, adler in paths]
                    first = args.files / one_pass(checker, files)
                    rates = [args.files / one_pass(checker, files) for _ in range(args.repeat)]
                    print(
                        f"  {kind:6s} per_endpoint={per_endpoint:<3d} "
                        f"{statistics.median(rates):8.0f} files/s "
                        f"({min(rates):6.0f} .. {max(rates):6.0f}); first pass {first:6.0f} files/s"
                    )
            finally:
                checker.close()
    finally:
        shutil.rmtree(server.local(folder), ignore_errors=True)


if __name__ == "__main__":
    main()
