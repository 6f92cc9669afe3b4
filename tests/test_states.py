"""The state table itself: consistent, complete, and rendered from the data."""

from __future__ import annotations

import pytest

from act.common.states import (
    EDGES,
    RULES,
    STATES,
    Actor,
    IllegalTransition,
    Kind,
    Layer,
    check,
    edges,
)


def test_every_state_has_a_meaning_and_every_edge_known_states() -> None:
    for (layer, source, target), edge in EDGES.items():
        assert source is None or source in STATES[layer]
        assert target in STATES[layer]
        assert edge.actors, f"{layer}: {source}->{target} has no actor"
        assert edge.why
    for states in STATES.values():
        for state in states.values():
            assert state.meaning


def test_requests_are_named_to_something_and_final_states_have_no_exit() -> None:
    for layer, states in STATES.items():
        for state in states.values():
            if state.kind is Kind.REQUEST:
                assert state.name.startswith("to"), state.name
            exits = [e for e in EDGES.values() if e.layer is layer and e.from_state == state.name]
            assert (not exits) == (state.kind is Kind.FINAL), state.name


def test_edges_are_listed_in_table_order_each_rule_with_its_own_reason() -> None:
    listed = list(edges())
    assert len(listed) == len(RULES) > len(EDGES)
    kills = {
        (e.why, e.actors) for e in listed if e.from_state == "queued" and e.to_state == "tobekilled"
    }
    assert kills == {
        ("PanDA command (tobekilled, ...)", frozenset({Actor.PROPAGATOR})),
        ("operator kill", frozenset({Actor.OPERATOR})),
        ("stuck beyond its policy", frozenset({Actor.JANITOR})),
    }
    merged = EDGES[(Layer.PANDA, "queued", "tobekilled")]
    assert merged.actors == {Actor.PROPAGATOR, Actor.OPERATOR, Actor.JANITOR}
    panda = [e for e in listed if e.layer is Layer.PANDA]
    assert panda[0].from_state is None and panda[0].to_state == "received"


@pytest.mark.parametrize(
    ("layer", "source", "target", "actor", "message"),
    [
        (Layer.CE, "tosubmit", "nosuchstate", Actor.SUBMITTER, "unknown state 'nosuchstate'"),
        (Layer.CE, "tosubmit", "running", Actor.POLLER, "tosubmit -> running is not a transition"),
        (Layer.CE, "tosubmit", "submitting", Actor.POLLER, "may be made by submitter, not poller"),
        (Layer.PANDA, None, "queued", Actor.TRANSLATOR, "(new) -> queued is not a transition"),
    ],
)
def test_check_refuses_with_a_clear_message(
    layer: Layer, source: str | None, target: str, actor: Actor, message: str
) -> None:
    with pytest.raises(IllegalTransition) as error:
        check(layer, source, target, actor)
    assert message in str(error.value)
