"""Slicing a JSON document without re-encoding: the exact text of each element of an array.

PanDA's job specs are kept byte for byte as PanDA sent them (the reply spool, ``panda_jobs``);
``json.loads`` followed by ``json.dumps`` would not give the same text back. Used by
:mod:`act.atlas.panda_client` (acquire replies) and :mod:`act.atlas.spool` (reading them back).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

_WS = " \t\r\n"


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


def raw_array_items(text: str, path: Sequence[str]) -> list[str]:
    """The exact text of each element of the array found by following ``path`` (object keys)
    from the top of a JSON document.

    ``raw_array_items('{"jobs": [{"a": 1}, 2]}', ("jobs",))`` is ``['{"a": 1}', '2']``; an
    empty ``path`` reads the document itself as the array. Keys before the wanted one are
    skipped unread; what follows the array is not looked at. Raises ValueError if the document
    does not fit (a key missing, a value that is not an array, malformed JSON on the way).
    """
    decoder = json.JSONDecoder()
    pos = _skip(text, 0)
    for key in path:
        if pos >= len(text) or text[pos] != "{":
            raise ValueError(f"no object around {key!r}")
        pos = _skip(text, pos + 1)
        while True:
            if pos >= len(text) or text[pos] != '"':
                raise ValueError(f"key {key!r} not found")
            name, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            if pos >= len(text) or text[pos] != ":":
                raise ValueError("malformed object")
            pos = _skip(text, pos + 1)
            if name == key:
                break
            _, pos = decoder.raw_decode(text, pos)
            pos = _skip(text, pos)
            if pos < len(text) and text[pos] == ",":
                pos = _skip(text, pos + 1)
    if pos >= len(text) or text[pos] != "[":
        raise ValueError("not a list")
    items: list[str] = []
    pos = _skip(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        return items
    while True:
        _, end = decoder.raw_decode(text, pos)
        items.append(text[pos:end])
        pos = _skip(text, end)
        if pos < len(text) and text[pos] == ",":
            pos = _skip(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            return items
        raise ValueError("malformed list")
