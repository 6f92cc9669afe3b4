"""Both layers' states and their allowed transitions, as data.

This module is the single source of truth: :func:`act.common.transitions.transition` refuses every
edge not listed here, and ``actctl states`` renders these tables (the README's table is generated
from them). States named ``to<action>`` are requests from one actor to another.

* The **PanDA layer** (``panda_jobs.state``) follows a PanDA job from the moment its spec is stored
  until PanDA has acknowledged its final report.
* The **CE layer** (``ce_jobs.state``) follows one job on a compute element, from the request to
  submit it until the CE has confirmed it was cleaned.

Each layer's states are an enum, :class:`PandaJobState` and :class:`CEJobState`, whose values are
the strings stored in the database; a member compares, hashes and prints as its value, so a value
read from the database can be passed wherever a member is. The groups of states that daemons and
actctl select on (``P_ACTIVE``, ``C_LIVE``, ...) are defined below and nowhere else, and no other
module spells a state (tests/test_state_vocabulary.py).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum


class Layer(str, Enum):
    PANDA = "panda"
    CE = "ce"


class Kind(str, Enum):
    WORK = "work"  # a daemon has something to do or to wait for
    REQUEST = "request"  # a to<action> request to another actor
    FINAL = "final"  # nothing more happens


class Actor(str, Enum):
    """Who may make a transition: daemon roles, plus the operator (actctl)."""

    PANDA_FETCHER = "panda_fetcher"  # gets jobs from PanDA
    TRANSLATOR = "translator"  # turns PanDA jobs into CE jobs
    APP_STATUS = "app_status"  # follows CE jobs on behalf of their PanDA job
    PROPAGATOR = "propagator"  # sends heartbeats and final reports to PanDA
    VALIDATOR = "validator"  # checks outputs on storage
    SUBMITTER = "submitter"
    POLLER = "poller"
    CE_FETCHER = "ce_fetcher"  # downloads outputs and diagnostics from the CE
    CANCELLER = "canceller"
    CLEANER = "cleaner"
    JANITOR = "janitor"  # applies the "stuck for too long" policies
    OPERATOR = "operator"  # a person, through actctl


class StateEnum(str, Enum):
    """A value act stores or sends as a string: it compares, hashes, prints and formats as one."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class PandaJobState(StateEnum):
    """``panda_jobs.state``: a PanDA job as act follows it (see :data:`STATES` for meanings)."""

    RECEIVED = "received"
    QUEUED = "queued"
    RUNNING = "running"
    TRANSFERRING = "transferring"
    TOVALIDATE = "tovalidate"
    TORESUBMIT = "toresubmit"
    TOBEKILLED = "tobekilled"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DONE = "done"
    DONEFAILED = "donefailed"
    DONECANCELLED = "donecancelled"


class CEJobState(StateEnum):
    """``ce_jobs.state``: one job on a compute element (see :data:`STATES` for meanings)."""

    TOSUBMIT = "tosubmit"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    RUNNING = "running"
    FINISHING = "finishing"
    FINISHED = "finished"
    FAILED = "failed"
    DONE = "done"
    DONEFAILED = "donefailed"
    LOST = "lost"
    TORERUN = "torerun"
    TORESUBMIT = "toresubmit"
    TOCANCEL = "tocancel"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    TOCLEAN = "toclean"
    CLEANED = "cleaned"


#: A state of either layer (plain ``str`` values read from the database are accepted too).
JobState = PandaJobState | CEJobState


@dataclass(frozen=True)
class State:
    name: JobState
    kind: Kind
    meaning: str


@dataclass(frozen=True)
class Edge:
    layer: Layer
    from_state: JobState | None  # None: the job is created in to_state
    to_state: JobState
    actors: frozenset[Actor]
    why: str


def _states(*rows: tuple[JobState, Kind, str]) -> dict[str, State]:
    return {name: State(name, kind, meaning) for name, kind, meaning in rows}


W, R, F = Kind.WORK, Kind.REQUEST, Kind.FINAL
PS, CS = PandaJobState, CEJobState

