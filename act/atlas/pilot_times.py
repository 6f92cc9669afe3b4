"""Times in pilot reports (``startTime``/``endTime``) and the one form PanDA takes.

pilot3 writes ``startTime``/``endTime`` in ``heartbeat.json`` as epoch seconds (floats from
``time.time()``: ``pilot/control/job.py``, ``get_data_structure`` and
``add_timing_and_extracts``); older pilots and act's own reports use PanDA's text form
``%Y-%m-%d %H:%M:%S`` in UTC. Both PanDA APIs take only that text form: panda-server 1.0.4's
``update_job`` and 0.8.x's ``updateJob`` both ``strptime`` it and, on failure, log an error and
drop the time silently.

:func:`read_time` accepts, and turns into an aware UTC datetime:

* epoch seconds: an int or float (not a bool), or a string of digits with an optional fraction
  (``"1796639438.55"``);
* PanDA's text form, taken as UTC;
* ISO 8601 (``2026-12-07T11:30:38+01:00``; without an offset: UTC).

It refuses (:class:`BadTime`, whose text names the value and the cause) a bool, NaN or infinity,
a negative number, anything else that is not a time, a time before 2000-01-01 (a zero or broken
clock) and a time more than a day ahead of now (a clock far off, or milliseconds given as
seconds). ``None``, ``""`` and ``"NULL"`` mean "not given" (``None``).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone

from act.common.timeutil import as_utc, utcnow

#: PanDA's time format (UTC), for startTime/endTime in both APIs.
PANDA_TIME = "%Y-%m-%d %H:%M:%S"
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
AHEAD = timedelta(days=1)
_EPOCH_TEXT = re.compile(r"[0-9]{1,12}(?:\.[0-9]*)?")
_ABSENT = ("", "NULL", "None")


class BadTime(ValueError):
    """A value that is not a usable time; str() names the value and the cause."""


def panda_text(value: datetime) -> str:
    """``value`` in PanDA's text form, in UTC (a naive datetime is refused, never guessed)."""
    return as_utc(value).strftime(PANDA_TIME)


def read_time(value: object, *, now: datetime | None = None) -> datetime | None:
    """The time ``value`` stands for (see the module docstring); None if not given."""
    if value is None or (isinstance(value, str) and value.strip() in _ABSENT):
        return None
    latest = (now or utcnow()) + AHEAD
    if isinstance(value, datetime):
        when = as_utc(value)
    elif isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BadTime(f"{_show(value)} is not a time")
    elif isinstance(value, str):
        when = _from_text(value.strip(), latest)
    else:
        when = _from_epoch(value, value, latest)
    if when < EARLIEST:
        raise BadTime(f"{_show(value)} is before {EARLIEST:%Y-%m-%d} (a broken clock?)")
    if when > latest:
        raise BadTime(f"{_show(value)} is more than a day in the future ({panda_text(when)})")
    return when


def _from_epoch(seconds: float, shown: object, latest: datetime) -> datetime:
    if not math.isfinite(seconds):
        raise BadTime(f"{_show(shown)} is not a finite number")
    if seconds < 0:
        raise BadTime(f"{_show(shown)} is negative")
    if seconds > latest.timestamp():
        raise BadTime(f"{_show(shown)} is more than a day in the future (milliseconds?)")
    try:
        return datetime.fromtimestamp(seconds, timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise BadTime(f"{_show(shown)} is out of range") from None


def _from_text(text: str, latest: datetime) -> datetime:
    if _EPOCH_TEXT.fullmatch(text):
        return _from_epoch(float(text), text, latest)
    try:
        return datetime.strptime(text, PANDA_TIME).replace(tzinfo=timezone.utc)
    except ValueError:
        pass
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadTime(f"{_show(text)} is neither epoch seconds nor a date and time") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
