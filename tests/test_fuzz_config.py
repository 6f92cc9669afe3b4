"""Fuzzing load_settings: the documented example (etc/act.yaml) with random keys and values put
into it (structured), raw text mutations of it, and hostile YAML snippets. Only ConfigError may
come out, naming the file, with at least one problem; a problem about a key names its path."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from act.common.config import ConfigError
from act.service.settings import load_settings
from tests.support.fuzzing import (
    DEFAULT,
    LONG,
    Draw,
    examples,
    json_values,
    mutate_bytes,
    mutate_text,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = (REPO / "etc" / "act.yaml").read_text()
BASE: dict[str, Any] = yaml.safe_load(EXAMPLE)
_names = itertools.count()

HOSTILE = [
    "? [a, b]\n: 1\n",  # a list as a key (was a TypeError)
    "db: {? {x: 1} : 2}\n",  # a mapping as a key
    "root: !!python/object/apply:os.system ['true']\n",
    "a: &x [*x]\n",
    "daemons:\n  1: {}\n",  # a number as a key
    "daemons: {null: {}}\n",
    "logging: !!binary aGVsbG8=\n",
    "db:\n  pool_size: .inf\n",
    "root: /tmp\n---\nroot: /x\n",  # two documents
    "queues:\n  serve:\n    Q: {ces: [{flavour: arc, endpoint: 7}]}\n",
]


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*prefix, key))
    return found


def _structured(draw: Draw) -> str:
    config: dict[str, Any] = yaml.safe_load(EXAMPLE)
    paths = _paths(BASE)
    for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=4)):
        node: Any = config
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if draw(st.booleans()):
            node[path[-1]] = draw(json_values)
        else:
            node[draw(st.one_of(st.text(max_size=10), st.integers()))] = draw(json_values)
    return yaml.safe_dump(config, allow_unicode=True)


def _text(data: st.DataObject) -> str | bytes:
    kind = data.draw(st.sampled_from(["structured", "mutated", "hostile", "raw", "bytes"]))
    if kind == "bytes":
        return mutate_bytes(EXAMPLE.encode(), data.draw)
    if kind == "structured":
        return _structured(data.draw)
    if kind == "mutated":
        return mutate_text(EXAMPLE, data.draw)
    if kind == "hostile":
        return data.draw(st.sampled_from([*HOSTILE, "\ufeffroot: /tmp\n"]))
    return data.draw(st.text(max_size=200))


def _check(tmp_path: Path, text: str | bytes) -> None:
    path = tmp_path / f"act-{next(_names)}.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        load_settings(path)
    except ConfigError as error:
        assert error.source == str(path) and str(path) in str(error)
        assert error.problems and all(p.strip() for p in error.problems)


@examples(DEFAULT * 4)
@given(data=st.data())
def test_fuzzed_config_files_give_only_config_errors(
    tmp_path: Path, data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACT_ROOT", raising=False)
    monkeypatch.delenv("ACT_DB_URL", raising=False)
    _check(tmp_path, _text(data))


@pytest.mark.long
@examples(LONG * 2)
@given(data=st.data())
def test_fuzzed_config_files_give_only_config_errors_long(
    tmp_path: Path, data: st.DataObject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ACT_ROOT", raising=False)
    monkeypatch.delenv("ACT_DB_URL", raising=False)
    _check(tmp_path, _text(data))


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_yaml_gives_a_config_error_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "act.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert str(path) in str(caught.value)


def test_a_file_that_is_not_utf8_gives_a_config_error(tmp_path: Path) -> None:
    """Finding of the fuzzing: a byte that is not UTF-8 raised UnicodeDecodeError."""
    path = tmp_path / "act.yaml"
    path.write_bytes(b"root: /tmp/\xff\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_settings(path)
