"""The translator (daemon ``translator``): turns stored PanDA jobs into CE jobs.

Each cycle it claims ``received`` and ``toresubmit`` PanDA jobs (oldest first, ``batch`` of them)
and for each:

1. event service: fetches the event ranges first (:mod:`act.atlas.events`), stored at once in a
   transaction of their own (PanDA has handed them out); a job without ranges fails;
2. picks the queue's active CEs that are configured under ``engine.ces``: a queue CE matches the
   engine CE of the same name, or one with the same ``url`` and ``queue``. A queue CE with no
   engine entry is skipped (one warning per cycle and queue CE);
3. writes the description for the engine CE's back end (``arc``: xRSL, ``condor``: HTCondor
   submit description, ``local``: the local back end's JSON) and its files into
   ``<root>/jobs/<panda_id>/input/`` (files 0644, directory 0755; ``pandaJobData.out`` in the
   format pilot3 reads in the mode act starts it in: :mod:`act.atlas.translate.jobfile`).
   One CE job goes to every candidate CE whose description is identical (same back end, same
   text): built by :func:`act.atlas.translate.build.build`, a pure function of the job, its
   queue and the CE configuration, which ``actctl translate`` uses too. A ``condor`` job's
   stdout, stderr and event log go to its day directory in the web area
   (``<web root>/<date>/<queue>/<panda_id>.out|.err|.log``, :mod:`act.atlas.web_area`; made
   here, 0755), so the GTAG link works as soon as HTCondor writes the file;
4. creates the ``ce_jobs`` row (``tosubmit``, candidates, ``attempts_left``: ``engine.attempts``
   for a job's first CE job, one less than its previous CE job had for a resubmitted one, as
   :mod:`act.engine.resubmit` keeps the one retry budget) and moves the PanDA job to ``queued``
   in the same transaction, its report due now.

A job that cannot be translated goes to ``failed`` with ``options.error_code`` and a diagnosis
naming the field (``pilotErrorDiag`` of its final report). A ``toresubmit`` job whose budget is
spent fails ("no attempts left").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import sqlalchemy as sa
from pydantic import Field, model_validator
from sqlalchemy.engine import Connection

from act.atlas import events, web_area
from act.atlas.config import Context
from act.atlas.input_files import write_files
from act.atlas.latest_ce import latest_ce_value
from act.atlas.panda_errors import PandaError
from act.atlas.queries import ToTranslate
from act.atlas.queues import Queue
from act.atlas.reporting import due_now, with_report
from act.atlas.runtime import panda_client
from act.atlas.served import served_queues
from act.atlas.translate import JobInput, TranslationError
from act.atlas.translate.build import QueueError, build, match_ces, unconfigured_ces
from act.common.claims import claim_and_load, release
from act.common.daemon import DaemonSpec
from act.common.logs import job_log
from act.common.schema import ce_jobs, panda_jobs
from act.common.section import Section
from act.common.states import Actor, CEJobState, Layer, PandaJobState
from act.common.transitions import create_jobs, transition
from act.engine.resubmit import attempts_for_new_ce_job

STATES = (PandaJobState.RECEIVED, PandaJobState.TORESUBMIT)


class TranslatorOptions(Section):
    error_code: int = Field(9001, ge=0)  # pilotErrorCode of a job that cannot be translated
    n_event_ranges: int = Field(10, ge=1)  # event ranges asked for per event-service job

    @model_validator(mode="before")
    @classmethod
    def _no_second_budget(cls, data: Any) -> Any:
        if isinstance(data, dict) and "max_ce_jobs" in data:
            raise ValueError(
                "max_ce_jobs was removed: engine.attempts is the one retry budget of a job "
                "(restarts, CE-level and PanDA-level resubmissions); delete this key"
            )
        return data


@dataclass(frozen=True)
class Outcome:
    """What to do with one claimed job: a CE job row, or a failure diagnosis."""

    id: int
    panda_id: int
    from_state: str
    ce_row: dict[str, Any] | None = None
    failure: str | None = None


def run_once(ctx: Context) -> bool:
    opts: TranslatorOptions = ctx.options
    limit = ctx.daemon.batch
    rows = ctx.db.run(
        lambda conn: claim_and_load(
            conn, Layer.PANDA, STATES, ToTranslate, owner=ctx.owner, lease=ctx.daemon.lease,
            limit=limit, shard=ctx.shard,
            labelled={"previous_attempts_left": latest_ce_value(ce_jobs.c.attempts_left)},
        )
    )  # fmt: skip
    if not rows:
        return False
    ids = [row.id for row in rows]
    queues = served_queues(ctx)
    warned: set[tuple[str, str]] = set()
    found = [
        _translate(ctx, opts, row, queues=queues, warned=warned) for row in ctx.until_stopped(rows)
    ]
    outcomes = [o for o in found if o is not None]
    ctx.db.run(lambda conn: _commit(conn, ctx, opts, outcomes))
    leftover = set(ids) - {o.id for o in outcomes}
    if leftover:
        ctx.db.run(lambda conn: release(conn, Layer.PANDA, ctx.owner, sorted(leftover)))
    return len(ids) >= limit


def _translate(
    ctx: Context,
    opts: TranslatorOptions,
    row: ToTranslate,
    *,
    queues: Mapping[str, Queue],
    warned: set[tuple[str, str]],
) -> Outcome | None:
    """One claimed job: its outcome, or None to leave it for a later cycle.

    The description comes from the pure builder (:func:`act.atlas.translate.build.build`);
    around it: the PanDA call for event ranges (:func:`_fetch_event_ranges`), then the web
    area's day directory made and the shipped files written (:mod:`act.atlas.input_files`).
    The outcome's DB writes are :func:`_commit`'s.
    """
    panda_id = int(row.panda_id)
    log = job_log(ctx.log, panda_id=panda_id)

    def fail(diag: str) -> Outcome:
        log.error("cannot be translated: %s", diag)
        return Outcome(row.id, panda_id, row.state, failure=diag)

    attempts = attempts_for_new_ce_job(ctx.settings.engine.attempts, row.previous_attempts_left)
    if attempts < 1:
        return fail(f"no attempts left (engine.attempts: {ctx.settings.engine.attempts})")
    queue = queues.get(row.queue)
    if queue is None:
        return fail(f"queue: {row.queue} is not served (queues.serve)")
    try:
        spec = parse_spec(row.spec, row.spec_format)
    except ValueError as error:
        return fail(f"spec: {error}")
    try:
        state = events.load(row.event_ranges)
    except ValueError as error:
        return fail(str(error))
    if state is None and events.is_event_service(spec):
        try:
            state = _fetch_event_ranges(ctx, opts, row, spec)
        except KeyError as error:
            return fail(f"{error.args[0]}: needed to fetch event ranges")
        except PandaError as error:
            log.error("event ranges not fetched, will try again: %s", error)
            return None
        log.info("%d event range(s) fetched", len(state.ranges))
    if state is not None and not state.ranges:
        return fail("eventService: PanDA gave no event ranges")
    matched = match_ces(queue, ctx.settings.engine.ces)
    for qce in unconfigured_ces(queue, matched):
        if (queue.name, qce.endpoint) not in warned:
            warned.add((queue.name, qce.endpoint))
            ctx.log.warning(
                "queue %s: CE %s (%s) is not configured under engine.ces: skipped",
                queue.name,
                qce.endpoint,
                qce.flavour,
            )
    job = JobInput(
        panda_id=panda_id,
        spec=spec,
        spec_text=row.spec,
        spec_format=row.spec_format,
        queue=queue,
        attempt=int(row.attempt or 0),
        log_url=row.log_url or "",
        event_ranges=state.ranges if state is not None else None,
    )
    try:
        built = build(job, matched, ctx.settings, created_at=row.created_at)
    except (QueueError, TranslationError) as error:
        return fail(str(error))
    if built.web_dir is not None:
        try:
            web_area.make_dirs(built.web_dir)
        except OSError as error:
            log.error("the web area is not usable, will try again: %s", error)
            return None
    write_files(built.input_dir, built.described.files)
    return Outcome(
        row.id,
        panda_id,
        row.state,
        ce_row={
            "panda_job_id": row.id,
            "backend": built.described.backend,
            "candidates": " ".join(built.described.candidates),
            "description": built.described.description,
            "input_dir": str(built.input_dir),
            "attempts_left": attempts,
            "panda_id": panda_id,
            "queue": queue.name,
        },
    )


def _fetch_event_ranges(
    ctx: Context, opts: TranslatorOptions, row: ToTranslate, spec: Mapping[str, Any]
) -> events.EventState:
    """An event-service job's ranges, from PanDA, stored at once in a transaction of their own
    (PanDA has handed them out). KeyError for a field the call needs, PandaError."""
    state = events.fetch(panda_client(ctx), int(row.panda_id), spec, n_ranges=opts.n_event_ranges)
    text = state.dump()
    ctx.db.run(
        lambda conn: conn.execute(
            sa.update(panda_jobs).where(panda_jobs.c.id == row.id).values(event_ranges=text)
        )
    )
    return state


def parse_spec(text: str, spec_format: str) -> dict[str, Any]:
    """The stored spec as a dict (JSON object, or a URL-encoded legacy reply)."""
    if spec_format == "form":
        return dict(parse_qsl(text, keep_blank_values=True))
    try:
        spec = json.loads(text)
    except ValueError as error:
        raise ValueError(f"not JSON ({error})") from None
    if not isinstance(spec, dict):
        raise ValueError("not a JSON object")
    return spec


def _commit(
    conn: Connection, ctx: Context, opts: TranslatorOptions, outcomes: list[Outcome]
) -> None:
    for outcome in outcomes:
        if outcome.failure is not None:
            diag = outcome.failure[:500]
            transition(
                conn, Layer.PANDA, [outcome.id], outcome.from_state, PandaJobState.FAILED,
                actor=Actor.TRANSLATOR, reason=diag[:200], owner=ctx.owner,
                values=with_report(
                    {"pilotErrorCode": opts.error_code, "pilotErrorDiag": diag},
                    {"error_code": opts.error_code, "error_text": diag},
                ),
            )  # fmt: skip
            continue
        moved = transition(
            conn, Layer.PANDA, [outcome.id], outcome.from_state, PandaJobState.QUEUED,
            actor=Actor.TRANSLATOR, reason="CE job made", owner=ctx.owner, values=due_now(),
        )  # fmt: skip
        if moved and outcome.ce_row is not None:
            create_jobs(
                conn, Layer.CE, [outcome.ce_row], CEJobState.TOSUBMIT, actor=Actor.TRANSLATOR
            )
            job_log(ctx.log, panda_id=outcome.panda_id).info(
                "CE job made for %s", outcome.ce_row["candidates"]
            )


DAEMON = DaemonSpec(run_once=run_once, options=TranslatorOptions, doc=__doc__ or "")
