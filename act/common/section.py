"""The base of every config section (kept apart from config.py so that section models living in
other packages can subclass it without importing config.py, which imports them)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class Section(BaseModel):
    """A config mapping: unknown keys and loose types are errors; an empty section is defaults."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections_are_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                kind = field.annotation
                if (
                    data.get(name, 0) is None
                    and isinstance(kind, type)
                    and issubclass(kind, BaseModel)
                ):
                    data = {**data, name: {}}
        return data
