"""The janitor: housekeeping no other daemon owns.

Today it prunes the liveness rows of processes that stopped or went silent longer ago than
``options.process_retention`` seconds (``actctl processes`` shows them until then). The "stuck in
state X for longer than T" policies of the CE engine will be applied here as well.
"""

from __future__ import annotations

from pydantic import Field

from act.common import liveness
from act.common.config import Section
from act.common.daemon import Context, DaemonSpec


class JanitorOptions(Section):
    process_retention: float = Field(7 * 86400.0, gt=0)


def run_once(ctx: Context) -> bool:
    retention = ctx.options.process_retention
    pruned = ctx.db.run(lambda conn: liveness.prune(conn, older_than=retention))
    if pruned:
        ctx.log.info(
            "pruned %d liveness row(s) of processes gone for over %.0fs", pruned, retention
        )
    return False


DAEMON = DaemonSpec(run_once=run_once, options=JanitorOptions, doc=__doc__ or "")
