"""What counts as an integer, and as a PanDA job ID, in what PanDA sends: one rule for the
client, the spool, the fetcher and the validator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def spec_int(value: Any) -> int | None:
    """An integer field of a job spec: an int, or its decimal digits as text (form-encoded
    replies carry only text; surrounding blanks are ignored); None for anything else (a bool,
    "NULL", a float, a sign)."""
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def panda_id_of(spec: Mapping[str, Any]) -> int | None:
    """The job's ``PandaID``: a positive :func:`spec_int`; None for anything else."""
    value = spec_int(spec.get("PandaID"))
    return value if value is not None and value > 0 else None
