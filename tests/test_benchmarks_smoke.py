"""The benchmark command still runs: ``python -m benchmarks --quick`` on two sections, in a
subprocess as a user runs it, prints a report whose every figure is a positive number.

Not a speed test: the sizes are tiny and nothing is compared with a threshold."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _rows(report: str, section: str) -> dict[str, list[float]]:
    """The data rows of the first table after the ``## <section>`` heading: first cell -> the
    numbers in the other cells."""
    part = report.split(f"## {section}", 1)[1]
    rows: dict[str, list[float]] = {}
    for line in part.splitlines():
        if rows and not line.startswith("|"):
            break
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        values = [float(n.replace(",", "")) for cell in cells[1:] for n in NUMBER.findall(cell)]
        rows[cells[0]] = values
    rows.pop(next(iter(rows)))  # the header
    return rows


@pytest.mark.slow
def test_quick_benchmarks_print_positive_figures(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--only", "db,queries", "--markdown", out],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = done.stdout
    assert out.read_text(encoding="utf-8") == report
    assert "command: `python -m benchmarks --quick --only db,queries --markdown" in report
    for detail in ("cpu:", "kernel:", "sqlite: SQLite", "mariadb: MariaDB", "postgresql: Postg"):
        assert detail in report
    assert "load average (1/5/15 min) before:" in report and "after:" in report

    db = _rows(report, "2. Job-table")
    assert [name[:2] for name in db] == ["0.", "1.", "2.", "3.", "4."]
    for name, values in db.items():
        # three backends, each "median (min-max)"
        assert len(values) == 9 and all(v > 0 for v in values), (name, values)

    queries = _rows(report, "3. Daemon query times")
    assert {"translator claim", "propagator claim (due heartbeats)", "metrics snapshot"} <= set(
        queries
    )
    for name, values in queries.items():
        # three backends, each "p50 / p99 (repetitions)"
        assert len(values) == 9 and all(v > 0 for v in values), (name, values)
