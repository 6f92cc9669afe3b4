"""actctl's commands that change PanDA jobs: ``kill``, ``resubmit`` and ``retry``.

Each selects jobs by PanDA id and/or a filter (``--queue``, ``--ce``, ``--state``,
``--older-than``; ids and filters combine), never "all jobs": an empty selection is refused.

* ``kill``: an active job (received ... toresubmit) → ``tobekilled``. app_status then asks the
  canceller to kill its CE jobs and moves it to ``cancelled``; the propagator sends PanDA the
  final ``failed`` with ``cancel_error_code``/``cancel_error_diag`` and moves it to
  ``donecancelled``.
* ``resubmit``: a queued/running/transferring/tovalidate job → ``toresubmit``; its CE jobs that
  may still run are moved to ``tocancel`` in the same transaction (nothing else would stop
  them), and the translator makes a new CE job.
* ``retry``: a ``failed`` job whose final report PanDA has not accepted yet → ``toresubmit``
  (its stored report and error are cleared: the next attempt reports afresh).

A resubmission or retry is a try of the job's one retry budget (``engine.attempts``,
:mod:`act.engine.resubmit`): a job that has spent it fails again at once ("no attempts left").

A job another daemon holds a claim on right now (the propagator sending its report, the
validator checking it, ...) is skipped, as is one that changed state since it was selected; the
output says so per job and the command can simply be run again. ``--dry-run`` shows what would
move and changes nothing; more than one job needs ``--yes`` or a "y" at the prompt (without a
terminal, actctl refuses). The transitions carry actor ``operator`` and the reason
``by <who>: <why>``; one ``operator_actions`` row records the command (:mod:`act.ctl.audit`).
"""

from __future__ import annotations

import os
import socket
import sys
from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import click
from sqlalchemy.engine import Connection

from act.atlas.queries import stored_panda_ids
from act.common import exitcodes
from act.common.claims import claim
from act.common.schema import panda_jobs
from act.common.states import (
    P_ACTIVE,
    P_LIVE,
    Actor,
    CEJobState,
    Layer,
    PandaJobState,
    in_table_order,
)
from act.common.timeutil import utcnow
from act.common.transitions import chunked, transition
from act.ctl import audit, durations, output
from act.ctl.job_selection import SelectedJob, jobs_now, matching_jobs, running_ce_jobs
from act.ctl.options import json_flag
from act.ctl.queries import Row

#: How long the command's own claim may live (it is released in the same transaction).
LEASE = 60.0


@dataclass(frozen=True)
class Command:
    name: str
    to_state: str
    sources: tuple[str, ...]  # the PanDA states it moves jobs from
    done: str  # what happened to a moved job, for the output
    help: str


def _ordered(states: Collection[str]) -> tuple[str, ...]:
    """PanDA states as their values, in the order of the state table (for options and output)."""
    return tuple(str(state) for state in in_table_order(Layer.PANDA, states))


KILL = Command(
    "kill",
    PandaJobState.TOBEKILLED,
    _ordered(P_ACTIVE),
    "to be killed",
    "Kill PanDA jobs: their CE jobs are cancelled and PanDA is told they failed.",
)
RESUBMIT = Command(
    "resubmit",
    PandaJobState.TORESUBMIT,
    _ordered({*P_LIVE, PandaJobState.TOVALIDATE}),
    "to be resubmitted",
    "Resubmit PanDA jobs: their CE jobs are cancelled and a new CE job is made.",
)
RETRY = Command(
    "retry",
    PandaJobState.TORESUBMIT,
    _ordered({PandaJobState.FAILED}),
    "to be retried",
    "Retry failed PanDA jobs whose final report PanDA has not accepted yet.",
)
COMMANDS = (KILL, RESUBMIT, RETRY)


