"""TEST SUPPORT ONLY: daemons used by the tests to exercise the loop, claims and supervisor.

``MOVER`` claims CE jobs in one state and moves them to another, recording its instance in the
history's reason, so tests can tell which process moved which job. ``CRASHER`` exits the process
abruptly, ``STUBBORN`` ignores SIGTERM, ``CHATTY`` writes a numbered line each cycle through its
logger, to stdout and straight to fd 2 (log rotation tests), ``FAILER`` claims jobs and raises (a
cycle that fails), ``SLOW_CALL`` spends ``options.call`` seconds in one call that does not look
at the stop event (a slow CE), ``PLODDER`` runs long cycles of short steps, each followed by a
heartbeat (a slow cycle making progress). None of them is a product daemon.
"""

from __future__ import annotations

import os
import signal
import time

from pydantic import Field

from act.common.claims import claim
from act.common.config import CommonSettings, Section
from act.common.daemon import Context, DaemonSpec
from act.common.states import Actor, Layer
from act.common.transitions import transition


class MoverOptions(Section):
    from_state: str = "tosubmit"
    to_state: str = "submitting"
    hold: float = Field(0.0, ge=0)  # seconds to sit on claimed rows before moving them


def move(ctx: Context[CommonSettings]) -> bool:
    opts: MoverOptions = ctx.options
    ids = ctx.db.run(
        lambda conn: claim(
            conn,
            Layer.CE,
            [opts.from_state],
            owner=ctx.owner,
            lease=ctx.daemon.lease,
            limit=ctx.daemon.batch,
            shard=ctx.shard,
        )
    )
    if not ids:
        return False
    ctx.log.info("claimed %d job(s): %s", len(ids), ids)
    if opts.hold:
        ctx.stop.wait(opts.hold)
    moved = ctx.db.run(
        lambda conn: transition(
            conn,
            Layer.CE,
            ids,
            opts.from_state,
            opts.to_state,
            actor=Actor.SUBMITTER,
            owner=ctx.owner,
            reason=ctx.instance,
        )
    )
    ctx.log.info("moved %d job(s)", len(moved))
    return True


class CrasherOptions(Section):
    exit_code: int = 7
    after: float = Field(0.0, ge=0)  # seconds alive before crashing


def crash(ctx: Context[CommonSettings]) -> bool:
    time.sleep(ctx.options.after)
    ctx.log.info("crashing with exit code %d", ctx.options.exit_code)
    os._exit(ctx.options.exit_code)


def ignore_sigterm(ctx: Context[CommonSettings]) -> bool:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ctx.log.info("ignoring SIGTERM")
    time.sleep(3600)
    return False


def claim_and_fail(ctx: Context[CommonSettings]) -> bool:
    ids = ctx.db.run(
        lambda conn: claim(
            conn, Layer.CE, ["tosubmit"], owner=ctx.owner, lease=ctx.daemon.lease, limit=10
        )
    )
    raise RuntimeError(f"test support: a cycle that fails after claiming {len(ids)} job(s)")


class SlowCallOptions(Section):
    call: float = Field(3.0, ge=0)  # seconds the call takes


def slow_call(ctx: Context[CommonSettings]) -> bool:
    ctx.log.info("calling (%.1fs)", ctx.options.call)
    time.sleep(ctx.options.call)  # blind to SIGTERM, as a CE call waiting for its reply is
    ctx.log.info("call done")
    return False


class PlodderOptions(Section):
    steps: int = Field(8, ge=1)
    step: float = Field(0.5, ge=0)  # seconds each step takes


def plod(ctx: Context[CommonSettings]) -> bool:
    opts: PlodderOptions = ctx.options
    began = time.monotonic()
    for _ in range(opts.steps):
        time.sleep(opts.step)
        ctx.heartbeat()  # what a long cycle does between its jobs: progress for actd
    ctx.log.info("cycle done in %.1fs", time.monotonic() - began)
    return False


def idle(ctx: Context[CommonSettings]) -> bool:
    return False


def chatter(ctx: Context[CommonSettings]) -> bool:
    count = ctx.cache["ticks"] = ctx.cache.get("ticks", 0) + 1
    ctx.log.info("log tick %d", count)
    print(f"stdout tick {count}", flush=True)
    os.write(2, f"stderr tick {count}\n".encode())
    return False


MOVER = DaemonSpec(run_once=move, options=MoverOptions, doc="test support: moves CE jobs")
CRASHER = DaemonSpec(run_once=crash, options=CrasherOptions, doc="test support: exits at once")
STUBBORN = DaemonSpec(run_once=ignore_sigterm, doc="test support: ignores SIGTERM")
IDLE = DaemonSpec(run_once=idle, doc="test support: does nothing")
FAILER = DaemonSpec(run_once=claim_and_fail, doc="test support: claims jobs, then raises")
SLOW_CALL = DaemonSpec(
    run_once=slow_call, options=SlowCallOptions, doc="test support: one slow call per cycle"
)
CHATTY = DaemonSpec(run_once=chatter, doc="test support: numbered lines to log, stdout, fd 2")
PLODDER = DaemonSpec(
    run_once=plod, options=PlodderOptions, doc="test support: long cycles that make progress"
)
