"""The README's state tables are generated from the code and must not go stale."""

from __future__ import annotations

from act.common.states import RULES
from tests.support.readme import README, expected


def test_the_readme_state_tables_match_the_code() -> None:
    text = README.read_text(encoding="utf-8")
    assert text == expected(text), "README.md is stale: run `make docs`"
    for rule in RULES:
        assert f"| {rule.why}" in text


def test_the_readme_names_both_commands() -> None:
    text = README.read_text(encoding="utf-8")
    assert "make run" in text and "make test" in text