@dataclass(frozen=True)
class Selection:
    """Which jobs a command is about: ids and/or filters, all of which must match."""

    panda_ids: tuple[int, ...] = ()
    queue: str | None = None
    ce: str | None = None
    states: tuple[str, ...] = ()
    older_than: timedelta | None = None

    def empty(self) -> bool:
        return not (self.panda_ids or self.queue or self.ce or self.states or self.older_than)

    def describe(self) -> str:
        """The filter as text (``queue=X state=running``), for the record's target."""
        parts = []
        if self.panda_ids:
            parts.append("panda_id=" + ",".join(str(p) for p in self.panda_ids))
        if self.queue is not None:
            parts.append(f"queue={self.queue}")
        if self.ce is not None:
            parts.append(f"ce={self.ce}")
        if self.states:
            parts.append("state=" + ",".join(self.states))
        if self.older_than is not None:
            parts.append(f"older_than={int(self.older_than.total_seconds())}s")
        return " ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {
            "panda_ids": list(self.panda_ids),
            "queue": self.queue,
            "ce": self.ce,
            "states": list(self.states),
            "older_than_seconds": (
                None if self.older_than is None else self.older_than.total_seconds()
            ),
        }


@dataclass
class Found:
    """The jobs a selection matches: those the command may move, and the ids it may not."""

    movable: list[SelectedJob]
    others: list[SelectedJob]  # ids asked for by number, in a state the command does not move
    unknown: list[int]  # ids asked for that no PanDA job has


def select(conn: Connection, command: Command, selection: Selection) -> Found:
    """The jobs ``selection`` matches, oldest first, with their newest CE job's endpoint."""
    changed_before = None
    if selection.older_than is not None:
        changed_before = utcnow() - selection.older_than
    states = list(selection.states or command.sources)
    found = matching_jobs(
        conn,
        panda_ids=selection.panda_ids or None,
        states=None if selection.panda_ids else states,
        queue=selection.queue,
        ce=selection.ce,
        changed_before=changed_before,
    )
    if not selection.panda_ids:
        return Found(found, [], [])
    movable = [job for job in found if job.state in states]
    others = [job for job in found if job.state not in states]
    seen = {job.panda_id for job in found}
    # Ids that exist but fail another filter are simply not selected; unknown ids are told.
    known = stored_panda_ids(conn, sorted(set(selection.panda_ids) - seen))
    return Found(movable, others, sorted(set(selection.panda_ids) - seen - known))


def _values(command: Command, who: str, reason: str) -> dict[str, Any]:
    """The columns set with the move, besides the state."""
    now = utcnow()
    if command is KILL:
        return {"error_text": f"killed by operator {who}: {reason}"[:2000]}
    fresh: dict[str, Any] = {
        "report": None,
        "next_report_at": now,
        "validate_after": None,
        "validation_deferrals": 0,
    }
    if command is RETRY:
        fresh.update(error_code=None, error_text=None, report_failures=0)
    return fresh


def apply(
    conn: Connection,
    command: Command,
    rows: Sequence[SelectedJob],
    *,
    who: str,
    reason: str,
    selection: Selection,
) -> list[Row]:
    """Move the selected jobs (one transaction with the record); one result per job.

    Each job moves only if it is still in the state it was selected in and no other process
    holds a claim on it: the command claims the rows itself (as the janitor does), which skips
    rows claimed by others, then moves what it holds with a compare-and-set.
    """
    owner = f"actctl:{socket.gethostname()}:{os.getpid()}"
    why = f"by {who}: {reason}"
    values = _values(command, who, reason)
    by_state: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        by_state[row.state].append(row.id)
    moved: set[int] = set()
    for state, ids in by_state.items():
        for chunk in chunked(sorted(ids)):
            held = claim(
                conn,
                Layer.PANDA,
                [state],
                owner=owner,
                lease=LEASE,
                limit=len(chunk),
                where=[panda_jobs.c.id.in_(chunk)],
            )
            moved.update(
                transition(
                    conn, Layer.PANDA, held, state, command.to_state, actor=Actor.OPERATOR,
                    reason=why, owner=owner, values=values,
                )
            )  # fmt: skip
    cancelled = _cancel_ce_jobs(conn, sorted(moved), why) if command is RESUBMIT else 0
    results = _results(conn, command, rows, moved)
    if moved:
        panda_ids = [r["panda_id"] for r in results if r["result"] == "moved"]
        target = f"job:{panda_ids[0]}" if len(rows) == 1 else f"jobs:{selection.describe()}"
        details: dict[str, Any] = {
            "filter": selection.as_json(),
            "panda_ids": panda_ids,
            "moved": len(panda_ids),
            "skipped": len(rows) - len(panda_ids),
        }
        if command is RESUBMIT:
            details["ce_jobs_cancelled"] = cancelled
        audit.record(
            conn, who=who, command=command.name, target=target, reason=reason, details=details
        )
    return results


