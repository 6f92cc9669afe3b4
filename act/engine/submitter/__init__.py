"""The submitter: sends ``tosubmit`` CE jobs to a CE, crash-safely, and handles resubmit and rerun.

Each cycle, in order:

1. **Reconcile** ``submitting`` jobs whose claim expired: their submitter died between stating its
   intent and recording the CE's answer. The CE is asked which of their tokens it has
   (:meth:`Backend.find`): those go to ``submitted``, the others back to ``tosubmit`` once
   ``Limits.find_lag`` has passed since the intent (a CE such as ARC lists a job it accepted
   only after a while; until then they stay). A CE that does not answer keeps them
   ``submitting`` until the next cycle. Nothing is submitted twice.
2. **Resubmit**: ``toresubmit`` jobs have their old CE job cleaned, then go back to ``tosubmit``
   with one attempt less and that CE excluded (or to ``failed`` when no attempt is left).
3. **Rerun**: ``torerun`` jobs are restarted at their CE (``submitted``, or ``failed`` if refused).
4. **Submit** ``tosubmit`` jobs. Each gets a CE among its candidates that is enabled, whose
   breaker admits it, that has room (``max_queued``, ``max_running``), has not had
   ``max_per_cycle`` jobs this cycle and whose last batch is ``min_spacing`` seconds old. Per
   batch (at most ``Limits.submit_batch`` jobs, batches to one CE spaced by ``min_spacing``):

   (1) one transaction: a fresh unique ``token`` per job, ``ce_name``, ``submissions + 1``,
       ``tosubmit -> submitting`` (the intent; the claim is kept);
   (2) ``backend.submit``;
   (3) one transaction: ``submitting -> submitted`` with ``ce_job_id``, ``submitted_at`` and
       ``next_check_at``; per-job transient errors ``-> tosubmit`` with the CE excluded (the job
       goes elsewhere next), permanent rejections ``-> failed`` with the CE's message;
       :class:`CEUnavailable` raised before anything was sent (``maybe_sent`` False: refused,
       unresolved, TLS handshake): all ``-> tosubmit`` with the CE excluded, and a breaker
       failure. Raised after the request may have reached the CE (a timeout or broken
       connection while waiting for the reply, an unreadable reply, a 5xx): the CE is asked
       which tokens it has; those are ``submitted``, the others go to ``tosubmit`` only where
       ``find`` is authoritative at once (``find_lag`` 0) and otherwise stay ``submitting``
       for step 1; if the CE cannot be asked, all stay ``submitting``.

   Jobs no CE can take now stay ``tosubmit`` (their claim is released), with one line per cycle
   and reason, not per job.

The daemon's ``lease`` must be longer than one CE call (``engine.ces.<name>.timeout``): a claim
that expires while its submitter still waits for the CE would be reconciled under its feet. The
submitter renews its claims before each call and warns at start-up if the lease is too short.

The steps live in :mod:`.reconciliation` (1), :mod:`.restarts` (2 and 3), :mod:`.budgets` (which CE
each job goes to) and :mod:`.submission` (the batches); :mod:`.jobs` has what they share.
"""

from __future__ import annotations

from act.common.daemon import DaemonSpec, NoOptions
from act.engine.config import Context
from act.engine.runtime import pool
from act.engine.submitter.reconciliation import reconcile
from act.engine.submitter.restarts import rerun, resubmit
from act.engine.submitter.submission import submit


def _check_lease(ctx: Context) -> None:
    if ctx.cache.get("submitter_lease_checked"):
        return
    ctx.cache["submitter_lease_checked"] = True
    slow = [name for name, ce in ctx.settings.engine.ces.items() if ce.timeout >= ctx.daemon.lease]
    if slow:
        ctx.log.warning(
            "daemons.%s.lease (%.0fs) is not longer than the timeout of %s: a slow CE call could "
            "outlive its claim",
            ctx.name,
            ctx.daemon.lease,
            ", ".join(sorted(slow)),
        )


def run_once(ctx: Context) -> bool:
    """One cycle: reconcile, resubmit, rerun, submit; True when more jobs wait to be submitted."""
    _check_lease(ctx)
    engine = pool(ctx)
    for step in (reconcile, resubmit, rerun):
        if ctx.stopping():  # each step claims its own jobs: a stopping daemon takes no more
            return False
        step(ctx, engine)
    return False if ctx.stopping() else submit(ctx, engine)


DAEMON = DaemonSpec(run_once=run_once, options=NoOptions, doc=__doc__ or "")
