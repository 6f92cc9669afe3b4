"""Log lines/s to a file: WatchedFileHandler (a stat() per line) vs act's ReopeningFileHandler.

This is a benchmark, not a test: it measures and prints. Each handler writes ``--lines`` lines
(act's format, through a logger, as a daemon does) to a fresh file in a temporary directory,
``--repeat`` times; the table shows the median lines/s (min-max). After each repetition the file
must hold exactly ``--lines`` lines, else the benchmark stops (the figure would mean nothing).

Run: ``PYTHONPATH=. python -m benchmarks.log_handler [--lines N (200000)] [--repeat R (5)]``.
"""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from act.common.logs import ReopeningFileHandler, formatter
from benchmarks._common import BenchmarkError

HANDLERS: dict[str, Callable[[Path], logging.Handler]] = {
    "WatchedFileHandler": lambda path: logging.handlers.WatchedFileHandler(path, encoding="utf-8"),
    "ReopeningFileHandler": ReopeningFileHandler,
}


def one_run(make: Callable[[Path], logging.Handler], lines: int, directory: Path) -> float:
    path = directory / "bench.log"
    path.unlink(missing_ok=True)
    handler = make(path)
    handler.setFormatter(formatter())
    log = logging.getLogger("act.bench")
    log.propagate, log.handlers = False, [handler]
    log.setLevel(logging.INFO)
    began = time.perf_counter()
    for number in range(lines):
        log.info("panda_id=%d ce=ce1.example.org: line", number)
    handler.flush()
    elapsed = time.perf_counter() - began
    handler.close()
    log.handlers = []
    with path.open(encoding="utf-8") as handle:
        written = sum(1 for _ in handle)
    if written != lines:
        raise BenchmarkError(f"{written} lines in the file, {lines} written")
    return lines / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"{'handler':<22} lines/s, median (min-max) of {args.repeat}, {args.lines} lines each")
    with tempfile.TemporaryDirectory() as tmp:
        for name, make in HANDLERS.items():
            rates = [one_run(make, args.lines, Path(tmp)) for _ in range(args.repeat)]
            print(
                f"{name:<22} {statistics.median(rates):>9,.0f} "
                f"({min(rates):,.0f}-{max(rates):,.0f})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