def _cancel_ce_jobs(conn: Connection, panda_ids: list[int], why: str) -> int:
    """The resubmitted jobs' CE jobs that may still run → ``tocancel``; how many moved."""
    by_state: dict[str, list[int]] = defaultdict(list)
    for ce_job in running_ce_jobs(conn, panda_ids):
        by_state[ce_job.state].append(ce_job.id)
    total = 0
    for state, ids in by_state.items():
        total += len(
            transition(
                conn, Layer.CE, ids, state, CEJobState.TOCANCEL, actor=Actor.OPERATOR,
                reason=f"{why} (PanDA job resubmitted)", release=False,
            )
        )  # fmt: skip
    return total


def _results(
    conn: Connection, command: Command, rows: Sequence[SelectedJob], moved: set[int]
) -> list[Row]:
    """Per job: moved, or skipped with the reason (changed state, or claimed by another)."""
    now_state = jobs_now(conn, [row.id for row in rows if row.id not in moved])
    results = []
    for row in rows:
        result = _shown(row)
        if row.id in moved:
            result.update(result="moved", to_state=command.to_state, why=None)
        else:
            current = now_state.get(row.id)
            if current is None or current.state != row.state:
                state = "gone" if current is None else current.state
                why = f"changed state meanwhile (now {state})"
            else:
                why = f"busy: claimed by {current.lease_owner}, try again later"
            result.update(result="skipped", to_state=None, why=why)
        results.append(result)
    return results


def _shown(row: SelectedJob) -> Row:
    """The job as actctl shows it (``panda_id`` is the PanDA id)."""
    return {
        "panda_id": row.panda_id,
        "state": row.state,
        "queue": row.queue,
        "ce": row.ce,
        "state_changed_at": row.state_changed_at,
    }


def _ineligible(command: Command, found: Found, states: Sequence[str]) -> list[Row]:
    rows = []
    wanted = " ".join(states or command.sources)
    for row in found.others:
        why = f"{row.state} is not a state {command.name} moves here ({wanted})"
        rows.append({**_shown(row), "result": "skipped", "to_state": None, "why": why})
    for panda_id in found.unknown:
        rows.append(
            {
                "panda_id": panda_id,
                "state": None,
                "queue": None,
                "ce": None,
                "state_changed_at": None,
                "result": "not found",
                "to_state": None,
                "why": "no such PanDA job",
            }
        )
    return rows


PLAN_COLUMNS = ("panda_id", "state", "queue", "ce", "state_changed_at")
RESULT_COLUMNS = ("panda_id", "state", "queue", "ce", "result")


def plan_text(rows: Sequence[SelectedJob]) -> str:
    shown = [_shown(row) for row in rows]
    return output.table([[row[c] for c in PLAN_COLUMNS] for row in shown], PLAN_COLUMNS)


def results_text(rows: Sequence[Row]) -> str:
    cells = []
    for row in rows:
        if row["result"] == "moved":
            what = f"moved -> {row['to_state']}"
        else:
            what = f"{row['result']}: {row['why']}"
        cells.append([row["panda_id"], row["state"], row["queue"], row["ce"], what])
    return output.table(cells, RESULT_COLUMNS)


def interactive() -> bool:
    """Whether a person can answer a prompt (tests replace this)."""
    return sys.stdin.isatty()


def register(cli: click.Group, pass_app: Callable[..., Any], failure: type[Exception]) -> None:
    """Add ``kill``, ``resubmit`` and ``retry`` to actctl's top-level group."""
    for command in COMMANDS:
        _register_one(cli, pass_app, failure, command)


