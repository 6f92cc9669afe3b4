"""Reading a PanDA job spec: typed, checked values, each problem a :class:`TranslationError`
naming the PanDA ID and the field. Used by the plan (:mod:`.common`) and the sizing rules
(:mod:`.sizing`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from act.atlas.translate.errors import TranslationError


class Spec:
    """Typed, checked reads of a job spec; "NULL", "", None and a missing key mean "not given"."""

    def __init__(self, panda_id: int, spec: Mapping[str, Any]) -> None:
        self.panda_id = panda_id
        self.spec = spec

    def error(self, key: str, problem: str) -> TranslationError:
        return TranslationError(self.panda_id, key, problem)

    def given(self, key: str) -> bool:
        value = self.spec.get(key)
        return value is not None and not (isinstance(value, str) and value in ("", "NULL"))

    def text(self, key: str, default: str) -> str:
        if not self.given(key):
            return default
        value = self.spec[key]
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.error(key, f"must be a string (got {type(value).__name__})")
        return str(value)

    def integer(self, key: str, default: int) -> int:
        if not self.given(key):
            return default
        value = self.spec[key]
        if isinstance(value, bool):
            raise self.error(key, f"must be an integer (got {value!r})")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                pass
            else:
                if math.isfinite(number) and number.is_integer():
                    return int(number)
        raise self.error(key, f"must be an integer (got {value!r})")

    def listing(self, key: str) -> list[str]:
        """A PanDA comma list (``inFiles``, ``scopeIn``, ...); empty when not given."""
        if not self.given(key):
            return []
        value = self.spec[key]
        if isinstance(value, list):
            items = value
        elif isinstance(value, str):
            items = value.split(",")
        else:
            raise self.error(key, f"must be a comma list (got {type(value).__name__})")
        return [str(item).strip() for item in items]
