"""The propagator: heartbeats and final reports to PanDA, in bulk.

Each cycle claims the PanDA jobs whose ``next_report_at`` has come, **oldest due first** (so a
backlog after an outage drains in the order it built up), at most ``batch_size * in_flight`` of
them. It sends them with ``update_jobs_bulk`` in batches of ``batch_size`` (and at most
``max_request_bytes`` of report fields: a final report's ``metaData`` can take megabytes, and a
web server refuses a request body above its limit, 10 MiB by default), at most ``in_flight``
calls at once (a bounded thread pool; the database is only written from the daemon's thread), and
writes each job's outcome. Both PanDA wire formats go through :class:`PandaClient`; nothing here
depends on either.

What PanDA is told, per act state (aCT's ``pandastatus``; PanDA's update_job accepts starting,
running, transferring, holding, finished, failed):

==========================================  =================================================
act state                                   PanDA is told
==========================================  =================================================
received, queued, toresubmit                starting (the job is with act, not yet running)
running                                     running
transferring, tovalidate                    transferring (outputs being staged or checked)
tobekilled (operator or policy kill)        what PanDA was last told (still a heartbeat)
tobekilled after a PanDA command            nothing while the CE job is being killed
finished                                    finished + the final report → ``done``
failed                                      failed + the final report → ``donefailed``
cancelled after PanDA's ``tobekilled``      failed, pilotErrorCode ``kill_error_code`` (1144,
                                            the pilot's "killed by PanDA server", which PanDA
                                            expects from a killed job) → ``donecancelled``
cancelled by act (operator, stuck policy)   failed, pilotErrorCode ``cancel_error_code``
                                            (1144 too by default, as aCT) → ``donecancelled``
cancelled after ``badattemptnr`` or         nothing → ``donecancelled`` (PanDA has a newer
``alreadydone``                             attempt, or the job done already)
==========================================  =================================================

The fields of ``panda_jobs.report`` (JSON, legacy camelCase: ``xml``, ``pilotErrorCode``,
``pilotErrorDiag``, ``startTime``, ...; built by other daemons, see :mod:`act.atlas.reporting`)
are merged into every report, over ``siteName``, ``schedulerID`` and, for a job with a
``log_url`` (its pilot log in the web area, :mod:`act.atlas.web_area`), ``pilotID`` =
``<log_url>|Unknown|Unknown|Unknown|Unknown`` (aCT's format; the PanDA monitor's "pilot stdout"
link is the part before the first ``|``).

PanDA's answer per job:

* ok, no command: ``panda_status``/``panda_reported_at`` recorded, next report in ``interval`` ±
  ``jitter`` (a fraction); a final state moves to ``done``/``donefailed``/``donecancelled``.
* ``tobekilled``: recorded in ``panda_command``; an active job moves to ``tobekilled`` (the app
  layer cancels its CE job) and gets no heartbeat while it is killed; when it ends
  ``cancelled``, PanDA gets the final ``failed`` with ``kill_error_code``, as from a pilot.
* ``badattemptnr``, ``alreadydone``: PanDA no longer wants this attempt: reporting stops and the
  job moves to ``tobekilled`` as well, so nothing keeps running for a job PanDA gave up; when it
  ends ``cancelled`` it goes to ``donecancelled`` without a call.
  Any command in answer to a final report means PanDA is done with the job: it moves to done*.
* no answer to a final report (the reply lost, the process killed or the database gone before
  the answer was recorded): the job stays due, with ``final_sent_at`` (set just before each
  final report goes) telling that PanDA may have it. Before sending it again the propagator
  asks PanDA for the job's status: if PanDA shows it ended (``PANDA_ENDED``), the job moves to
  done* without a second report; otherwise the report goes again.
* a per-job error: logged with the PanDA id, ``report_failures + 1``, retried after
  ``retry_backoff`` doubled per failure, at most ``interval``.
* PanDA unreachable (transport error of a bulk call) or refusing the credential: nothing changes
  for those jobs (they stay due, oldest first, and are released); one log line per cycle, and
  the daemon pauses ``outage_backoff`` seconds, doubled per failed cycle up to
  ``outage_backoff_max``. The client does not retry inside a call (``panda.retries`` is not
  used here): the next cycle is the retry.
* a stop asked for mid-cycle: no report goes once it is seen (before the calls, and between
  bulk calls not yet begun); those jobs stay due and are released, as after an outage.

Heartbeat-less jobs (``heartbeat_less``: an upstream Harvester talks to PanDA) cause no PanDA call
at all: their final report — the fields the final update would have had — is written as
``jobReport.json`` into the job's ``access_point`` directory (temporary file + rename), and they
move to done*.

Its modules: :mod:`.jobs` (the due jobs, what PanDA is told, the report fields, the options),
:mod:`.send` (the PanDA calls), :mod:`.record` (PanDA's answers written down) and :mod:`.local`
(the jobs that get no call).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from act.atlas.config import Context
from act.atlas.panda_client import JobUpdate
from act.atlas.propagator.jobs import (
    Job,
    Outcome,
    PropagatorOptions,
    Send,
    claim_due,
    report_of,
    silent,
    told,
)
from act.atlas.propagator.local import settle_locally
from act.atlas.propagator.record import report_failed
from act.atlas.propagator.send import mark_final_sent, send_reports, settle_in_doubt
from act.common.claims import release
from act.common.daemon import DaemonSpec
from act.common.logs import job_log
from act.common.states import Layer
from act.common.timeutil import backoff


@dataclass
class _Pause:
    """The daemon's back-off after a cycle that could not reach PanDA (kept in ctx.cache)."""

    failures: int = 0
    until: float = 0.0