STATES: dict[Layer, dict[str, State]] = {
    Layer.PANDA: _states(
        (PS.RECEIVED, W, "job spec stored; no CE job yet"),
        (PS.QUEUED, W, "CE job made, not yet running (PanDA is told starting)"),
        (PS.RUNNING, W, "the CE job runs (PanDA is told running)"),
        (PS.TRANSFERRING, W, "payload ended, outputs being staged out (PanDA: transferring)"),
        (PS.TOVALIDATE, R, "CE job ended, outputs fetched: the validator decides the outcome"),
        (PS.TORESUBMIT, R, "CE job failed in a retryable way: a new CE job is to be made"),
        (PS.TOBEKILLED, R, "kill requested (PanDA command or operator): CE job being cancelled"),
        (PS.FINISHED, W, "outputs valid: final report due"),
        (PS.FAILED, W, "failed for good: final report due"),
        (PS.CANCELLED, W, "killed: final report due"),
        (PS.DONE, F, "PanDA has the final report (finished)"),
        (PS.DONEFAILED, F, "PanDA has the final report (failed)"),
        (PS.DONECANCELLED, F, "PanDA has the final report (cancelled), or wants none"),
    ),
    Layer.CE: _states(
        (CS.TOSUBMIT, R, "waiting for the submitter"),
        (CS.SUBMITTING, W, "being sent to the CE (reconciled with the CE after a crash)"),
        (CS.SUBMITTED, W, "accepted by the CE, waiting in its queue"),
        (CS.RUNNING, W, "running at the CE"),
        (CS.FINISHING, W, "payload ended; the CE stages outputs out"),
        (CS.FINISHED, W, "ended at the CE: outputs to fetch"),
        (CS.FAILED, W, "failed at the CE: diagnostics to fetch"),
        (CS.DONE, W, "outputs fetched"),
        (CS.DONEFAILED, W, "diagnostics of a failed job fetched"),
        (CS.LOST, W, "the CE no longer knows the job"),
        (CS.TORERUN, R, "ask the CE to restart the job (e.g. after a staging failure)"),
        (CS.TORESUBMIT, R, "clean the old CE job, then submit again"),
        (CS.TOCANCEL, R, "kill requested"),
        (CS.CANCELLING, W, "kill sent to the CE, waiting for confirmation"),
        (CS.CANCELLED, W, "killed, or never reached the CE"),
        (CS.TOCLEAN, R, "remove the job and its files from the CE"),
        (CS.CLEANED, F, "the CE confirmed the clean"),
    ),
}

A = Actor
#: The rules as written below, one per (edges, actors, reason); the documentation lists these.
RULES: list[Edge] = []


_States = JobState | Collection[JobState]


def _allow(
    layer: Layer, froms: _States | None, tos: _States, actors: tuple[Actor, ...], why: str
) -> None:
    """Allow every from-state in ``froms`` to every state in ``tos`` (a state or a collection)."""
    sources: list[JobState | None] = [None] if froms is None else [*_listed(layer, froms)]
    for source in sources:
        for target in _listed(layer, tos):
            RULES.append(Edge(layer, source, target, frozenset(actors), why))


def _listed(layer: Layer, states: _States) -> list[JobState]:
    """The states as a list (a set in table order), each checked to be of the layer's enum."""
    kind = PandaJobState if layer is Layer.PANDA else CEJobState
    if isinstance(states, Enum):
        listed = [states]
    elif isinstance(states, (tuple, list)):
        listed = list(states)
    else:
        listed = [s for s in kind if s in states]
    wrong = [s for s in listed if not isinstance(s, kind)]
    if wrong:
        raise TypeError(f"{layer.value}: not {kind.__name__} members: {wrong}")
    return listed


P, C = Layer.PANDA, Layer.CE
#: PanDA jobs not yet over and not being killed: PanDA may still tell act to kill them.
P_ACTIVE: frozenset[PandaJobState] = frozenset(
    {PS.RECEIVED, PS.QUEUED, PS.RUNNING, PS.TRANSFERRING, PS.TOVALIDATE, PS.TORESUBMIT}
)

