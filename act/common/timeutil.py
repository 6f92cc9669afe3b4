"""Time helpers: every time act stores or compares is an aware UTC datetime."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(timezone.utc)


def seconds(value: float) -> timedelta:
    return timedelta(seconds=value)


def backoff(first: float, maximum: float, attempt: int) -> float:
    """The delay before retry number ``attempt`` (1, 2, ...): ``first`` doubled, capped."""
    return min(maximum, first * 2.0 ** (attempt - 1))


def as_utc(value: datetime) -> datetime:
    """Normalise to aware UTC; a naive value is refused, never guessed."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: act only handles aware UTC times")
    return value.astimezone(timezone.utc)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with a Z suffix, or None."""
    if value is None:
        return None
    return as_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
