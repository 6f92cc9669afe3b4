"""Log format: UTC timestamps, pid, and the job and CE on every job line."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from act.common.logs import job_log, setup


def test_job_lines_carry_pandaid_and_ce_and_files_get_utc_lines(tmp_path: Path) -> None:
    path = tmp_path / "log" / "submitter.log"
    setup("INFO", path, stderr=False)
    log = logging.getLogger("act.submitter")
    job_log(log, pandaid=4242, ce="ce1.example.org").info("submitted as %s", "abc")
    job_log(log, pandaid=7).warning("no CE yet")
    log.debug("not at INFO")
    for handler in logging.getLogger("act").handlers:
        handler.flush()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO    act\.submitter\[\d+\]: "
    assert re.match(pattern + r"pandaid=4242 ce=ce1\.example\.org: submitted as abc$", lines[0])
    assert " WARNING act.submitter[" in lines[1]
    assert lines[1].split("]: ", 1)[1] == "pandaid=7: no CE yet"
    setup("INFO", None)  # back to stderr for the other tests
