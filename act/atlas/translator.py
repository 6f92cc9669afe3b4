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
   ``<root>/jobs/<pandaid>/input/`` (files 0644, directory 0755; ``pandaJobData.out`` in the
   format pilot3 reads in the mode act starts it in: :mod:`act.atlas.translate.jobfile`).
   One CE job goes to every candidate CE whose description is identical (same back end, same
   text). A ``condor`` job's stdout, stderr and event log go to its day directory in the web
   area (``<web root>/<date>/<queue>/<pandaid>.out|.err|.log``, :mod:`act.atlas.weblogs`; made
   here, 0755), so the GTAG link works as soon as HTCondor writes the file;
4. creates the ``ce_jobs`` row (``tosubmit``, candidates, ``attempts_left = engine.attempts``)
   and moves the PanDA job to ``queued`` in the same transaction, its report due now.

A job that cannot be translated goes to ``failed`` with ``options.error_code`` and a diagnosis
naming the field (``pilotErrorDiag`` of its final report). A ``toresubmit`` job that already had
``options.max_ce_jobs`` CE jobs fails ("no attempts left").
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import sqlalchemy as sa
from pydantic import Field
from sqlalchemy.engine import Connection

from act.atlas import events, weblogs
from act.atlas.config import Context
from act.atlas.panda_errors import PandaError
from act.atlas.queues import Queue, QueueCE
from act.atlas.reporting import due_now, with_report
from act.atlas.runtime import panda_client
from act.atlas.served import served_queues
from act.atlas.translate import JobInput, Translation, TranslationError, to_condor, to_xrsl
from act.atlas.translate.local import to_local
from act.common.atomic import atomic_write
from act.common.claims import claim, release
from act.common.daemon import DaemonSpec
from act.common.logs import job_log
from act.common.schema import ce_jobs, panda_jobs
from act.common.section import Section
from act.common.states import Actor, CEJobState, Layer, PandaJobState
from act.common.transitions import create_jobs, transition
from act.engine.settings import CESettings

STATES = (PandaJobState.RECEIVED, PandaJobState.TORESUBMIT)


class TranslatorOptions(Section):
    error_code: int = Field(9001, ge=0)  # pilotErrorCode of a job that cannot be translated
    max_ce_jobs: int = Field(3, ge=1)  # CE jobs a PanDA job gets (first and resubmissions)
    n_event_ranges: int = Field(10, ge=1)  # event ranges asked for per event-service job


@dataclass(frozen=True)
class Outcome:
    """What to do with one claimed job: a CE job row, or a failure diagnosis."""

    id: int
    pandaid: int
    from_state: str
    ce_row: dict[str, Any] | None = None
    failure: str | None = None


def run_once(ctx: Context) -> bool:
    opts: TranslatorOptions = ctx.options
    limit = ctx.daemon.batch
    ids = ctx.db.run(
        lambda conn: claim(
            conn, Layer.PANDA, STATES, owner=ctx.owner, lease=ctx.daemon.lease, limit=limit,
            shard=ctx.shard,
        )
    )  # fmt: skip
    if not ids:
        return False
    with ctx.db.read() as conn:
        rows = conn.execute(sa.select(panda_jobs).where(panda_jobs.c.id.in_(ids))).all()
        ce_counts: dict[int, int] = dict(
            conn.execute(
                sa.select(ce_jobs.c.panda_job_id, sa.func.count())
                .where(ce_jobs.c.panda_job_id.in_(ids))
                .group_by(ce_jobs.c.panda_job_id)
            ).all()
        )
    queues = served_queues(ctx)
    warned: set[tuple[str, str]] = set()
    found = [
        _translate(ctx, opts, row, queues=queues, ce_count=ce_counts.get(row.id, 0), warned=warned)
        for row in ctx.until_stopped(rows)
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
    row: Any,
    *,
    queues: Mapping[str, Queue],
    ce_count: int,
    warned: set[tuple[str, str]],
) -> Outcome | None:
    pandaid = int(row.panda_id)
    log = job_log(ctx.log, pandaid=pandaid)

    def fail(diag: str) -> Outcome:
        log.error("cannot be translated: %s", diag)
        return Outcome(row.id, pandaid, row.state, failure=diag)

    if row.state == PandaJobState.TORESUBMIT and ce_count >= opts.max_ce_jobs:
        return fail(f"no attempts left ({ce_count} CE jobs)")
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
            state = events.fetch(panda_client(ctx), pandaid, spec, n_ranges=opts.n_event_ranges)
        except KeyError as error:
            return fail(f"{error.args[0]}: needed to fetch event ranges")
        except PandaError as error:
            log.error("event ranges not fetched, will try again: %s", error)
            return None
        text = state.dump()
        ctx.db.run(
            lambda conn: conn.execute(
                sa.update(panda_jobs).where(panda_jobs.c.id == row.id).values(event_ranges=text)
            )
        )
        log.info("%d event range(s) fetched", len(state.ranges))
    if state is not None and not state.ranges:
        return fail("eventService: PanDA gave no event ranges")
    matched = match_ces(queue, ctx.settings.engine.ces)
    for qce in queue.active_ces():
        if not any(m[1] is qce for m in matched) and (queue.name, qce.endpoint) not in warned:
            warned.add((queue.name, qce.endpoint))
            ctx.log.warning(
                "queue %s: CE %s (%s) is not configured under engine.ces: skipped",
                queue.name,
                qce.endpoint,
                qce.flavour,
            )
    if not matched:
        return fail(f"queue.ces: none of queue {queue.name}'s CEs is configured in engine.ces")
    web_dir: Path | None = None
    if any(ce.backend == "condor" for _, _, ce in matched):
        try:
            stem = weblogs.relative_stem(
                log_url=row.log_url, queue=queue.name, pandaid=pandaid, created_at=row.created_at
            )
        except ValueError as error:
            return fail(f"queue: {error}")
        try:
            web_dir = weblogs.day_dir(ctx.settings, stem)
        except OSError as error:
            log.error("the web area is not usable, will try again: %s", error)
            return None
    input_dir = Path(ctx.settings.root) / "jobs" / str(pandaid) / "input"
    job = JobInput(
        pandaid=pandaid,
        spec=spec,
        spec_text=row.spec,
        spec_format=row.spec_format,
        queue=queue,
        attempt=int(row.attempt or 0),
        log_url=row.log_url or "",
        event_ranges=state.ranges if state is not None else None,
    )
    try:
        described = describe_for(job, matched, input_dir=input_dir, web_dir=web_dir)
    except TranslationError as error:
        return fail(str(error))
    write_files(input_dir, described.files)
    return Outcome(
        row.id,
        pandaid,
        row.state,
        ce_row={
            "panda_job_id": row.id,
            "backend": described.backend,
            "candidates": " ".join(described.candidates),
            "description": described.description,
            "input_dir": str(input_dir),
            "attempts_left": ctx.settings.engine.attempts,
            "pandaid": pandaid,
            "queue": queue.name,
        },
    )


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


