"""act.atlas.final_report and act.atlas.pilot_times: the pilot's times in either form, JSON
fields never cut, nonsense refused with a note naming the field."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from act.atlas.final_report import (
    DROPPED_METADATA,
    MAX_META_DATA,
    MAX_TEXT,
    Corrections,
    build,
)
from act.atlas.pilot_times import BadTime, read_time

NOW = datetime(2026, 12, 7, 12, 0, 0, tzinfo=timezone.utc)
START = datetime(2026, 12, 7, 9, 0, 0, tzinfo=timezone.utc)
END = datetime(2026, 12, 7, 11, 0, 0, tzinfo=timezone.utc)
CE_TIMES = Corrections(started_at=START - timedelta(minutes=5), ended_at=END + timedelta(minutes=5))


@pytest.mark.parametrize(
    "value",
    [
        END.timestamp(),  # pilot3: time.time()
        int(END.timestamp()),
        str(END.timestamp()),
        f"{END.timestamp():.0f}",
        "2026-12-07 11:00:00",  # PanDA's form, UTC
        "2026-12-07T12:00:00+01:00",
        "2026-12-07T11:00:00",
        END,
    ],
)
def test_a_time_in_any_form_the_pilot_writes_is_read(value: Any) -> None:
    assert read_time(value, now=NOW) == END


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (-1.0, "negative"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (True, "not a time"),
        ([1], "not a time"),
        ("yesterday", "neither"),
        ("-5", "neither"),
        (0, "before 2000"),
        ("946684799", "before 2000"),
        (END.timestamp() * 1000, "future"),  # milliseconds given as seconds
        ((NOW + timedelta(days=2)).timestamp(), "future"),
        (1e300, "future"),
    ],
)
def test_a_nonsense_time_is_refused_with_the_reason(value: Any, words: str) -> None:
    with pytest.raises(BadTime, match=words):
        read_time(value, now=NOW)


@pytest.mark.parametrize("value", [None, "", "NULL", " "])
def test_no_time_given_is_none(value: Any) -> None:
    assert read_time(value, now=NOW) is None


def test_pilot3s_epoch_times_become_pandas_text_and_win_over_the_ces() -> None:
    pilot = {"startTime": START.timestamp() + 0.55, "endTime": str(END.timestamp())}
    built = build(pilot, CE_TIMES, now=NOW)
    assert built.fields["startTime"] == "2026-12-07 09:00:00"
    assert built.fields["endTime"] == "2026-12-07 11:00:00"
    assert built.notes == ()


@pytest.mark.parametrize(
    ("pilot", "field", "words"),
    [
        ({"startTime": -3.0, "endTime": END.timestamp()}, "startTime", "negative"),
        ({"startTime": START.timestamp(), "endTime": "NaN"}, "endTime", "neither"),
        ({"endTime": (NOW + timedelta(days=400)).timestamp()}, "endTime", "future"),
    ],
)
def test_a_nonsense_pilot_time_is_replaced_by_the_ces_with_a_note(
    pilot: dict[str, Any], field: str, words: str
) -> None:
    built = build(pilot, CE_TIMES, now=NOW)
    ce = {"startTime": "2026-12-07 08:55:00", "endTime": "2026-12-07 11:05:00"}
    assert built.fields[field] == ce[field]
    (note,) = built.notes
    assert note.startswith(f"{field} of the pilot not used") and words in note


def test_an_end_before_the_start_uses_neither_of_the_pilots_times() -> None:
    pilot = {"startTime": END.timestamp(), "endTime": START.timestamp()}
    built = build(pilot, CE_TIMES, now=NOW)
    assert (built.fields["startTime"], built.fields["endTime"]) == (
        "2026-12-07 08:55:00",
        "2026-12-07 11:05:00",
    )
    assert "is before the start" in built.notes[0]
    no_ce = build(pilot, Corrections(), now=NOW)
    assert "startTime" not in no_ce.fields and "endTime" not in no_ce.fields  # never raw


def test_no_raw_float_reaches_panda_where_no_time_is_usable() -> None:
    built = build({"startTime": 12.0, "endTime": "soon"}, Corrections(), now=NOW)
    assert "startTime" not in built.fields and "endTime" not in built.fields
    assert len(built.notes) == 2


def test_the_cpu_time_caps_the_efficiency_at_100_percent() -> None:
    pilot = {
        "startTime": (END - timedelta(minutes=10)).timestamp(),
        "endTime": END.timestamp(),
        "cpuConsumptionTime": 8 * 3600,
        "coreCount": 8,
    }
    built = build(pilot, Corrections(), now=NOW)
    assert built.fields["startTime"] == "2026-12-07 10:00:00"  # 1 h of 8 cores


def test_meta_data_of_any_size_under_the_limit_is_kept_whole() -> None:
    report = {"exitCode": 0, "files": {"output": [{"subFiles": [{"nentries": 10}]}]}}
    text = json.dumps({**report, "pad": "é" * 500_000})
    built = build({"metaData": text}, Corrections(), now=NOW)
    assert built.fields["metaData"] == text and len(text) > 30 * MAX_TEXT
    assert json.loads(built.fields["metaData"])["files"] == report["files"]
    as_object = build({"metaData": report}, Corrections(), now=NOW)  # a pilot's dict
    assert json.loads(as_object.fields["metaData"]) == report


def test_meta_data_over_the_limit_or_not_json_is_dropped_whole_and_panda_told() -> None:
    text = json.dumps({"exitCode": 0, "pad": "x" * 2000})
    pilot = {"metaData": text, "jobMetrics": "nEvents=10 coreCount=8"}
    built = build(pilot, Corrections(), max_meta_data=1000, now=NOW)
    assert "metaData" not in built.fields
    size = len(json.dumps(text))
    assert built.fields["jobMetrics"] == f"{DROPPED_METADATA}={size} nEvents=10 coreCount=8"
    assert f"{size} bytes as sent, over the limit of 1000" in built.notes[0]
    cut = build({"metaData": text[:500]}, Corrections(), now=NOW)  # what act used to send
    assert "metaData" not in cut.fields and "not JSON" in cut.notes[0]
    long_metrics = " ".join(f"key{i}=value{i}" for i in range(60))
    full = build({"metaData": "{", "jobMetrics": long_metrics}, Corrections(), now=NOW)
    words = full.fields["jobMetrics"].split()
    assert len(full.fields["jobMetrics"]) <= 500 and words[0].startswith(DROPPED_METADATA)
    assert words[1:] == long_metrics.split()[: len(words) - 1]  # whole words only


def test_the_job_report_act_fetched_is_the_meta_data_when_the_pilot_sent_none() -> None:
    text = '{"exitCode": 0}'
    assert build({}, Corrections(), job_report=text).fields["metaData"] == text
    assert build({"metaData": "{}"}, Corrections(), job_report=text).fields["metaData"] == "{}"


def test_the_default_meta_data_limit_leaves_room_in_a_10_mib_request() -> None:
    assert MAX_META_DATA == 4 << 20 and MAX_META_DATA + 4_000_000 < 10 << 20


def test_fields_no_update_function_takes_and_non_numbers_are_dropped() -> None:
    built = build(
        {"madeUp": 1, "maxRSS": math.inf, "nEvents": 10, "jobId": "999", "workdir": "/x"},
        Corrections(),
        now=NOW,
    )
    assert built.fields == {"nEvents": 10, "workdir": "/x"}  # workdir: a legacy argument
    assert sorted(built.dropped) == ["madeUp", "maxRSS"]
    assert "maxRSS" in built.notes[0]


def test_stdout_is_cut_to_what_pandas_column_holds() -> None:
    built = build({"stdout": "y" * 5000, "pilotErrorDiag": "z" * 20_000}, Corrections(), now=NOW)
    assert built.fields["stdout"] == "y" * 2048
    assert built.fields["pilotErrorDiag"] == "z" * MAX_TEXT
