"""Helpers to put jobs into a given state through the real transition function."""

from __future__ import annotations

from collections import deque

from sqlalchemy.engine import Connection

from act.common.states import EDGES, STATES, Edge, Layer
from act.common.transitions import create_jobs, transition


def panda_row(panda_id: int, queue: str = "TEST_QUEUE") -> dict[str, object]:
    return {
        "panda_id": panda_id,
        "queue": queue,
        "attempt": 1,
        "spec": f'{{"PandaID": {panda_id}}}',
        "spec_format": "json",
    }


def ce_row(
    endpoint: str = "https://ce.example.org/arex", backend: str = "arc"
) -> dict[str, object]:
    return {
        "backend": backend,
        "ce_name": endpoint,
        "description": "&(executable=/bin/true)",
        "attempts_left": 3,
    }


def path_to(layer: Layer, target: str) -> list[Edge]:
    """The shortest list of edges from creation to ``target``."""
    starts = [e for e in EDGES.values() if e.layer is layer and e.from_state is None]
    queue = deque([[e] for e in starts])
    seen = {e.to_state for e in starts}
    while queue:
        path = queue.popleft()
        if path[-1].to_state == target:
            return path
        for edge in EDGES.values():
            if (
                edge.layer is layer
                and edge.from_state == path[-1].to_state
                and edge.to_state not in seen
            ):
                seen.add(edge.to_state)
                queue.append([*path, edge])
    raise LookupError(f"{target} unreachable")


def make_jobs(
    conn: Connection, layer: Layer, state: str, count: int = 1, first_panda_id: int = 1
) -> list[int]:
    """Create ``count`` jobs and walk them to ``state`` along allowed edges."""
    assert state in STATES[layer]
    path = path_to(layer, state)
    if layer is Layer.PANDA:
        rows = [panda_row(first_panda_id + i) for i in range(count)]
    else:
        rows = [ce_row() for _ in range(count)]
    creation = path[0]
    ids = create_jobs(conn, layer, rows, creation.to_state, actor=min(creation.actors))
    for edge in path[1:]:
        assert edge.from_state is not None
        moved = transition(conn, layer, ids, edge.from_state, edge.to_state, actor=min(edge.actors))
        assert moved == sorted(ids)
    return ids