_allow(P, None, PS.RECEIVED, (A.PANDA_FETCHER, A.OPERATOR), "job spec stored")
_allow(P, (PS.RECEIVED, PS.TORESUBMIT), PS.QUEUED, (A.TRANSLATOR,), "CE job made")
_allow(P, PS.RECEIVED, PS.FAILED, (A.TRANSLATOR,), "spec cannot be turned into a CE job")
_allow(P, PS.TORESUBMIT, PS.FAILED, (A.TRANSLATOR,), "no attempts left")
_allow(
    P, PS.QUEUED, (PS.RUNNING, PS.TRANSFERRING, PS.TOVALIDATE), (A.APP_STATUS,), "CE job progressed"
)
_allow(P, PS.RUNNING, PS.QUEUED, (A.APP_STATUS,), "CE job requeued")
_allow(P, PS.RUNNING, (PS.TRANSFERRING, PS.TOVALIDATE), (A.APP_STATUS,), "CE job progressed")
_allow(P, PS.TRANSFERRING, PS.TOVALIDATE, (A.APP_STATUS,), "CE job done and fetched")
_allow(
    P,
    (PS.QUEUED, PS.RUNNING, PS.TRANSFERRING),
    PS.FAILED,
    (A.APP_STATUS,),
    "CE job failed for good",
)
_allow(
    P,
    (PS.QUEUED, PS.RUNNING, PS.TRANSFERRING),
    PS.TORESUBMIT,
    (A.APP_STATUS,),
    "CE job failed, retryable",
)
_allow(
    P, (PS.QUEUED, PS.RUNNING, PS.TRANSFERRING), PS.TORESUBMIT, (A.OPERATOR,), "operator resubmits"
)
_allow(P, PS.TOVALIDATE, PS.FINISHED, (A.VALIDATOR,), "all outputs valid")
_allow(P, PS.TOVALIDATE, PS.DONE, (A.VALIDATOR,), "truepilot: logs published")
_allow(P, PS.TOVALIDATE, PS.FAILED, (A.VALIDATOR,), "outputs invalid or payload failed")
_allow(P, PS.TOVALIDATE, PS.TORESUBMIT, (A.VALIDATOR, A.OPERATOR), "output check failed, retryable")
_allow(P, PS.FAILED, PS.TORESUBMIT, (A.OPERATOR,), "operator retry: final report not yet accepted")
_allow(P, P_ACTIVE, PS.TOBEKILLED, (A.PROPAGATOR,), "PanDA command (tobekilled, ...)")
_allow(P, P_ACTIVE, PS.TOBEKILLED, (A.OPERATOR,), "operator kill")
_allow(P, P_ACTIVE, PS.TOBEKILLED, (A.JANITOR,), "stuck beyond its policy")
_allow(P, PS.TOBEKILLED, PS.CANCELLED, (A.APP_STATUS,), "CE job cancelled or never submitted")
_allow(P, PS.FINISHED, PS.DONE, (A.PROPAGATOR,), "final report accepted")
_allow(P, PS.FAILED, PS.DONEFAILED, (A.PROPAGATOR,), "final report accepted")
_allow(P, PS.CANCELLED, PS.DONECANCELLED, (A.PROPAGATOR,), "final report accepted or not wanted")

#: CE jobs the CE holds and runs (or is about to): the poller asks the CE about them.
C_LIVE: frozenset[CEJobState] = frozenset({CS.SUBMITTED, CS.RUNNING, CS.FINISHING})
_allow(C, None, CS.TOSUBMIT, (A.TRANSLATOR, A.OPERATOR), "CE job requested")
_allow(C, CS.TOSUBMIT, CS.SUBMITTING, (A.SUBMITTER,), "claimed for submission")
_allow(C, CS.SUBMITTING, CS.SUBMITTED, (A.SUBMITTER,), "CE accepted the job")
_allow(C, CS.SUBMITTING, CS.TOSUBMIT, (A.SUBMITTER,), "CE unreachable: try again, maybe elsewhere")
_allow(C, CS.SUBMITTING, CS.FAILED, (A.SUBMITTER,), "CE rejected the job description")
_allow(C, CS.SUBMITTED, CS.RUNNING, (A.POLLER,), "CE state")
_allow(C, CS.RUNNING, CS.SUBMITTED, (A.POLLER,), "requeued at the CE")
_allow(C, (CS.SUBMITTED, CS.RUNNING), CS.FINISHING, (A.POLLER,), "CE state")
_allow(C, C_LIVE, (CS.FINISHED, CS.FAILED), (A.POLLER,), "CE state")
_allow(C, C_LIVE, CS.LOST, (A.POLLER,), "unknown to the CE for too long")
_allow(C, C_LIVE, CS.CANCELLED, (A.POLLER,), "killed outside act")
_allow(C, C_LIVE, CS.TORERUN, (A.POLLER,), "restartable failure (staging)")
_allow(C, C_LIVE, CS.TORESUBMIT, (A.POLLER,), "failure matching a resubmit pattern")
_allow(C, CS.TORERUN, CS.SUBMITTED, (A.SUBMITTER,), "CE restarted the job")
_allow(C, CS.TORERUN, CS.FAILED, (A.SUBMITTER,), "CE refused the restart")
_allow(C, CS.TORESUBMIT, CS.TOSUBMIT, (A.SUBMITTER,), "old job cleaned, one attempt used")
_allow(C, CS.TORESUBMIT, CS.FAILED, (A.SUBMITTER,), "no attempts left")
_allow(
    C,
    (CS.TOSUBMIT, CS.SUBMITTING, CS.TORERUN, CS.TORESUBMIT, *_listed(C, C_LIVE)),
    CS.TOCANCEL,
    (A.APP_STATUS, A.OPERATOR, A.JANITOR),
    "kill requested",
)
_allow(C, CS.TOCANCEL, CS.CANCELLING, (A.CANCELLER,), "kill sent to the CE")
_allow(C, CS.TOCANCEL, CS.CANCELLED, (A.CANCELLER,), "nothing at the CE to kill")
_allow(C, CS.TOCANCEL, CS.CANCELLED, (A.JANITOR,), "kill not sent in time")
_allow(C, CS.CANCELLING, CS.CANCELLED, (A.POLLER,), "CE confirmed the kill")
_allow(C, CS.CANCELLING, CS.CANCELLED, (A.JANITOR,), "kill not confirmed in time")
_allow(C, CS.FINISHED, CS.DONE, (A.CE_FETCHER,), "outputs fetched")
_allow(C, CS.FAILED, CS.DONEFAILED, (A.CE_FETCHER,), "diagnostics fetched")
_allow(C, CS.FINISHED, CS.DONEFAILED, (A.CE_FETCHER,), "outputs over the fetch caps")
_allow(C, (CS.FINISHED, CS.FAILED), CS.DONEFAILED, (A.JANITOR,), "outputs not fetched in time")
_allow(
    C,
    (CS.DONE, CS.DONEFAILED, CS.CANCELLED, CS.LOST),
    CS.TOCLEAN,
    (A.APP_STATUS, A.OPERATOR),
    "job over",
)
_allow(
    C,
    (CS.DONE, CS.DONEFAILED, CS.CANCELLED, CS.LOST),
    CS.TOCLEAN,
    (A.JANITOR,),
    "kept past retention",
)
_allow(C, CS.TOCLEAN, CS.CLEANED, (A.CLEANER,), "CE confirmed the clean")

