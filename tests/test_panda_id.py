"""panda_id_of: the one rule the PanDA client and the reply spool apply to a PandaID."""

from __future__ import annotations

from typing import Any

import pytest

from act.atlas.panda_id import panda_id_of


@pytest.mark.parametrize(("value", "expected"), [(7, 7), ("42", 42), (" 42\n", 42)])
def test_positive_integers_and_their_digits_are_ids(value: Any, expected: int) -> None:
    assert panda_id_of({"PandaID": value}) == expected


@pytest.mark.parametrize("value", [None, True, 0, -3, "abc", "", "4.2", 4.0, [1]])
def test_anything_else_is_none(value: Any) -> None:
    assert panda_id_of({"PandaID": value}) is None


def test_a_missing_id_is_none() -> None:
    assert panda_id_of({"jobName": "x"}) is None
