"""What the benchmarks share: a scratch database and the usual command-line options."""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from act.common.db import Database
from tests.support.dbs import fresh_database


class BenchmarkError(RuntimeError):
    """A benchmark's own check failed: its figure would not mean what it says."""


@contextmanager
def scratch_database(backend: str) -> Iterator[tuple[Database, Path]]:
    """A fresh, migrated database on ``backend`` and a temporary root directory, both removed
    afterwards."""
    with tempfile.TemporaryDirectory() as tmp, fresh_database(backend, Path(tmp)) as url:
        db = Database(url)
        try:
            yield db, Path(tmp)
        finally:
            db.dispose()


def arguments(doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    """``--backends`` (sqlite,mariadb,postgresql), ``--rows`` (5000), ``--batch`` (500)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--backends", default="sqlite,mariadb,postgresql")
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=500)
    return parser.parse_args(argv)


def print_rates(figures: dict[str, list[float]], width: int = 24) -> None:
    """One line per measurement: the median rate of its repetitions and their range."""
    for name, values in figures.items():
        spread = f"{min(values):8.1f} .. {max(values):8.1f}"
        print(f"  {name:{width}s} {statistics.median(values):8.1f} jobs/s   ({spread})")