# Groups of states that daemons, actctl and the metrics select on: defined here only, from members.

#: PanDA jobs whose CE job is on its way (made, at the CE, or staging out).
P_LIVE: frozenset[PandaJobState] = frozenset({PS.QUEUED, PS.RUNNING, PS.TRANSFERRING})
#: PanDA jobs not yet running anywhere: what a queue has waiting.
P_WAITING: frozenset[PandaJobState] = frozenset({PS.RECEIVED, PS.QUEUED})
#: PanDA jobs in which the latest CE job's files may still be needed.
P_NEEDS_CE_FILES: frozenset[PandaJobState] = frozenset(
    {*P_LIVE, PS.RECEIVED, PS.TOVALIDATE, PS.TOBEKILLED}
)
#: PanDA jobs whose outcome is known and whose final report is due, and what each becomes once
#: PanDA has it.
P_REPORT_DUE: dict[PandaJobState, PandaJobState] = {
    PS.FINISHED: PS.DONE,
    PS.FAILED: PS.DONEFAILED,
    PS.CANCELLED: PS.DONECANCELLED,
}
#: PanDA jobs whose final report PanDA has (or wants none): nothing more happens.
P_FINAL: frozenset[PandaJobState] = frozenset(P_REPORT_DUE.values())
#: PanDA jobs that are over for act: nothing but (at most) a final report left.
P_OVER: frozenset[PandaJobState] = frozenset({*P_REPORT_DUE, *P_FINAL})
#: PanDA jobs that failed (reported or not).
P_FAILED: frozenset[PandaJobState] = frozenset({PS.FAILED, PS.DONEFAILED})

