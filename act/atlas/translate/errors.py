"""The error every translation step raises for a job it cannot describe."""

from __future__ import annotations


class TranslationError(ValueError):
    """A job cannot be described for a CE; the message names the PanDA ID and the field."""

    def __init__(self, panda_id: int, field_name: str, problem: str) -> None:
        self.panda_id = panda_id
        self.field = field_name
        super().__init__(f"panda_id={panda_id}: {field_name}: {problem}")
