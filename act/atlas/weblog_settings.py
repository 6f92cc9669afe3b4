"""Where job logs are published for the PanDA monitor: the ``weblogs:`` section of the config."""

from __future__ import annotations

from pydantic import Field

from act.common.section import Section


class WebLogSettings(Section):
    """The web area (``weblogs:`` in the config); URLs come from each queue's log_url_prefix."""

    dir: str | None = None  # the web server's directory; default <root>/weblogs
    retention_days: float = Field(30.0, gt=0)  # day directories older than this are removed
    excerpt_lines: int = Field(40, ge=1)  # lines of the pilot log sent as pilotLog on failure