def match_ces(
    queue: Queue, configured: Mapping[str, CESettings]
) -> list[tuple[str, QueueCE, CESettings]]:
    """The queue's active CEs that have an engine CE: (engine name, queue CE, engine CE)."""
    found = []
    for qce in queue.active_ces():
        if qce.endpoint in configured:
            found.append((qce.endpoint, qce, configured[qce.endpoint]))
            continue
        for name, ce in sorted(configured.items()):
            if ce.url == qce.endpoint and (ce.queue or None) == (qce.ce_queue or None):
                found.append((name, qce, ce))
                break
    return found


def describe(
    job: JobInput, qce: QueueCE, ce: CESettings, *, input_dir: Path, web_dir: Path | None = None
) -> Translation:
    """The description for the engine CE's back end.

    ``web_dir``: the job's day directory in the web area (``<web root>/<date>/<queue>``), where
    HTCondor writes the pilot's stdout as ``<pandaid>.out`` (the GTAG file), its stderr as
    ``.err`` and the job's event log as ``.log``; without it they go to ``input_dir``.
    """
    if ce.backend == "local":
        return to_local(job, input_dir=input_dir)
    if ce.backend == "condor":
        return to_condor(job, qce, input_dir=input_dir, web_dir=web_dir)
    if ce.backend == "arc":
        return to_xrsl(job, qce, input_dir=input_dir)
    raise TranslationError(job.pandaid, "engine.ces.backend", f"{ce.backend}: no translator")


@dataclass(frozen=True)
class Described:
    """One job described for a queue's engine CEs, as the translator makes its CE job."""

    #: (engine CE name, engine CE, its translation), for every matched engine CE in order.
    translations: list[tuple[str, CESettings, Translation]]
    #: The CE job's back end and description: the one most of the engine CEs share ...
    backend: str
    description: str
    #: ... and those engine CEs, the CE job's candidates.
    candidates: list[str]
    #: The files shipped with the job (the same for every CE: from one plan).
    files: Mapping[str, bytes]


def describe_for(
    job: JobInput,
    matched: list[tuple[str, QueueCE, CESettings]],
    *,
    input_dir: Path,
    web_dir: Path | None = None,
) -> Described:
    """The description for each of ``matched`` (:func:`match_ces`), and the one the CE job gets:
    a CE job goes to every candidate CE whose description is identical (same back end, same
    text), the largest such group. Raises TranslationError (and ValueError without CEs)."""
    if not matched:
        raise ValueError("no engine CE to describe the job for")
    translations = []
    groups: dict[tuple[str, str], list[str]] = {}
    for name, qce, ce in matched:
        translation = describe(job, qce, ce, input_dir=input_dir, web_dir=web_dir)
        translations.append((name, ce, translation))
        groups.setdefault((ce.backend, translation.description), []).append(name)
    (backend, description), names = max(groups.items(), key=lambda item: len(item[1]))
    return Described(translations, backend, description, names, translations[0][2].files)


def write_files(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write the shipped files: directory 0755, files 0644 (replacing earlier versions)."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o755)
    for name, data in files.items():
        target = directory / name
        if target.parent != directory:
            raise ValueError(f"{name!r} is not a plain file name")
        atomic_write(target, data, mode=0o644)


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
            job_log(ctx.log, pandaid=outcome.pandaid).info(
                "CE job made for %s", outcome.ce_row["candidates"]
            )


DAEMON = DaemonSpec(run_once=run_once, options=TranslatorOptions, doc=__doc__ or "")
