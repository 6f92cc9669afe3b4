"""What counts as a PanDA job ID in what PanDA sends: one rule for the client and the spool."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def pandaid_of(spec: Mapping[str, Any]) -> int | None:
    """The job's ``PandaID``: a positive integer, or its decimal digits as text (form-encoded
    replies carry only text; surrounding blanks are ignored); None for anything else."""
    value = spec.get("PandaID")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value
