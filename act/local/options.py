"""``engine.ces.<name>.options`` of a local CE (:class:`LocalOptions`)."""

from __future__ import annotations

import os

from pydantic import Field

from act.common.section import Section


class LocalOptions(Section):
    """``engine.ces.<name>.options`` of a local CE."""

    slots: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=4096)
    workdir: str | None = None
    grace: float = Field(5.0, gt=0)
    start_timeout: float = Field(30.0, gt=0)
    upload_timeout: float = Field(120.0, gt=0)
    upload_attempts: int = Field(3, ge=1, le=100)
    upload_credential: str | None = None
    upload_ca: str | None = None
