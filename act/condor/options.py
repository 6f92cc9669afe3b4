"""The options of a CE reached through HTCondor: ``engine.ces.<name>.options`` with ``backend:
condor``, read by the back end (:mod:`act.condor.backend`) and by the schedd access
(:mod:`act.condor.schedd`)."""

from __future__ import annotations

from pydantic import Field

from act.common.section import Section


class CondorOptions(Section):
    """``engine.ces.<name>.options`` of a CE reached through HTCondor (Condor-G)."""

    schedd: str | None = None  # schedd name; none: the local schedd
    collector: str | None = None  # collector host[:port] that locates ``schedd``
    token_file: str | None = None  # SciToken/WLCG token for the CE (submit's scitokens_file)
    iwd_dir: str | None = None  # per-job initialdirs; default <root>/condor-iwd
    submit_batch: int = Field(100, ge=1, le=1000)  # jobs per submit call (one transaction)
    status_batch: int = Field(1000, ge=1, le=10000)  # jobs per query
    history_match: int = Field(1000, ge=1, le=100000)  # ads one history call returns at most
    refresh_seconds: float = Field(60.0, gt=0)  # how often the gridmanager updates states
    unavailable_after: float = Field(1800.0, gt=0)  # idle with the CE unreachable: FAILED
    max_holds: int = Field(3, ge=1)  # a job held more often than this is not released again
    can_restart: bool = True  # held jobs may be released (engine.resubmit "restart")
