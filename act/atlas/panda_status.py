"""The PanDA server's own words that act sends and reads: job statuses and heartbeat commands.

These are the third vocabulary beside act's two layers of states (:mod:`act.common.states`); some
words are the same (``running``, ``finished``, ``failed``), the meanings are PanDA's. Only this
module spells them: every other module names a member.
"""

from __future__ import annotations

from act.common.states import StateEnum


class PandaServerStatus(StateEnum):
    """A job's ``jobStatus`` at the PanDA server (what act reports, and what it reads back)."""

    ACTIVATED = "activated"  # waiting to be handed out
    SENT = "sent"  # handed out, no heartbeat yet
    STARTING = "starting"
    RUNNING = "running"
    TRANSFERRING = "transferring"
    HOLDING = "holding"  # final report received, waiting for the Adder
    MERGING = "merging"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CLOSED = "closed"


class PandaCommand(StateEnum):
    """A command in PanDA's answer to a heartbeat or final report."""

    TOBEKILLED = "tobekilled"  # kill the job; PanDA still expects a final "failed"
    BADATTEMPTNR = "badattemptnr"  # the attempt reported is not PanDA's current one
    ALREADYDONE = "alreadydone"  # PanDA already has the job's final report
    NULL = "NULL"  # nothing to do (as PanDA spells no command)


class PandaEventStatus(StateEnum):
    """An event range's status at the PanDA server (event service jobs)."""

    RUNNING = "running"  # handed out to a job
    FINISHED = "finished"
    FAILED = "failed"
    FATAL = "fatal"  # failed, not to be retried
