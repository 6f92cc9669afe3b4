"""events.processed: the pilot's event status dump, and a dump that cannot be read is said."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from act.atlas.events import processed
from act.atlas.translate.common import EVENT_STATUS_FILE

LOG = logging.getLogger("act.test.events")


def test_reads_the_ranges_of_the_job(tmp_path: Path) -> None:
    dump = {"7": [{"eventRangeID": 1, "eventStatus": "finished"}, {"no": "id"}]}
    (tmp_path / EVENT_STATUS_FILE).write_text(json.dumps(dump))
    assert processed(tmp_path, 7) == [{"eventRangeID": "1", "eventStatus": "finished"}]


def test_no_dump_is_no_ranges_and_no_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert processed(tmp_path, 7, log=LOG, ce="ce1") == []
    assert caplog.records == []


def test_a_dump_that_cannot_be_read_is_logged_with_the_job_and_ce(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / EVENT_STATUS_FILE).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert processed(tmp_path, 7, log=LOG, ce="ce1") == []
    (message,) = caplog.messages
    assert message.startswith("panda_id=7 ce=ce1: cannot read ") and EVENT_STATUS_FILE in message
