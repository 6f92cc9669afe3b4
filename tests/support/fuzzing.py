"""Shared hypothesis strategies and settings for the fuzz tests (tests/test_fuzz_*.py).

``examples(n)``: the default run uses ``n`` examples; under ``-m long`` style runs (the test
marked ``long``) the caller passes a larger count. ``database=None``: no .hypothesis/ directory
in the checkout; ``derandomize``: the same examples every run (a fuzz finding is reproducible).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

#: ``draw`` of a composite strategy, or ``data.draw`` of st.data().
Draw = Callable[[st.SearchStrategy[Any]], Any]

DEFAULT = 40
LONG = 600


def examples(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: a finding prints as drawn
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.just("\u202e\U0001f4a9\x00"),
    st.just("x" * 5000),
)

json_values: st.SearchStrategy[Any] = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _position(draw: Draw, length: int) -> int:
    """A position in a sequence of ``length``, drawn independently of the length (the same
    draws replay the same way even when the file's length differs, e.g. with another PandaID)."""
    drawn: int = draw(st.integers(0, 2**20))
    return drawn * length // (2**20 + 1)


def mutate_text(text: str, draw: Draw) -> str:
    """``text`` with a few characters replaced, inserted or cut (a garbled reply/file)."""
    chars = list(text)
    for _ in range(draw(st.integers(1, 4))):
        if not chars:
            break
        at = _position(draw, len(chars))
        action = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        new = draw(st.characters())
        if action == "replace":
            chars[at] = new
        elif action == "insert":
            chars.insert(at, new)
        elif action == "delete":
            del chars[at]
        else:
            chars = chars[:at]
    return "".join(chars)


def mutate_bytes(blob: bytes, draw: Draw) -> bytes:
    """``blob`` with a few bytes flipped, inserted or the tail cut."""
    out = bytearray(blob)
    for _ in range(draw(st.integers(1, 6))):
        if not out:
            break
        at = _position(draw, len(out))
        action = draw(st.sampled_from(["flip", "insert", "cut", "zero"]))
        if action == "flip":
            out[at] ^= draw(st.integers(1, 255))
        elif action == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif action == "zero":
            out[at : at + 16] = bytes(len(out[at : at + 16]))
        else:
            del out[at:]
    return bytes(out)


def spec_variant(base: dict[str, Any], draw: Draw) -> dict[str, Any]:
    """A job spec around ``base``: fields dropped, retyped, made huge or unicode."""
    spec = dict(base)
    keys = sorted(spec)
    for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
        action = draw(st.sampled_from(["drop", "value", "huge", "unicode"]))
        if action == "drop":
            del spec[key]
        elif action == "value":
            spec[key] = draw(json_values)
        elif action == "huge":
            spec[key] = "A," * 20000
        else:
            spec[key] = "\u00e9\u4e2d\U0001f600\u202e,\u0000"
    extra = draw(st.dictionaries(st.text(max_size=10), json_values, max_size=2))
    spec.update({k: v for k, v in extra.items() if k not in ("PandaID",)})
    return spec


def dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=False)