def run_once(ctx: Context) -> bool:
    opts: PropagatorOptions = ctx.options
    pause = ctx.cache.setdefault("propagator_pause", _Pause())
    if time.monotonic() < pause.until:
        return False
    limit = opts.batch_size * opts.in_flight
    jobs = ctx.db.run(lambda conn: claim_due(conn, ctx, limit))
    if not jobs:
        return False
    outcome = Outcome()
    sends: list[Send] = []
    local: list[Job] = []
    unreportable: list[Job] = []
    for job in jobs:
        if silent(job):
            local.append(job)
            continue
        try:
            fields = report_of(job, opts)
        except ValueError as error:
            job_log(ctx.log, panda_id=job.panda_id, ce=job.ce).error(
                "cannot build the report: %s", error
            )
            unreportable.append(job)
            continue
        attempt = job.attempt if job.attempt > 0 else None
        sends.append(Send(job, JobUpdate(job.panda_id, told(job), attempt, fields)))
    if unreportable:
        ctx.db.run(lambda conn: report_failed(conn, ctx, unreportable, outcome))
    if local:
        ctx.db.run(lambda conn: settle_locally(conn, ctx, local, outcome))
    if sends and not ctx.stopping():
        sends = settle_in_doubt(ctx, sends, outcome)
    if sends and ctx.stopping():  # the claims are handed back below
        ctx.log.info("stop requested: %d report(s) left to the next instance", len(sends))
    elif sends:
        mark_final_sent(ctx, sends)
        send_reports(ctx, sends, outcome)
    # Jobs not moved or rescheduled (e.g. PanDA unreachable) stay due; give them back.
    ctx.db.run(lambda conn: release(conn, Layer.PANDA, ctx.owner, [job.id for job in jobs]))
    _log_cycle(ctx, outcome, len(jobs))
    if outcome.unreachable:
        pause.failures += 1
        delay = backoff(opts.outage_backoff, opts.outage_backoff_max, pause.failures)
        pause.until = time.monotonic() + delay
        return False
    pause.failures = 0
    return len(jobs) == limit and not ctx.stopping()


def _log_cycle(ctx: Context, outcome: Outcome, claimed: int) -> None:
    if outcome.unreachable:
        what = "refused act's credential" if outcome.auth else "is unreachable"
        ctx.log.error(
            "PanDA %s: %d job(s) stay due (%s)",
            what,
            outcome.unreachable,
            "; ".join(outcome.problems),
        )
    if outcome.sent or outcome.finals or outcome.errors:
        ctx.log.info(
            "reported %d of %d due job(s): %d heartbeat(s), %d final, %d stopped by PanDA, "
            "%d error(s)",
            outcome.sent,
            claimed,
            outcome.acknowledged,
            outcome.finals,
            outcome.stopped,
            outcome.errors,
        )


DAEMON = DaemonSpec(run_once=run_once, options=PropagatorOptions, doc=__doc__ or "")

#: What the package offers: the daemon, its options, and the report built for a job.
__all__ = ["DAEMON", "PropagatorOptions", "report_of", "run_once"]
