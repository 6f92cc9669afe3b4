"""Log format: UTC timestamps, pid, and the job and CE on every job line."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from act.common import logs
from act.common.logs import job_log, setup
from tests.support.procs import REPO


def test_job_lines_carry_panda_id_and_ce_and_files_get_utc_lines(tmp_path: Path) -> None:
    path = tmp_path / "log" / "submitter.log"
    setup("INFO", path, stderr=False)
    log = logging.getLogger("act.submitter")
    job_log(log, panda_id=4242, ce="ce1.example.org").info("submitted as %s", "abc")
    job_log(log, panda_id=7).warning("no CE yet")
    log.debug("not at INFO")
    for handler in logging.getLogger("act").handlers:
        handler.flush()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO    act\.submitter\[\d+\]: "
    assert re.match(pattern + r"panda_id=4242 ce=ce1\.example\.org: submitted as abc$", lines[0])
    assert " WARNING act.submitter[" in lines[1]
    assert lines[1].split("]: ", 1)[1] == "panda_id=7: no CE yet"
    setup("INFO", None)  # back to stderr for the other tests


def _lines(path: Path) -> list[str]:
    return [line.split("]: ", 1)[1] for line in path.read_text().splitlines()]


def test_the_file_is_reopened_only_when_asked_then_before_the_next_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "log" / "janitor.log"
    setup("INFO", path, stderr=False)
    log = logging.getLogger("act.janitor")
    try:
        log.info("one")
        rotated = path.with_name("janitor.log.1")
        path.rename(rotated)
        log.info("two")  # no stat per line: the handler keeps its open file
        assert not path.exists()
        assert logs.reopen() == 0  # nothing was requested
        logs.request_reopen()  # what the SIGUSR1 handler does
        log.info("three")  # the handler reopens before writing
        assert logs.reopen() == 0  # already done by the line
        assert _lines(rotated) == ["one", "two"] and _lines(path) == ["three"]

        path.rename(rotated.with_name("janitor.log.2"))
        logs.request_reopen()
        assert logs.reopen() == 1  # at once, without waiting for a line (the reopener thread)
        assert path.exists() and path.read_text() == ""
        log.info("four")
        assert _lines(path) == ["four"]

        # A path that cannot be opened: the lines keep going to the old file, and it is said.
        path.rename(rotated.with_name("janitor.log.3"))
        path.mkdir()
        logs.request_reopen()
        log.info("five")
        assert _lines(rotated.with_name("janitor.log.3")) == ["four", "five"]
        assert f"act: cannot reopen {path}" in capsys.readouterr().err
    finally:
        setup("INFO", None)


def test_a_reopen_moves_stdout_and_stderr_when_they_were_the_log_file(tmp_path: Path) -> None:
    """In a child process (fds 1 and 2 are the log file there, as actd starts daemons)."""
    path = tmp_path / "idle.log"
    script = f"""
import logging, os, sys
from pathlib import Path
from act.common import logs
logs.setup("INFO", Path({str(path)!r}), stderr=False)
os.rename({str(path)!r}, {str(path)!r} + ".1")
print("out before", flush=True)
logs.request_reopen()
logs.reopen()
print("out after", flush=True)
os.write(2, b"err after\\n")
logging.getLogger("act.idle").info("log after")
"""
    with path.open("ab") as output:
        done = subprocess.run(
            [sys.executable, "-c", script],
            stdout=output,
            stderr=output,
            cwd=REPO,
            check=False,
            timeout=60,
        )
    assert done.returncode == 0, Path(str(path) + ".1").read_text()
    assert Path(str(path) + ".1").read_text() == "out before\n"
    new = path.read_text().splitlines()
    assert new[:2] == ["out after", "err after"]
    assert len(new) == 3 and new[2].endswith("]: log after")