def _register_one(
    cli: click.Group, pass_app: Callable[..., Any], failure: type[Exception], command: Command
) -> None:
    @cli.command(command.name, help=_help(command))
    @click.argument("panda_ids", nargs=-1, type=int)
    @click.option("--queue", help="Only jobs of this PanDA queue.")
    @click.option("--ce", help="Only jobs whose newest CE job is on this CE.")
    @click.option(
        "--state",
        "states",
        multiple=True,
        type=click.Choice([str(state) for state in command.sources]),
        help="Only jobs in this state (repeat for several).",
    )
    @click.option(
        "--older-than",
        type=durations.Duration(),
        help="Only jobs in their state for longer than this (30m, 2h, 1d).",
    )
    @click.option("--reason", required=True, help="Why (recorded, and in the jobs' history).")
    @click.option("--who", default=None, help="Who decides (default: the OS user).")
    @click.option("--dry-run", is_flag=True, help="Show what would change; change nothing.")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask before changing several jobs.")
    @json_flag("tables")
    @pass_app
    def run(
        app: Any,
        *,
        panda_ids: tuple[int, ...],
        queue: str | None,
        ce: str | None,
        states: tuple[str, ...],
        older_than: timedelta | None,
        reason: str,
        who: str | None,
        dry_run: bool,
        yes: bool,
        as_json: bool,
    ) -> None:
        why = audit.check_reason(reason)
        selection = Selection(panda_ids, queue, ce, states, older_than)
        if selection.empty():
            raise click.UsageError(
                "give PanDA ids or a filter (--queue, --ce, --state, --older-than); "
                f"{command.name} never applies to all jobs"
            )
        person = audit.person(who)
        database = app.checked()
        with database.read() as conn:
            found = select(conn, command, selection)
        ineligible = _ineligible(command, found, states)
        if not found.movable:
            if as_json:
                click.echo(output.to_json(_report(command, person, why, dry_run, ineligible)))
            elif ineligible:
                click.echo(results_text(ineligible))
            raise failure(
                f"no job matches that {command.name} can move ({selection.describe()})",
                exitcodes.NOT_FOUND,
            )
        if dry_run:
            planned = [
                {**_shown(r), "result": "would move", "to_state": command.to_state, "why": None}
                for r in found.movable
            ]
            if as_json:
                report = _report(command, person, why, True, planned + ineligible)
                click.echo(output.to_json(report))
            else:
                click.echo(f"would move {len(planned)} job(s) to {command.to_state}:")
                click.echo(plan_text(found.movable))
                if ineligible:
                    click.echo(results_text(ineligible))
                click.echo("(dry run: nothing changed)")
            return
        count = len(found.movable)
        if count > 1 and not yes:
            if not interactive():
                raise failure(
                    f"{count} jobs match; add --yes to {command.name} them "
                    "(no terminal to ask on), or --dry-run to see them",
                    exitcodes.USAGE,
                )
            click.echo(plan_text(found.movable), err=True)
            if not click.confirm(f"{command.name} these {count} jobs?", err=True):
                raise failure("not confirmed: nothing changed", exitcodes.FAILURE)
        results = database.run(
            lambda conn: apply(
                conn, command, found.movable, who=person, reason=why, selection=selection
            )
        )
        every = results + ineligible
        moved = sum(1 for r in results if r["result"] == "moved")
        if as_json:
            click.echo(output.to_json(_report(command, person, why, False, every)))
        else:
            click.echo(results_text(every))
            click.echo(f"{moved} job(s) {command.done} (by {person}: {why})")
        if moved == 0:
            raise failure("no job was moved (see above)", exitcodes.NOT_FOUND)


def _report(
    command: Command, who: str, reason: str, dry_run: bool, jobs: list[Row]
) -> dict[str, Any]:
    return {
        "command": command.name,
        "to_state": command.to_state,
        "dry_run": dry_run,
        "who": who,
        "reason": reason,
        "moved": sum(1 for job in jobs if job["result"] == "moved"),
        "jobs": jobs,
    }


def _help(command: Command) -> str:
    return (
        f"{command.help}\n\n"
        f"Moves jobs in {', '.join(command.sources)} to {command.to_state}, chosen by PANDA_IDS "
        "and/or filters (all must match; at least one is needed). Several jobs need --yes or a "
        "confirmation. Exit 6 when nothing matches or nothing moved."
        + (
            ""
            if command is KILL
            else " A job that has spent its engine.attempts tries fails again at once."
        )
    )
