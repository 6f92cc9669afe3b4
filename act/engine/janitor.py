"""The janitor: housekeeping no other daemon owns.

Each cycle it prunes the liveness rows of processes that stopped or went silent longer ago than
``options.process_retention`` seconds (``actctl processes`` shows them until then), and applies the
"stuck in state X for longer than T" policy of both layers (``engine.stuck``, see
:mod:`act.engine.stuck`), moving at most the daemon's ``batch`` jobs per cycle.

It lives in the engine because its policy table is the engine's (``engine.stuck``, checked against
the state table of both layers, which is act/common's); the liveness rows it prunes are
act/common's too, and nothing here needs the PanDA layer.
"""

from __future__ import annotations

from pydantic import Field

from act.common import liveness
from act.common.config import Section
from act.common.daemon import DaemonSpec
from act.engine import stuck
from act.engine.config import Context


class JanitorOptions(Section):
    process_retention: float = Field(7 * 86400.0, gt=0)


def run_once(ctx: Context) -> bool:
    retention = ctx.options.process_retention
    pruned = ctx.db.run(lambda conn: liveness.prune(conn, older_than=retention))
    if pruned:
        ctx.log.info(
            "pruned %d liveness row(s) of processes gone for over %.0fs", pruned, retention
        )
    if ctx.stopping():
        return False
    applied = stuck.apply(
        ctx.db,
        ctx.settings.engine.stuck,
        owner=ctx.owner,
        limit=ctx.daemon.batch,
        lease=ctx.daemon.lease,
    )
    for result in applied:
        if result.moved:
            ctx.log.warning("%s: %d job(s) moved", result.label, result.moved)
    return sum(result.moved for result in applied) >= ctx.daemon.batch


DAEMON = DaemonSpec(run_once=run_once, options=JanitorOptions, doc=__doc__ or "")
