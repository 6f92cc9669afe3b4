"""Durations on actctl's command line (``--since 1h``, ``--older-than 2d``) and in its tables."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import click

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse(text: str) -> timedelta:
    """``90``, ``90s``, ``30m``, ``1h``, ``2d``, ``1w``, or a sum such as ``1d12h``; positive."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    elif value and _PART.sub("", value) == "":
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(value))
    else:
        raise ValueError(f"{text!r} is not a duration (e.g. 90s, 30m, 2h, 1d12h)")
    if seconds <= 0:
        raise ValueError(f"{text!r}: the duration must be positive")
    return timedelta(seconds=seconds)


class Duration(click.ParamType[timedelta, Any]):
    """A click parameter holding a :func:`parse` value."""

    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


def clock(value: timedelta | float | None) -> str:
    """``1d 02:03:04`` / ``02:03:04`` (negative with a ``-``); empty for None."""
    if value is None:
        return ""
    total = int(value.total_seconds() if isinstance(value, timedelta) else value)
    sign, total = ("-", -total) if total < 0 else ("", total)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time_of_day = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{sign}{days}d {time_of_day}" if days else f"{sign}{time_of_day}"


def short(seconds: float) -> str:
    """``1h``, ``30m``, ``1h30m``, ``2d``: how a window is written on the command line."""
    total, parts = int(seconds), []
    for unit in ("d", "h", "m", "s"):
        number, total = divmod(total, _UNITS[unit])
        if number:
            parts.append(f"{number}{unit}")
    return "".join(parts) or "0s"
