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

   (1) one transaction: a fresh unique ``token`` per job, ``ce_endpoint``, ``submissions + 1``,
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
"""

from __future__ import annotations

import secrets
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from act.common import claims
from act.common.daemon import DaemonSpec, NoOptions
from act.common.faults import maybe_crash
from act.common.logs import job_log
from act.common.schema import ce_jobs, ces
from act.common.states import C_QUEUED, C_RUNNING, Actor, CEJobState, Layer
from act.common.timeutil import seconds, utcnow
from act.common.transitions import chunked, transition
from act.engine import breaker, strategies
from act.engine.backend import CE, Backend, CEUnavailable, SubmitRequest, Submitted
from act.engine.config import Context
from act.engine.runtime import EnginePool, UnknownCE, pool

CE_LAYER = Layer.CE
ME = Actor.SUBMITTER
#: States that count as "queued at the CE" for max_queued.
QUEUED_STATES = C_QUEUED
RUNNING_STATES = C_RUNNING
ERROR_LEN = 4000
#: Tolerance on min_spacing between two batches of one cycle (the wait and the clock differ).
SPACING_SLACK = 0.01


# ---------------------------------------------------------------------------------------------
# Small database helpers


def _rows(conn: Connection, ids: Sequence[int]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for chunk in chunked(sorted(ids)):
        stmt = sa.select(ce_jobs).where(ce_jobs.c.id.in_(chunk)).order_by(ce_jobs.c.id)
        found.extend(dict(row) for row in conn.execute(stmt).mappings())
    return found


def _set_each(conn: Connection, values: Mapping[int, Mapping[str, Any]]) -> None:
    """Per-row values (never a state column) for rows that just moved, in one executemany."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for job_id, row in values.items():
        by_columns[tuple(sorted(row))].append(
            {"b_id": job_id, **{f"b_{k}": v for k, v in row.items()}}
        )
    for columns, params in by_columns.items():
        stmt = (
            sa.update(ce_jobs)
            .where(ce_jobs.c.id == sa.bindparam("b_id"))
            .values({column: sa.bindparam(f"b_{column}") for column in columns})
        )
        conn.execute(stmt, params)


def _with_excluded(excluded: str | None, ce: str) -> str:
    names = strategies.names(excluded)
    if ce not in names:
        names.append(ce)
    return " ".join(names)


def _short(error: str | None) -> str:
    return (error or "unknown error")[:ERROR_LEN]


def _release(ctx: Context, ids: Iterable[int]) -> None:
    ids = list(ids)
    if ids:
        ctx.db.run(lambda conn: claims.release(conn, CE_LAYER, ctx.owner, ids))


def _claim(ctx: Context, state: str, limit: int | None = None) -> list[dict[str, Any]]:
    def take(conn: Connection) -> list[dict[str, Any]]:
        ids = claims.claim(
            conn,
            CE_LAYER,
            [state],
            owner=ctx.owner,
            lease=ctx.daemon.lease,
            limit=limit or ctx.daemon.batch,
            shard=ctx.shard,
        )
        return _rows(conn, ids) if ids else []

    return ctx.db.run(take)


