"""Choosing a CE for a job among its candidates.

A job lists the CEs it may go to (``ce_jobs.candidates``) and those that already failed its
submission (``ce_jobs.excluded``). :func:`eligible` takes the candidates minus the excluded ones
(all of them again once every candidate has been excluded) and keeps those that can take a job
now; a :class:`Chooser` then picks one by the configured strategy:

* ``round_robin``: each CE in turn, in name order, from the first;
* ``round_robin_random`` (default): the same from a random start in each process, so that many
  processes do not all begin with the same CE (the gLExec fail-over lesson);
* ``random``: uniformly at random;
* ``weighted``: at random, in proportion to ``ces.success_score`` (recent success) times the
  CE's static ``weight``.

The choice functions are pure; the Chooser only keeps the round-robin position of each set of
CEs and a random generator, per process.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping, Sequence
from typing import Literal

Strategy = Literal["round_robin", "round_robin_random", "random", "weighted"]

#: The score of a CE that has no history yet.
DEFAULT_SCORE = 1.0
#: A CE with a score of 0 still gets an occasional job, so that it can recover.
MIN_SCORE = 0.02


def names(text: str | None) -> list[str]:
    """CE names from a space-separated column value, in order, without repeats."""
    seen: dict[str, None] = {}
    for name in (text or "").split():
        seen.setdefault(name, None)
    return list(seen)


def allowed(candidates: Sequence[str], excluded: Collection[str]) -> list[str]:
    """The candidates minus the excluded; all candidates once every one has been excluded."""
    left = [name for name in candidates if name not in excluded]
    return left if left else list(candidates)


def eligible(
    candidates: Sequence[str], excluded: Collection[str], available: Collection[str]
) -> list[str]:
    """The allowed candidates (see :func:`allowed`) that can take a job now, sorted by name."""
    return sorted(name for name in allowed(candidates, excluded) if name in available)


def round_robin(choices: Sequence[str], position: int) -> str:
    """The CE at ``position`` in the cycle over ``choices`` (which must not be empty)."""
    return choices[position % len(choices)]


def weighted(choices: Sequence[str], weights: Sequence[float], point: float) -> str:
    """The CE whose share of the total weight contains ``point`` (0 <= point < 1).

    Weights below :data:`MIN_SCORE` count as that minimum, so no CE is starved for good.
    """
    clipped = [max(weight, MIN_SCORE) for weight in weights]
    target = point * sum(clipped)
    total = 0.0
    for name, weight in zip(choices, clipped, strict=True):
        total += weight
        if target < total:
            return name
    return choices[-1]


def weight_of(score: float | None, static: float) -> float:
    """A CE's weight for the ``weighted`` strategy: its success score times its static weight."""
    return (DEFAULT_SCORE if score is None else score) * static


class Chooser:
    """Picks CEs by one strategy; keeps the per-process round-robin positions."""

    def __init__(self, strategy: Strategy, rng: random.Random | None = None) -> None:
        self.strategy = strategy
        self.rng = rng or random.Random()
        self._positions: dict[tuple[str, ...], int] = {}

    def choose(self, choices: Sequence[str], weights: Mapping[str, float] | None = None) -> str:
        """One of ``choices`` (not empty); ``weights`` by CE name for ``weighted``."""
        if not choices:
            raise ValueError("no CE to choose from")
        ordered = sorted(choices)
        if self.strategy == "random":
            return self.rng.choice(ordered)
        if self.strategy == "weighted":
            values = [(weights or {}).get(name, DEFAULT_SCORE) for name in ordered]
            return weighted(ordered, values, self.rng.random())
        key = tuple(ordered)
        position = self._positions.get(key)
        if position is None:
            start = self.rng.randrange(len(ordered)) if self.strategy == "round_robin_random" else 0
            position = start
        self._positions[key] = position + 1
        return round_robin(ordered, position)
