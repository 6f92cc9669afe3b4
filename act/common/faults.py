"""A test hook: make a process die at a named point, as a crash would.

Set ``ACT_FAULT`` to a point's name (e.g. ``submitter:after-submit``, or several separated by
commas) and the process calls ``os._exit(137)`` when it reaches that point: no clean-up, no commit,
no released claims, exactly like a SIGKILL. Tests use it to prove that crash-safe code is. Without
the variable, :func:`maybe_crash` does nothing; production never sets it.
"""

from __future__ import annotations

import os
import sys

ENV = "ACT_FAULT"
EXIT_CODE = 137  # what a shell reports for a process killed by SIGKILL


def maybe_crash(point: str) -> None:
    """Exit at once with code 137 if ``ACT_FAULT`` names ``point``; otherwise do nothing."""
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    if point in (name.strip() for name in wanted.split(",")):
        print(f"act: {ENV}={wanted}: crashing at {point}", file=sys.stderr, flush=True)
        os._exit(EXIT_CODE)