def _by_ce(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[str(row["ce_endpoint"] or "")].append(row)
    return dict(sorted(groups.items()))


def _ce_and_backend(ctx: Context, engine: EnginePool, name: str) -> tuple[CE, Backend] | None:
    """The CE called ``name`` and its back end; None if it is not configured or its back end
    cannot be made (logged here: e.g. a back end that is not available in this installation)."""
    try:
        ce = engine.ce(name)
    except UnknownCE:
        return None
    try:
        return ce, engine.backend(ce)
    except Exception as error:
        ctx.log.error("ce=%s: cannot make its back end: %s", name, error)
        return None


# ---------------------------------------------------------------------------------------------
# 1. Reconciliation


def reconcile(ctx: Context, engine: EnginePool) -> None:
    """Resolve ``submitting`` jobs whose submitter died before recording the CE's answer."""
    rows = _claim(ctx, CEJobState.SUBMITTING)
    for name, group in ctx.until_stopped(list(_by_ce(rows).items()), "CE(s) to reconcile"):
        _reconcile_ce(ctx, engine, name, group)


def _reconcile_ce(ctx: Context, engine: EnginePool, name: str, group: list[dict[str, Any]]) -> None:
    ids = [row["id"] for row in group]
    found = _ce_and_backend(ctx, engine, name)
    if found is None:
        ctx.log.error(
            "ce=%s: %d job(s) in submitting at a CE not configured or without a usable back end: "
            "left as they are",
            name or "(none)",
            len(ids),
        )
        _release(ctx, ids)
        return
    ce, backend = found
    tokens = [str(row["token"]) for row in group if row["token"]]
    try:
        known = backend.find(ce, tokens) if tokens else {}
    except CEUnavailable as error:
        ctx.log.warning(
            "ce=%s: cannot reconcile %d job(s) in submitting: %s", name, len(ids), error.cause
        )
        _release(ctx, ids)
        return
    now = utcnow()
    accepted = {row["id"]: known[row["token"]] for row in group if row["token"] in known}
    # A job the CE does not list may still be on its way into the CE's listing (find_lag):
    # it waits until it shows or the lag has passed since the intent was recorded.
    settled = now - seconds(backend.limits(ce).find_lag)
    missing: list[int] = []
    waiting: list[int] = []
    for row in group:
        if row["id"] not in accepted:
            (missing if row["state_changed_at"] <= settled else waiting).append(row["id"])

    def record(conn: Connection) -> tuple[list[int], list[int]]:
        moved = _mark_submitted(conn, ctx, accepted, now, "reconciled: the CE has the job")
        back = transition(
            conn,
            CE_LAYER,
            missing,
            CEJobState.SUBMITTING,
            CEJobState.TOSUBMIT,
            actor=ME,
            reason="reconciled: the CE does not have the job",
            owner=ctx.owner,
        )
        if moved:
            breaker.record_success(conn, name, now=now)
        return moved, back

    moved, back = ctx.db.run(record)
    by_id = {row["id"]: row for row in group}
    for job_id in moved:
        job_log(ctx.log, pandaid=by_id[job_id]["pandaid"], ce=name).info(
            "reconciled: submitted as %s", accepted[job_id]
        )
    for job_id in back:
        job_log(ctx.log, pandaid=by_id[job_id]["pandaid"], ce=name).info(
            "reconciled: not at the CE, back to tosubmit"
        )
    if waiting:
        ctx.log.info(
            "ce=%s: %d job(s) in submitting not listed by the CE yet: asked again next cycle",
            name,
            len(waiting),
        )
        _release(ctx, waiting)


def _next_check(ctx: Context, now: datetime) -> datetime:
    return now + seconds(ctx.settings.engine.poll.submitted)


def _mark_submitted(
    conn: Connection, ctx: Context, accepted: dict[int, str], now: datetime, reason: str
) -> list[int]:
    """Move the ``accepted`` jobs (id -> CE job id) this instance claims from submitting to
    submitted with their CE job ids; returns the ids moved."""
    moved = transition(
        conn,
        CE_LAYER,
        list(accepted),
        CEJobState.SUBMITTING,
        CEJobState.SUBMITTED,
        actor=ME,
        reason=reason,
        owner=ctx.owner,
        values={
            "submitted_at": now,
            "next_check_at": _next_check(ctx, now),
            "error_text": None,  # an earlier CE's transient error no longer applies
        },
    )
    _set_each(conn, {job_id: {"ce_job_id": accepted[job_id]} for job_id in moved})
    return moved


# ---------------------------------------------------------------------------------------------
# 2. Resubmission and 3. rerun


def resubmit(ctx: Context, engine: EnginePool) -> None:
    """Clean the old CE job of ``toresubmit`` jobs, then submit them again (or fail them)."""
    rows = _claim(ctx, CEJobState.TORESUBMIT)
    for name, group in ctx.until_stopped(list(_by_ce(rows).items()), "CE(s) to resubmit from"):
        cleaned: list[dict[str, Any]] = []
        with_id = [row for row in group if row["ce_job_id"]]
        cleaned.extend(row for row in group if not row["ce_job_id"])
        found = _ce_and_backend(ctx, engine, name) if with_id else None
        if with_id and found is None:
            ctx.log.warning(
                "ce=%s: not configured or no usable back end: %d old CE job(s) cannot be cleaned",
                name,
                len(with_id),
            )
            cleaned.extend(with_id)
        elif with_id and found is not None:
            ce, backend = found
            try:
                outcomes = backend.clean(ce, [str(row["ce_job_id"]) for row in with_id])
            except CEUnavailable as down:
                ctx.log.warning(
                    "ce=%s: cannot clean %d job(s) to resubmit: %s", name, len(with_id), down.cause
                )
                _release(ctx, [row["id"] for row in with_id])
                with_id = []
                outcomes = {}
            for row in with_id:
                outcome = outcomes.get(str(row["ce_job_id"]))
                if outcome is not None and (outcome.ok or outcome.gone):
                    cleaned.append(row)
                else:
                    why = outcome.error if outcome is not None else "no answer for this job"
                    job_log(ctx.log, pandaid=row["pandaid"], ce=name).warning(
                        "old CE job %s not cleaned (%s): resubmission waits",
                        row["ce_job_id"],
                        why,
                    )
                    _release(ctx, [row["id"]])
        _requeue(ctx, name, cleaned)


def _requeue(ctx: Context, name: str, rows: list[dict[str, Any]]) -> None:
    """``toresubmit -> tosubmit`` with one attempt less, or ``-> failed`` with none left.

    ``attempts_left`` counts the submissions a job may still have, the current one included.
    """
    again = [row for row in rows if int(row["attempts_left"]) > 1]
    spent = [row for row in rows if int(row["attempts_left"]) <= 1]

    def record(conn: Connection) -> tuple[list[int], list[int]]:
        moved = transition(
            conn,
            CE_LAYER,
            [row["id"] for row in again],
            CEJobState.TORESUBMIT,
            CEJobState.TOSUBMIT,
            actor=ME,
            reason="old CE job cleaned",
            owner=ctx.owner,
            values={"attempts_left": ce_jobs.c.attempts_left - 1, "ce_job_id": None},
        )
        excluded = {row["id"]: _with_excluded(row["excluded"], name) for row in again}
        _set_each(conn, {job_id: {"excluded": excluded[job_id]} for job_id in moved})
        failed = transition(
            conn,
            CE_LAYER,
            [row["id"] for row in spent],
            CEJobState.TORESUBMIT,
            CEJobState.FAILED,
            actor=ME,
            reason="no attempts left",
            owner=ctx.owner,
            values={"error_text": "no submission attempts left"},
        )
        return moved, failed

    moved, failed = ctx.db.run(record)
    by_id = {row["id"]: row for row in rows}
    for job_id in moved:
        job_log(ctx.log, pandaid=by_id[job_id]["pandaid"], ce=name).info(
            "to be submitted again (%d attempt(s) left)", int(by_id[job_id]["attempts_left"]) - 1
        )
    for job_id in failed:
        job_log(ctx.log, pandaid=by_id[job_id]["pandaid"], ce=name).warning(
            "failed: no submission attempts left"
        )


def rerun(ctx: Context, engine: EnginePool) -> None:
    """Ask the CE to restart ``torerun`` jobs: ``submitted`` if it did, ``failed`` if it refused."""
    rows = _claim(ctx, CEJobState.TORERUN)
    for name, group in ctx.until_stopped(list(_by_ce(rows).items()), "CE(s) to rerun at"):
        _rerun_ce(ctx, engine, name, group)


def _rerun_ce(ctx: Context, engine: EnginePool, name: str, group: list[dict[str, Any]]) -> None:
    found = _ce_and_backend(ctx, engine, name)
    outcomes: dict[str, Any] = {}
    if found is not None:
        ce, backend = found
        try:
            with_id = [str(row["ce_job_id"]) for row in group if row["ce_job_id"]]
            outcomes = backend.restart(ce, with_id) if with_id else {}
        except CEUnavailable as error:
            ctx.log.warning("ce=%s: cannot restart %d job(s): %s", name, len(group), error.cause)
            _release(ctx, [row["id"] for row in group])
            return
    now = utcnow()
    restarted = [
        row["id"] for row in group if row["ce_job_id"] and _ok(outcomes.get(str(row["ce_job_id"])))
    ]
    refused: dict[int, str] = {}
    for row in group:
        if row["id"] in restarted:
            continue
        outcome = outcomes.get(str(row["ce_job_id"]))
        if not row["ce_job_id"]:
            refused[row["id"]] = "no CE job to restart"
        elif found is None:
            refused[row["id"]] = f"CE {name!r} is not configured or has no usable back end"
        elif outcome is None:
            refused[row["id"]] = "the CE gave no answer for this job"
        elif outcome.gone:
            refused[row["id"]] = "the CE no longer knows the job"
        else:
            refused[row["id"]] = _short(outcome.error)

    def record(conn: Connection) -> tuple[list[int], list[int]]:
        moved = transition(
            conn,
            CE_LAYER,
            restarted,
            CEJobState.TORERUN,
            CEJobState.SUBMITTED,
            actor=ME,
            reason="CE restarted the job",
            owner=ctx.owner,
            values={"next_check_at": _next_check(ctx, now)},
        )
        failed = transition(
            conn,
            CE_LAYER,
            list(refused),
            CEJobState.TORERUN,
            CEJobState.FAILED,
            actor=ME,
            reason="CE refused the restart",
            owner=ctx.owner,
        )
        _set_each(conn, {job_id: {"error_text": refused[job_id]} for job_id in failed})
        return moved, failed

    moved, failed = ctx.db.run(record)
    by_id = {row["id"]: row for row in group}
    for job_id in moved:
        job_log(ctx.log, pandaid=by_id[job_id]["pandaid"], ce=name).info("restarted at the CE")
    for job_id in failed:
        job_log(ctx.log, pandaid=by_id[job_id]["pandaid"], ce=name).warning(
            "restart refused: %s", refused[job_id]
        )


def _ok(outcome: Any) -> bool:
    return outcome is not None and bool(outcome.ok)


# ---------------------------------------------------------------------------------------------
# 4. Submission


@dataclass
class Budget:
    """What one CE may still take this cycle."""

    ce: CE
    row: Mapping[str, Any]
    left: int
    probe: bool = False
    assigned: list[dict[str, Any]] = field(default_factory=list)


def _counts(conn: Connection, names: Sequence[str]) -> dict[str, Counter[str]]:
    states = [*QUEUED_STATES, *RUNNING_STATES]
    stmt = (
        sa.select(ce_jobs.c.ce_endpoint, ce_jobs.c.state, sa.func.count())
        .where(ce_jobs.c.ce_endpoint.in_(list(names)), ce_jobs.c.state.in_(states))
        .group_by(ce_jobs.c.ce_endpoint, ce_jobs.c.state)
    )
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for name, state, number in conn.execute(stmt):
        counts[str(name)][str(state)] = int(number)
    return counts


def budgets(
    ctx: Context, engine: EnginePool, now: datetime
) -> tuple[dict[str, Budget], dict[str, str]]:
    """Each configured CE's room this cycle, and why the others have none."""
    settings = ctx.settings.engine

    def read(conn: Connection) -> tuple[list[dict[str, Any]], dict[str, Counter[str]]]:
        breaker.sync_ces(conn, settings.ces, now=now)
        rows = [
            dict(row)
            for row in conn.execute(
                sa.select(ces).where(ces.c.endpoint.in_(list(settings.ces)))
            ).mappings()
        ]
        return rows, _counts(conn, list(settings.ces))

    rows, counts = ctx.db.run(read)
    room: dict[str, Budget] = {}
    closed: dict[str, str] = {}
    for row in rows:
        name = str(row["endpoint"])
        ce = engine.ce(name)
        admission = breaker.admits(row, now=now, settings=settings.breaker)
        if not admission.ok:
            closed[name] = admission.reason
            continue
        try:
            engine.backend(ce)  # made once and kept; a CE whose back end cannot be made gets none
        except Exception as error:
            closed[name] = f"its back end cannot be made ({error})"
            continue
        queued = sum(counts[name][state] for state in QUEUED_STATES)
        running = sum(counts[name][state] for state in RUNNING_STATES)
        max_queued = row["max_queued"] if row["max_queued"] is not None else ce.settings.max_queued
        max_running = (
            row["max_running"] if row["max_running"] is not None else ce.settings.max_running
        )
        left = min(ce.settings.max_per_cycle, int(max_queued) - queued)
        if max_running is not None:
            left = min(left, int(max_running) - running)
        last = row["last_submit_at"]
        if left <= 0:
            closed[name] = (
                f"full ({queued} queued of {max_queued}"
                + (f", {running} running of {max_running}" if max_running is not None else "")
                + ")"
            )
            continue
        if last is not None and now < last + seconds(ce.settings.min_spacing):
            closed[name] = f"last batch less than {ce.settings.min_spacing:g}s ago"
            continue
        if admission.probe:
            left = 1
        room[name] = Budget(ce, row, left, probe=admission.probe)
    return room, closed


def assign(
    rows: Sequence[dict[str, Any]],
    room: Mapping[str, Budget],
    closed: Mapping[str, str],
    chooser: strategies.Chooser,
    configured: Mapping[str, Any],
) -> dict[str, int]:
    """Give each job a CE with room (filling ``Budget.assigned``); returns why others wait."""
    waiting: Counter[str] = Counter()
    for row in rows:
        candidates = strategies.names(row["candidates"]) or strategies.names(row["ce_endpoint"])
        known = [name for name in candidates if name in configured]
        if not known:
            waiting["no configured candidate CE"] += 1
            continue
        available = {name for name, budget in room.items() if budget.left > 0}
        choices = strategies.eligible(known, strategies.names(row["excluded"]), available)
        if not choices:
            allowed = strategies.allowed(known, strategies.names(row["excluded"]))
            reasons = sorted(
                {f"{name}: {closed.get(name, 'no room left this cycle')}" for name in allowed}
            )
            waiting["; ".join(reasons)] += 1
            continue
        weights = {
            name: strategies.weight_of(
                room[name].row["success_score"], room[name].ce.settings.weight
            )
            for name in choices
        }
        name = chooser.choose(choices, weights)
        room[name].left -= 1
        room[name].assigned.append(row)
    return dict(waiting)


def _chooser(ctx: Context) -> strategies.Chooser:
    strategy = ctx.settings.engine.strategy
    found = ctx.cache.get("submitter_chooser")
    if not isinstance(found, strategies.Chooser) or found.strategy != strategy:
        found = strategies.Chooser(strategy)
        ctx.cache["submitter_chooser"] = found
    return found


def submit(ctx: Context, engine: EnginePool) -> bool:
    """Submit ``tosubmit`` jobs; returns whether a full batch was claimed (more may wait)."""
    rows = _claim(ctx, CEJobState.TOSUBMIT)
    if not rows:
        return False
    now = utcnow()
    room, closed = budgets(ctx, engine, now)
    waiting = assign(rows, room, closed, _chooser(ctx), ctx.settings.engine.ces)
    assigned = {row["id"] for budget in room.values() for row in budget.assigned}
    _release(ctx, [row["id"] for row in rows if row["id"] not in assigned])
    for reason, number in sorted(waiting.items()):
        ctx.log.info("%d job(s) stay tosubmit: %s", number, reason)
    for _name, budget in ctx.until_stopped(sorted(room.items()), "CE(s) to submit to"):
        if budget.assigned:
            _submit_to(ctx, engine.backend(budget.ce), budget)
    # More may wait, but only worth an immediate cycle if jobs could be placed at all.
    return len(rows) >= ctx.daemon.batch and bool(assigned)


def _submit_to(ctx: Context, backend: Backend, budget: Budget) -> None:
    ce = budget.ce
    limits = backend.limits(ce)
    size = max(1, limits.submit_batch)
    jobs = budget.assigned
    for start in range(0, len(jobs), size):
        batch = jobs[start : start + size]
        if start > 0 and ctx.stop.wait(ce.settings.min_spacing):
            _release(ctx, [row["id"] for row in jobs[start:]])  # stopping: hand the rest back
            return
        if not _submit_batch(ctx, backend, ce, batch, probe=budget.probe):
            _release(ctx, [row["id"] for row in jobs[start + size :]])
            return


def _submit_batch(
    ctx: Context, backend: Backend, ce: CE, batch: list[dict[str, Any]], *, probe: bool
) -> bool:
    """Steps (1) to (3) for one batch; returns False when the CE should get no more now."""
    name = ce.name
    tokens = {row["id"]: secrets.token_hex(16) for row in batch}
    now = utcnow()

    def intent(conn: Connection) -> list[int] | None:
        # Take this CE's submission slot: only if no batch (of any submitter process) went to
        # it within min_spacing. The row lock also serialises concurrent submitters here.
        spacing = max(0.0, ce.settings.min_spacing - SPACING_SLACK)
        slot = conn.execute(
            sa.update(ces)
            .where(
                ces.c.endpoint == name,
                sa.or_(
                    ces.c.last_submit_at.is_(None),
                    ces.c.last_submit_at <= now - seconds(spacing),
                ),
            )
            .values(last_submit_at=now)
        )
        if slot.rowcount != 1:
            return None
        moved = transition(
            conn,
            CE_LAYER,
            list(tokens),
            CEJobState.TOSUBMIT,
            CEJobState.SUBMITTING,
            actor=ME,
            reason=f"to {name}",
            owner=ctx.owner,
            release=False,
            values={"ce_endpoint": name, "submissions": ce_jobs.c.submissions + 1},
        )
        _set_each(conn, {job_id: {"token": tokens[job_id]} for job_id in moved})
        claims.renew(conn, CE_LAYER, ctx.owner, ctx.daemon.lease, moved)
        if probe and moved:
            breaker.start_probe(conn, name, moved[0], now=now)
        return moved

    taken = ctx.db.run(intent)
    if taken is None:
        ctx.log.info(
            "ce=%s: another batch went to this CE less than %gs ago: %d job(s) wait",
            name,
            ce.settings.min_spacing,
            len(batch),
        )
        _release(ctx, [row["id"] for row in batch])
        return False
    moved = set(taken)
    batch = [row for row in batch if row["id"] in moved]
    if not batch:
        return True
    maybe_crash("submitter:after-intent")
    requests = [
        SubmitRequest(
            job_id=row["id"],
            token=tokens[row["id"]],
            description=str(row["description"] or ""),
            input_dir=Path(row["input_dir"]) if row["input_dir"] else None,
            pandaid=row["pandaid"],
        )
        for row in batch
    ]
    try:
        results = backend.submit(ce, requests)
    except CEUnavailable as error:
        if not error.maybe_sent:
            _unavailable(ctx, ce, batch, error)
            return False
        found = _after_lost_reply(ctx, backend, ce, batch, tokens=tokens, error=error)
        if found is None:
            return False
        batch, results = found
    except Exception:
        # Nothing is known about what the CE did: leave the jobs in submitting and hand back
        # their claims; the next cycle's reconciliation asks the CE for their tokens.
        ctx.log.exception("ce=%s: submission of %d job(s) failed unexpectedly", name, len(batch))
        _release(ctx, [row["id"] for row in batch])
        return False
    maybe_crash("submitter:after-submit")
    return _record(ctx, ce, batch, results)


def _after_lost_reply(
    ctx: Context,
    backend: Backend,
    ce: CE,
    batch: list[dict[str, Any]],
    *,
    tokens: Mapping[int, str],
    error: CEUnavailable,
) -> tuple[list[dict[str, Any]], list[Submitted]] | None:
    """The submit call failed in a way that may come after the CE took the jobs (a reply lost):
    ask the CE which tokens it has. Returns the part of the batch whose outcome is known, with
    the outcomes; the rest stays in ``submitting`` (claims handed back) for reconciliation, so
    that no job is sent twice. None when nothing is known."""
    name = ce.name
    lag = backend.limits(ce).find_lag
    try:
        known = backend.find(ce, [tokens[row["id"]] for row in batch])
    except CEUnavailable as find_error:
        now = utcnow()
        ctx.db.run(
            lambda conn: breaker.record_failure(
                conn, name, error=error.cause, now=now, settings=ctx.settings.engine.breaker
            )
        )
        ctx.log.warning(
            "ce=%s: submission reply lost (%s) and the CE cannot be asked (%s): %d job(s) left "
            "in submitting for reconciliation",
            name,
            error.cause,
            find_error.cause,
            len(batch),
        )
        _release(ctx, [row["id"] for row in batch])
        return None
    waiting = [] if lag <= 0 else [row for row in batch if tokens[row["id"]] not in known]
    ctx.log.warning(
        "ce=%s: submission reply lost (%s); the CE has %d of %d job(s)%s",
        name,
        error.cause,
        len(known),
        len(batch),
        f", {len(waiting)} left in submitting until the CE lists them or {lag:g}s pass"
        if waiting
        else "",
    )
    for row in waiting:
        job_log(ctx.log, pandaid=row["pandaid"], ce=name).info(
            "not yet listed by the CE after a lost submission reply: left in submitting"
        )
    _release(ctx, [row["id"] for row in waiting])
    left = {row["id"] for row in waiting}
    decided = [row for row in batch if row["id"] not in left]
    results = [
        Submitted(row["id"], known[tokens[row["id"]]])
        if tokens[row["id"]] in known
        else Submitted(row["id"], None, f"submission reply lost: {error.cause}")
        for row in decided
    ]
    return decided, results


def _unavailable(ctx: Context, ce: CE, batch: list[dict[str, Any]], error: CEUnavailable) -> None:
    name = ce.name
    now = utcnow()

    def record(conn: Connection) -> tuple[list[int], str]:
        back = transition(
            conn,
            CE_LAYER,
            [row["id"] for row in batch],
            CEJobState.SUBMITTING,
            CEJobState.TOSUBMIT,
            actor=ME,
            reason=f"CE unavailable: {error.cause}"[:ERROR_LEN],
            owner=ctx.owner,
        )
        excluded = {row["id"]: _with_excluded(row["excluded"], name) for row in batch}
        _set_each(conn, {job_id: {"excluded": excluded[job_id]} for job_id in back})
        state = breaker.record_failure(
            conn, name, error=error.cause, now=now, settings=ctx.settings.engine.breaker
        )
        return back, state

    back, state = ctx.db.run(record)
    ctx.log.warning(
        "ce=%s: unavailable (%s): %d job(s) back to tosubmit for another CE; breaker %s",
        name,
        error.cause,
        len(back),
        state,
    )


def _record(
    ctx: Context, ce: CE, batch: list[dict[str, Any]], results: Sequence[Submitted]
) -> bool:
    name = ce.name
    now = utcnow()
    by_id = {row["id"]: row for row in batch}
    accepted: dict[int, str] = {}
    transient: dict[int, str] = {}
    permanent: dict[int, str] = {}
    answered = {result.job_id: result for result in results if result.job_id in by_id}
    for job_id in by_id:
        result = answered.get(job_id)
        if result is None:
            transient[job_id] = "the back end gave no result for this job"
        elif result.ce_job_id and not result.error:
            accepted[job_id] = result.ce_job_id
        elif result.permanent:
            permanent[job_id] = _short(result.error)
        else:
            transient[job_id] = _short(result.error)

    def record(conn: Connection) -> tuple[list[int], list[int], list[int], str]:
        done = _mark_submitted(conn, ctx, accepted, now, "CE accepted the job")
        again = transition(
            conn,
            CE_LAYER,
            list(transient),
            CEJobState.SUBMITTING,
            CEJobState.TOSUBMIT,
            actor=ME,
            reason="submission failed at this CE",
            owner=ctx.owner,
        )
        _set_each(
            conn,
            {
                job_id: {
                    "excluded": _with_excluded(by_id[job_id]["excluded"], name),
                    "error_text": transient[job_id],
                }
                for job_id in again
            },
        )
        failed = transition(
            conn,
            CE_LAYER,
            list(permanent),
            CEJobState.SUBMITTING,
            CEJobState.FAILED,
            actor=ME,
            reason="CE rejected the job description",
            owner=ctx.owner,
        )
        _set_each(conn, {job_id: {"error_text": permanent[job_id]} for job_id in failed})
        if accepted:
            state = breaker.record_success(conn, name, now=now)
        elif transient:
            first = next(iter(transient.values()))
            state = breaker.record_failure(
                conn, name, error=first, now=now, settings=ctx.settings.engine.breaker
            )
        else:
            state = str(
                conn.execute(sa.select(ces.c.breaker).where(ces.c.endpoint == name)).scalar()
            )
        return done, again, failed, state

    done, again, failed, state = ctx.db.run(record)
    lost = set(by_id) - set(done) - set(again) - set(failed)
    for job_id in done:
        job_log(ctx.log, pandaid=by_id[job_id]["pandaid"], ce=name).info(
            "submitted as %s", accepted[job_id]
        )
    for job_id in again:
        job_log(ctx.log, pandaid=by_id[job_id]["pandaid"], ce=name).warning(
            "submission failed, will try another CE: %s", transient[job_id]
        )
    for job_id in failed:
        job_log(ctx.log, pandaid=by_id[job_id]["pandaid"], ce=name).error(
            "rejected by the CE: %s", permanent[job_id]
        )
    for job_id in sorted(lost):
        job_log(ctx.log, pandaid=by_id[job_id]["pandaid"], ce=name).error(
            "claim lost while submitting (lease too short?): left to reconciliation"
        )
    return state == breaker.CLOSED or bool(accepted)


# ---------------------------------------------------------------------------------------------


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
