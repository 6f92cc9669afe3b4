"""Untrusted pilot files: safe_tar.extract against the standard library's data filter, and
read_heartbeat, on this machine.

``PYTHONPATH=. python -m benchmarks.untrusted_files [--files N (5000)] [--megabytes M (100)]
[--outputs K (1000)] [--repeat R (3)]``. Prints, per measurement, the median and range over R
repetitions. Checks (BenchmarkError): every file extracted with the right size, every output read.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from act.atlas.pilot_files import HEARTBEAT, read_heartbeat
from act.common.safe_tar import extract
from benchmarks._common import BenchmarkError


def _small_files(path: Path, count: int) -> int:
    with tarfile.open(path, "w:gz") as tar:
        for i in range(count):
            data = f"line {i} of a pilot log\n".encode() * 20
            info = tarfile.TarInfo(f"tarball_PandaJob_1/d{i // 500}/f{i}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return count


def _big_file(path: Path, megabytes: int) -> int:
    line = b"2026-11-22 14:54:01 | INFO | payload | event 123456 processed in 1.234 s\n"
    data = line * ((megabytes << 20) // len(line))
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("tarball_PandaJob_1/payload.stdout")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return len(data)


def _check_tree(root: Path, files: int, total: int | None) -> None:
    found = [p for p in root.rglob("*") if p.is_file()]
    if len(found) != files:
        raise BenchmarkError(f"{len(found)} files extracted instead of {files}")
    if total is not None and sum(p.stat().st_size for p in found) != total:
        raise BenchmarkError("extracted sizes differ from the archive's")


def _time(run: Callable[[], None], reset: Callable[[], None], repeat: int) -> list[float]:
    seconds = []
    for _ in range(repeat):
        reset()
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def _report(name: str, seconds: list[float], units: float, unit: str) -> None:
    rates = [units / s for s in seconds]
    print(
        f"  {name:38s} {statistics.median(rates):10.1f} {unit}   "
        f"({min(rates):.1f} .. {max(rates):.1f})"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--outputs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        out = root / "out"

        def reset() -> None:
            shutil.rmtree(out, ignore_errors=True)

        def ours(archive: Path, files: int, total: int | None) -> Callable[[], None]:
            def run() -> None:
                extract(archive, out, max_bytes=1 << 40, max_files=files)
                _check_tree(out, files, total)

            return run

        def stdlib(archive: Path, files: int, total: int | None) -> Callable[[], None]:
            def run() -> None:
                with tarfile.open(archive) as tar:
                    tar.extractall(out, filter="data")
                _check_tree(out, files, total)

            return run

        small = root / "small.tgz"
        _small_files(small, args.files)
        big = root / "big.tgz"
        size = _big_file(big, args.megabytes)
        print(f"safe_tar.extract vs tarfile data filter (median of {args.repeat}, range)")
        for name, make in (("safe_tar.extract", ours), ("extractall(filter='data')", stdlib)):
            seconds = _time(make(small, args.files, None), reset, args.repeat)
            _report(f"{name}, {args.files} small files", seconds, args.files, "files/s")
            seconds = _time(make(big, 1, size), reset, args.repeat)
            _report(f"{name}, one {args.megabytes} MiB file", seconds, size / (1 << 20), "MiB/s")

        report = {
            f"AOD.{i}._000001.pool.root.1": {
                "surl": f"davs://dav.example.org:443/atlas/AOD.{i}._000001.pool.root.1",
                "fsize": 123456789 + i,
                "adler32": f"ad:{i:08x}",
                "guid": "6A2E1B4C-8F3D-4E5A-9B7C-1D2E3F4A5B6C",
            }
            for i in range(args.outputs)
        }
        (root / HEARTBEAT).write_text(json.dumps({"state": "finished", "xml": json.dumps(report)}))
        calls = 200

        def read() -> None:
            for _ in range(calls):
                heartbeat = read_heartbeat(root)
                if heartbeat is None or len(heartbeat.outputs) != args.outputs:
                    raise BenchmarkError("outputs lost while reading heartbeat.json")

        seconds = _time(read, lambda: None, args.repeat)
        print("read_heartbeat")
        _report(f"heartbeat.json, {args.outputs} outputs", seconds, calls, "reads/s")


if __name__ == "__main__":
    main()
