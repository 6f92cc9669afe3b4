"""raw_array_items: the exact text of each array element, as sent."""

from __future__ import annotations

import pytest

from act.atlas.rawjson import raw_array_items


def test_slices_keep_the_text_byte_for_byte() -> None:
    text = '{"a": {"x": [1]}, "jobs" : [ {"PandaID": 1,  "b": 1.50} , "é\\u00e9" ] }'
    assert raw_array_items(text, ("jobs",)) == ['{"PandaID": 1,  "b": 1.50}', '"é\\u00e9"']


def test_empty_path_reads_the_document_as_the_array() -> None:
    assert raw_array_items(" [] ", ()) == []
    assert raw_array_items("[3,4]", ()) == ["3", "4"]


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ('{"other": []}', ("jobs",)),
        ('{"jobs": {}}', ("jobs",)),
        ("[1, 2", ()),
        ('{"jobs" [1]}', ("jobs",)),
        ("[1 2]", ()),
    ],
)
def test_a_document_that_does_not_fit_raises_value_error(text: str, path: tuple[str, ...]) -> None:
    with pytest.raises(ValueError):
        raw_array_items(text, path)