#: CE jobs the poller follows: live ones, and those whose kill the CE has to confirm.
C_POLLED: frozenset[CEJobState] = frozenset({*C_LIVE, CS.CANCELLING})
#: CE jobs counted as queued, and as running, against a CE's max_queued and max_running.
C_QUEUED: frozenset[CEJobState] = frozenset({CS.SUBMITTING, CS.SUBMITTED})
C_RUNNING: frozenset[CEJobState] = frozenset({CS.RUNNING})
#: CE jobs ended at the CE whose outputs or diagnostics are to be fetched.
C_TO_FETCH: frozenset[CEJobState] = frozenset({CS.FINISHED, CS.FAILED})
#: CE jobs for which a kill can be requested, before and while they run ...
C_KILLABLE: frozenset[CEJobState] = frozenset(
    {CS.TOSUBMIT, CS.SUBMITTING, CS.TORERUN, CS.TORESUBMIT, CS.SUBMITTED, CS.RUNNING}
)
#: ... and also while the CE stages their outputs out.
C_KILLABLE_ALL: frozenset[CEJobState] = frozenset({*C_KILLABLE, CS.FINISHING})
#: CE jobs that will still change by themselves (a kill waits for them).
C_UNSETTLED: frozenset[CEJobState] = frozenset(
    {*C_KILLABLE_ALL, CS.TOCANCEL, CS.CANCELLING, CS.FINISHED, CS.FAILED}
)
#: CE jobs over at the CE, to be cleaned.
C_OVER: frozenset[CEJobState] = frozenset({CS.DONE, CS.DONEFAILED, CS.CANCELLED, CS.LOST})
#: CE jobs of which the CE has nothing left (cleaned): retention may delete their rows.
C_GONE: frozenset[CEJobState] = frozenset({CS.CLEANED})
#: CE jobs that failed (diagnostics fetched or not).
C_FAILED: frozenset[CEJobState] = frozenset({CS.FAILED, CS.DONEFAILED})

del A, P, C, W, R, F, PS, CS


def in_table_order(layer: Layer, states: Iterable[str]) -> list[str]:
    """``states`` (enum members or their values) in the order of the state table, for stable SQL
    and output; a state the layer does not know (it matches no row) comes last."""
    wanted = set(states)
    known = list(STATES[layer])
    return [
        *(STATES[layer][state].name for state in known if state in wanted),
        *sorted(str(state) for state in wanted.difference(known)),
    ]


#: (layer, from, to) → the edge with every actor allowed to make it; what transitions check.
EDGES: dict[tuple[Layer, str | None, str], Edge] = {}
for _rule in RULES:
    _key = (_rule.layer, _rule.from_state, _rule.to_state)
    _known = EDGES.get(_key)
    if _known is not None:
        _rule = Edge(
            _rule.layer,
            _rule.from_state,
            _rule.to_state,
            _known.actors | _rule.actors,
            f"{_known.why}; {_rule.why}",
        )
    EDGES[_key] = _rule


class IllegalTransition(ValueError):
    """A transition that the table does not allow (unknown state, edge or actor)."""


def check(layer: Layer, from_state: str | None, to_state: str, actor: Actor) -> Edge:
    """Return the edge if ``actor`` may move a ``layer`` job from one state to the other."""
    states = STATES[layer]
    for name in (from_state, to_state):
        if name is not None and name not in states:
            raise IllegalTransition(f"{layer.value}: unknown state {name!r}")
    edge = EDGES.get((layer, from_state, to_state))
    if edge is None:
        source = from_state or "(new)"
        raise IllegalTransition(f"{layer.value}: {source} -> {to_state} is not a transition")
    if actor not in edge.actors:
        allowed = ", ".join(sorted(a.value for a in edge.actors))
        raise IllegalTransition(
            f"{layer.value}: {edge.from_state or '(new)'} -> {to_state} may be made by "
            f"{allowed}, not {actor.value}"
        )
    return edge


def edges(layer: Layer | None = None) -> Iterator[Edge]:
    """Every rule with its own actors and reason, in table order (by layer, source, target)."""
    for lay in (Layer.PANDA, Layer.CE) if layer is None else (layer,):
        order = {name: i for i, name in enumerate(STATES[lay])}
        chosen = [e for e in RULES if e.layer is lay]
        chosen.sort(
            key=lambda e: (-1 if e.from_state is None else order[e.from_state], order[e.to_state])
        )
        yield from chosen


def _check_table() -> None:
    """Every state is reachable from creation, and everything but a final state can move on."""
    for layer, states in STATES.items():
        reached = {e.to_state for e in EDGES.values() if e.layer is layer and e.from_state is None}
        frontier = list(reached)
        while frontier:
            here = frontier.pop()
            for e in EDGES.values():
                if e.layer is layer and e.from_state == here and e.to_state not in reached:
                    reached.add(e.to_state)
                    frontier.append(e.to_state)
        unreachable = set(states) - reached
        if unreachable:
            raise RuntimeError(f"{layer.value}: unreachable states {sorted(unreachable)}")
        for state in states.values():
            leaves = any(e.layer is layer and e.from_state == state.name for e in EDGES.values())
            if leaves == (state.kind is Kind.FINAL):
                raise RuntimeError(f"{layer.value}: {state.name} is final iff it has no way out")


_check_table()
