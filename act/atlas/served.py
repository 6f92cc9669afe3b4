"""The queues a PanDA-side daemon serves, loaded once and reloaded every ``queues.cric_refresh``.

A failed reload keeps the last good set (logged); the first load's error propagates (the cycle
fails and is logged by the daemon loop).
"""

from __future__ import annotations

import time

from act.atlas.config import Context
from act.atlas.queues import Queue, QueueConfigError, load_queues

CACHE_KEY = "served_queues"


def served_queues(ctx: Context) -> dict[str, Queue]:
    """The daemon's queues by name (``queues.serve``, with CRIC), refreshed when due."""
    found = ctx.cache.get(CACHE_KEY)
    now = time.monotonic()
    if found is not None and now - found[0] < ctx.settings.queues.cric_refresh:
        queues: dict[str, Queue] = found[1]
        return queues
    warnings: list[str] = []
    try:
        queues = load_queues(ctx.settings.queues, warnings=warnings)
    except (QueueConfigError, OSError) as error:
        if found is None:
            raise
        ctx.log.error("queues: reload failed, keeping the previous set: %s", error)
        queues = found[1]
    for warning in warnings:
        ctx.log.warning("queues: %s", warning)
    ctx.cache[CACHE_KEY] = (now, queues)
    return queues
