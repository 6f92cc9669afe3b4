"""How the validator reaches storage: the ``storage:`` section of the config."""

from __future__ import annotations

from pydantic import Field

from act.common.section import Section


class StorageSettings(Section):
    """Timeouts, concurrency and TLS for output checks on storage (``storage:`` in the config)."""

    timeout: float = Field(60.0, gt=0)  # seconds per check (stat + checksum) of one file
    concurrency: int = Field(16, ge=1)  # checks in flight in all
    per_endpoint: int = Field(4, ge=1)  # checks in flight per storage endpoint
    ca: str | None = None  # CA file or directory for https/davs/roots (default: the system's)
    credential: str | None = None  # X509 proxy presented to storage (https client cert, xroot)
    rewrite: dict[str, str] = Field(default_factory=dict)  # URL prefix -> replacement
