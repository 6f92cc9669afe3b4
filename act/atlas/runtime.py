"""What PanDA-side daemons keep between cycles: one PanDA client per daemon process.

It lives in ``ctx.cache``; the daemon loop closes it when the daemon stops
(:func:`act.common.daemon.close_cache`).
"""

from __future__ import annotations

from act.atlas.config import Context
from act.atlas.credentials import credentials_from_settings
from act.atlas.panda_client import PandaClient

CACHE_KEY = "panda_client"


def panda_client(ctx: Context, *, retries: int | None = None) -> PandaClient:
    """The daemon's PanDA client (``panda:`` settings, role credentials), made on first use.

    It keeps its connections alive between cycles and is thread-safe, so one per process is
    shared by every thread of the daemon. ``retries`` overrides ``panda.retries`` for a daemon
    that retries by itself (the propagator: its jobs simply stay due).
    """
    found = ctx.cache.get(CACHE_KEY)
    if not isinstance(found, PandaClient):
        settings = ctx.settings.panda
        if retries is not None:
            settings = settings.model_copy(update={"retries": retries})
        credentials = credentials_from_settings(settings, log=ctx.log)
        found = PandaClient(settings, credentials, log=ctx.log, stop=ctx.stop)
        ctx.cache[CACHE_KEY] = found
    return found
