"""Both layers' states and their allowed transitions, as data.

This module is the single source of truth: :func:`act.common.transitions.transition` refuses every
edge not listed here, and ``actctl states`` renders these tables (the README's table is generated
from them). States named ``to<action>`` are requests from one actor to another.

* The **PanDA layer** (``panda_jobs.state``) follows a PanDA job from the moment its spec is stored
  until PanDA has acknowledged its final report.
* The **CE layer** (``ce_jobs.state``) follows one job on a compute element, from the request to
  submit it until the CE has confirmed it was cleaned.
"""

from __future__ import annotations

from collections.abc import Iterator
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


@dataclass(frozen=True)
class State:
    name: str
    kind: Kind
    meaning: str


@dataclass(frozen=True)
class Edge:
    layer: Layer
    from_state: str | None  # None: the job is created in to_state
    to_state: str
    actors: frozenset[Actor]
    why: str


def _states(*rows: tuple[str, Kind, str]) -> dict[str, State]:
    return {name: State(name, kind, meaning) for name, kind, meaning in rows}


W, R, F = Kind.WORK, Kind.REQUEST, Kind.FINAL

STATES: dict[Layer, dict[str, State]] = {
    Layer.PANDA: _states(
        ("received", W, "job spec stored; no CE job yet"),
        ("queued", W, "CE job made, not yet running (PanDA is told starting)"),
        ("running", W, "the CE job runs (PanDA is told running)"),
        ("transferring", W, "payload ended, outputs being staged out (PanDA: transferring)"),
        ("tovalidate", R, "CE job ended, outputs fetched: the validator decides the outcome"),
        ("toresubmit", R, "CE job failed in a retryable way: a new CE job is to be made"),
        ("tobekilled", R, "kill requested (PanDA command or operator): CE job being cancelled"),
        ("finished", W, "outputs valid: final report due"),
        ("failed", W, "failed for good: final report due"),
        ("cancelled", W, "killed: final report due"),
        ("done", F, "PanDA has the final report (finished)"),
        ("donefailed", F, "PanDA has the final report (failed)"),
        ("donecancelled", F, "PanDA has the final report (cancelled), or wants none"),
    ),
    Layer.CE: _states(
        ("tosubmit", R, "waiting for the submitter"),
        ("submitting", W, "being sent to the CE (reconciled with the CE after a crash)"),
        ("submitted", W, "accepted by the CE, waiting in its queue"),
        ("running", W, "running at the CE"),
        ("finishing", W, "payload ended; the CE stages outputs out"),
        ("finished", W, "ended at the CE: outputs to fetch"),
        ("failed", W, "failed at the CE: diagnostics to fetch"),
        ("done", W, "outputs fetched"),
        ("donefailed", W, "diagnostics of a failed job fetched"),
        ("lost", W, "the CE no longer knows the job"),
        ("torerun", R, "ask the CE to restart the job (e.g. after a staging failure)"),
        ("toresubmit", R, "clean the old CE job, then submit again"),
        ("tocancel", R, "kill requested"),
        ("cancelling", W, "kill sent to the CE, waiting for confirmation"),
        ("cancelled", W, "killed, or never reached the CE"),
        ("toclean", R, "remove the job and its files from the CE"),
        ("cleaned", F, "the CE confirmed the clean"),
    ),
}

A = Actor
#: The rules as written below, one per (edges, actors, reason); the documentation lists these.
RULES: list[Edge] = []


def _allow(layer: Layer, froms: str | None, tos: str, actors: tuple[Actor, ...], why: str) -> None:
    """Allow every from-state in ``froms`` to every state in ``tos`` (space-separated lists)."""
    for source in froms.split() if froms else [None]:
        for target in tos.split():
            RULES.append(Edge(layer, source, target, frozenset(actors), why))


P, C = Layer.PANDA, Layer.CE
P_ACTIVE = "received queued running transferring tovalidate toresubmit"

