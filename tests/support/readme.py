"""The README's generated section: the state tables from ``actctl states --markdown``.

``python -m tests.support.readme`` (``make docs``) rewrites it; tests/test_readme.py fails when the
README is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

from click.testing import CliRunner

from act.ctl.cli import cli

README = Path(__file__).resolve().parent.parent.parent / "README.md"
BEGIN, END = "<!-- states:begin -->", "<!-- states:end -->"


def states_markdown() -> str:
    result = CliRunner().invoke(cli, ["states", "--markdown"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def expected(text: str) -> str:
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{states_markdown()}\n{END}{tail}"


def main() -> int:
    text = README.read_text(encoding="utf-8")
    fresh = expected(text)
    if fresh != text:
        README.write_text(fresh, encoding="utf-8")
        print(f"updated {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
