"""CE choice: candidates minus excluded, and how each strategy spreads jobs."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from act.engine import strategies
from act.engine.strategies import Chooser

CES = ["ce-a", "ce-b", "ce-c"]


def test_names_keep_order_and_drop_repeats() -> None:
    assert strategies.names(" ce-b ce-a  ce-b ") == ["ce-b", "ce-a"]
    assert strategies.names(None) == []


def test_excluded_are_skipped_until_every_candidate_is_excluded() -> None:
    assert strategies.allowed(CES, {"ce-a"}) == ["ce-b", "ce-c"]
    assert strategies.allowed(CES, set(CES)) == CES  # all failed once: start again from all
    assert strategies.eligible(CES, {"ce-a"}, {"ce-a", "ce-c"}) == ["ce-c"]
    # The one allowed CE has no room: the job waits rather than going back to an excluded one.
    assert strategies.eligible(CES, {"ce-a", "ce-b"}, {"ce-a", "ce-b"}) == []


def test_round_robin_cycles_in_name_order_from_the_first() -> None:
    chooser = Chooser("round_robin")
    picks = [chooser.choose(["ce-c", "ce-a", "ce-b"]) for _ in range(7)]
    assert picks == ["ce-a", "ce-b", "ce-c", "ce-a", "ce-b", "ce-c", "ce-a"]


def test_round_robin_random_starts_anywhere_then_cycles() -> None:
    starts = Counter(
        Chooser("round_robin_random", random.Random(seed)).choose(CES) for seed in range(300)
    )
    assert set(starts) == set(CES)  # each start happens ...
    assert min(starts.values()) > 60  # ... about a third of the time
    chooser = Chooser("round_robin_random", random.Random(7))
    picks = [chooser.choose(CES) for _ in range(9)]
    assert Counter(picks) == {name: 3 for name in CES}  # an exact cycle from its start
    first = CES.index(picks[0])
    assert picks[:3] == [CES[(first + i) % 3] for i in range(3)]


def test_random_is_roughly_uniform() -> None:
    chooser = Chooser("random", random.Random(1))
    counts = Counter(chooser.choose(CES) for _ in range(6000))
    assert all(1800 < counts[name] < 2200 for name in CES), counts


def test_weighted_follows_the_weights_and_never_starves() -> None:
    chooser = Chooser("weighted", random.Random(2))
    weights = {"ce-a": 3.0, "ce-b": 1.0, "ce-c": 0.0}
    counts = Counter(chooser.choose(CES, weights) for _ in range(8000))
    share_a = counts["ce-a"] / 8000
    assert 0.70 < share_a < 0.78, counts  # 3 / (3 + 1 + 0.02)
    assert 1800 < counts["ce-b"] < 2200
    assert 0 < counts["ce-c"] < 120  # the minimum weight keeps a chance of recovery


def test_weight_is_score_times_static_weight() -> None:
    assert strategies.weight_of(None, 2.0) == 2.0
    assert strategies.weight_of(0.5, 3.0) == 1.5


def test_pure_choice_functions() -> None:
    assert strategies.round_robin(CES, 4) == "ce-b"
    assert strategies.weighted(CES, [1.0, 1.0, 2.0], 0.0) == "ce-a"
    assert strategies.weighted(CES, [1.0, 1.0, 2.0], 0.49) == "ce-b"
    assert strategies.weighted(CES, [1.0, 1.0, 2.0], 0.51) == "ce-c"


def test_no_choice_is_an_error() -> None:
    with pytest.raises(ValueError, match="no CE"):
        Chooser("random").choose([])