_allow(P, None, "received", (A.PANDA_FETCHER, A.OPERATOR), "job spec stored")
_allow(P, "received toresubmit", "queued", (A.TRANSLATOR,), "CE job made")
_allow(P, "received", "failed", (A.TRANSLATOR,), "spec cannot be turned into a CE job")
_allow(P, "toresubmit", "failed", (A.TRANSLATOR,), "no attempts left")
_allow(P, "queued", "running transferring tovalidate", (A.APP_STATUS,), "CE job progressed")
_allow(P, "running", "queued", (A.APP_STATUS,), "CE job requeued")
_allow(P, "running", "transferring tovalidate", (A.APP_STATUS,), "CE job progressed")
_allow(P, "transferring", "tovalidate", (A.APP_STATUS,), "CE job done and fetched")
_allow(P, "queued running transferring", "failed", (A.APP_STATUS,), "CE job failed for good")
_allow(P, "queued running transferring", "toresubmit", (A.APP_STATUS,), "CE job failed, retryable")
_allow(P, "queued running transferring", "toresubmit", (A.OPERATOR,), "operator resubmits")
_allow(P, "tovalidate", "finished", (A.VALIDATOR,), "all outputs valid")
_allow(P, "tovalidate", "done", (A.VALIDATOR,), "truepilot: logs published")
_allow(P, "tovalidate", "failed", (A.VALIDATOR,), "outputs invalid or payload failed")
_allow(P, "tovalidate", "toresubmit", (A.VALIDATOR, A.OPERATOR), "output check failed, retryable")
_allow(P, "failed", "toresubmit", (A.OPERATOR,), "operator retry: final report not yet accepted")
_allow(P, P_ACTIVE, "tobekilled", (A.PROPAGATOR,), "PanDA command (tobekilled, ...)")
_allow(P, P_ACTIVE, "tobekilled", (A.OPERATOR,), "operator kill")
_allow(P, P_ACTIVE, "tobekilled", (A.JANITOR,), "stuck beyond its policy")
_allow(P, "tobekilled", "cancelled", (A.APP_STATUS,), "CE job cancelled or never submitted")
_allow(P, "finished", "done", (A.PROPAGATOR,), "final report accepted")
_allow(P, "failed", "donefailed", (A.PROPAGATOR,), "final report accepted")
_allow(P, "cancelled", "donecancelled", (A.PROPAGATOR,), "final report accepted or not wanted")

C_LIVE = "submitted running finishing"
_allow(C, None, "tosubmit", (A.TRANSLATOR, A.OPERATOR), "CE job requested")
_allow(C, "tosubmit", "submitting", (A.SUBMITTER,), "claimed for submission")
_allow(C, "submitting", "submitted", (A.SUBMITTER,), "CE accepted the job")
_allow(C, "submitting", "tosubmit", (A.SUBMITTER,), "CE unreachable: try again, maybe elsewhere")
_allow(C, "submitting", "failed", (A.SUBMITTER,), "CE rejected the job description")
_allow(C, "submitted", "running", (A.POLLER,), "CE state")
_allow(C, "running", "submitted", (A.POLLER,), "requeued at the CE")
_allow(C, "submitted running", "finishing", (A.POLLER,), "CE state")
_allow(C, C_LIVE, "finished failed", (A.POLLER,), "CE state")
_allow(C, C_LIVE, "lost", (A.POLLER,), "unknown to the CE for too long")
_allow(C, C_LIVE, "cancelled", (A.POLLER,), "killed outside act")
_allow(C, C_LIVE, "torerun", (A.POLLER,), "restartable failure (staging)")
_allow(C, C_LIVE, "toresubmit", (A.POLLER,), "failure matching a resubmit pattern")
_allow(C, "torerun", "submitted", (A.SUBMITTER,), "CE restarted the job")
_allow(C, "torerun", "failed", (A.SUBMITTER,), "CE refused the restart")
_allow(C, "toresubmit", "tosubmit", (A.SUBMITTER,), "old job cleaned, one attempt used")
_allow(C, "toresubmit", "failed", (A.SUBMITTER,), "no attempts left")
_allow(
    C,
    "tosubmit submitting torerun toresubmit " + C_LIVE,
    "tocancel",
    (A.APP_STATUS, A.OPERATOR, A.JANITOR),
    "kill requested",
)
_allow(C, "tocancel", "cancelling", (A.CANCELLER,), "kill sent to the CE")
_allow(C, "tocancel", "cancelled", (A.CANCELLER,), "nothing at the CE to kill")
_allow(C, "tocancel", "cancelled", (A.JANITOR,), "kill not sent in time")
_allow(C, "cancelling", "cancelled", (A.POLLER,), "CE confirmed the kill")
_allow(C, "cancelling", "cancelled", (A.JANITOR,), "kill not confirmed in time")
_allow(C, "finished", "done", (A.CE_FETCHER,), "outputs fetched")
_allow(C, "failed", "donefailed", (A.CE_FETCHER,), "diagnostics fetched")
_allow(C, "finished", "donefailed", (A.CE_FETCHER,), "outputs over the fetch caps")
_allow(C, "finished failed", "donefailed", (A.JANITOR,), "outputs not fetched in time")
_allow(C, "done donefailed cancelled lost", "toclean", (A.APP_STATUS, A.OPERATOR), "job over")
_allow(C, "done donefailed cancelled lost", "toclean", (A.JANITOR,), "kept past retention")
_allow(C, "toclean", "cleaned", (A.CLEANER,), "CE confirmed the clean")

del A, P, C, W, R, F

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
