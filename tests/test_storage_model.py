"""Unit tests of act.atlas.storage.model and of the comparison in StorageChecker (no storage)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import pytest

from act.atlas.storage.checker import judge
from act.atlas.storage.model import (
    Expected,
    Verdict,
    adler32_of_file,
    checkable,
    endpoint_of,
    normalise_adler32,
    rewrite_url,
)
from act.atlas.storage.probe import Found


@pytest.mark.parametrize(
    ("url", "endpoint"),
    [
        ("root://eosatlas.cern.ch//eos/atlas/rucio/x.root", "root://eosatlas.cern.ch:1094"),
        ("root://EOSATLAS.cern.ch:1095//eos/x", "root://eosatlas.cern.ch:1095"),
        ("xroot://se.example.org//x", "root://se.example.org:1094"),
        ("roots://se.example.org:1094//x", "roots://se.example.org:1094"),
        ("davs://dav.ndgf.org/atlas/disk/x", "https://dav.ndgf.org:443"),
        ("davs://dav.ndgf.org:2880/atlas/x", "https://dav.ndgf.org:2880"),
        ("https://dav.ndgf.org:443/atlas/x", "https://dav.ndgf.org:443"),
        ("dav://se.example.org/x", "http://se.example.org:80"),
        ("http://se.example.org:8000/x", "http://se.example.org:8000"),
        ("file:///data/atlas/x.root", "file://"),
        ("file://localhost/data/x", "file://"),
        ("srm://srm.ndgf.org:8443/srm/managerv2?SFN=/atlas/x", "srm://srm.ndgf.org:8443"),
        ("gsiftp://gridftp.example.org/x", "gsiftp://gridftp.example.org"),
        ("root://[::1]:21094//x", "root://[::1]:21094"),
    ],
)
def test_endpoint_of_names_one_door_one_way(url: str, endpoint: str) -> None:
    assert endpoint_of(url) == endpoint


@pytest.mark.parametrize(
    "url",
    [
        "",
        "no-scheme/at/all",
        "root//missing-colon/x",
        "root:///path/without/host",
        "https://se.example.org:99999/x",
        "https://se.example.org:port/x",
        "root://se.example.org//a file with blanks",
        " root://se.example.org//x",
        "root://se.example.org//x\n",
        "https://user:secret@se.example.org/x",
        "file://otherhost/data/x",
        "file:relative/path",
    ],
)
def test_endpoint_of_refuses_malformed_urls(url: str) -> None:
    with pytest.raises(ValueError):
        endpoint_of(url)


def test_only_schemes_with_a_client_are_checkable() -> None:
    assert all(
        checkable(endpoint_of(url))
        for url in ("root://h//x", "roots://h//x", "davs://h/x", "https://h/x", "file:///x")
    )
    assert not checkable(endpoint_of("srm://h:8443/x"))
    assert not checkable(endpoint_of("gsiftp://h/x"))


@pytest.mark.parametrize(
    ("value", "normal"),
    [
        ("1e720467", "1e720467"),
        ("1E720467", "1e720467"),
        ("30002", "00030002"),
        ("1", "00000001"),
        (" 00030002 ", "00030002"),
        ("ad:1E720467", "1e720467"),
    ],
)
def test_normalise_adler32(value: str, normal: str) -> None:
    assert normalise_adler32(value) == normal


@pytest.mark.parametrize("value", ["", "   ", "xyz", "123456789", "0x1234", "ad:", "12 34", "-1"])
def test_normalise_adler32_refuses_what_is_not_an_adler32(value: str) -> None:
    with pytest.raises(ValueError):
        normalise_adler32(value)


def test_adler32_of_file_matches_zlib_across_chunks(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\x00\x01")
    big = tmp_path / "big"
    payload = os.urandom(3 * (1 << 20) + 17)  # more than one 1 MiB chunk, not a multiple
    big.write_bytes(payload)
    assert adler32_of_file(empty) == "00000001"
    assert adler32_of_file(tiny) == "00030002"
    assert adler32_of_file(big) == f"{zlib.adler32(payload) & 0xFFFFFFFF:08x}"


def test_rewrite_replaces_the_longest_matching_prefix() -> None:
    rules = {
        "davs://dav.ndgf.org:443/": "https://door1.ndgf.org:2880/",
        "davs://dav.ndgf.org:443/atlas/tape/": "https://tape.ndgf.org/atlas/tape/",
    }
    assert (
        rewrite_url("davs://dav.ndgf.org:443/atlas/disk/x", rules)
        == "https://door1.ndgf.org:2880/atlas/disk/x"
    )
    assert (
        rewrite_url("davs://dav.ndgf.org:443/atlas/tape/x", rules)
        == "https://tape.ndgf.org/atlas/tape/x"
    )
    assert rewrite_url("root://other//x", rules) == "root://other//x"
    assert rewrite_url("root://other//x", {}) == "root://other//x"


EXPECTED = Expected(
    lfn="EVNT.1._0001.pool.root.1", url="root://se:1094//a/b", size=12, adler32="1e720467"
)


def test_judge_accepts_matching_size_and_checksum_in_any_spelling() -> None:
    result = judge(
        Expected(EXPECTED.lfn, EXPECTED.url, 12, "1E720467"),
        "root://se:1094",
        EXPECTED.url,
        Found(12, "1e720467"),
    )
    assert result.verdict is Verdict.OK
    assert (result.size, result.adler32, result.endpoint) == (12, "1e720467", "root://se:1094")
    assert EXPECTED.lfn in result.detail and EXPECTED.url in result.detail


def test_judge_compares_adler32_as_numbers() -> None:
    result = judge(
        Expected("f", "root://se//f", 2, "30002"),
        "root://se:1094",
        "root://se//f",
        Found(2, "00030002"),
    )
    assert result.verdict is Verdict.OK


@pytest.mark.parametrize(
    ("found", "words"),
    [
        (Found(13, "1e720467"), ["size 12 reported, 13 on storage"]),
        (Found(12, "1e720468"), ["adler32 1e720467 reported, 1e720468 on storage"]),
        (Found(0, "00000001"), ["size 12 reported, 0 on storage", "adler32 1e720467 reported"]),
    ],
)
def test_judge_names_every_difference(found: Found, words: list[str]) -> None:
    result = judge(EXPECTED, "root://se:1094", EXPECTED.url, found)
    assert result.verdict is Verdict.MISMATCH
    for word in words:
        assert word in result.detail
    assert EXPECTED.lfn in result.detail and EXPECTED.url in result.detail


def test_judge_without_checksum_on_storage_is_no_checksum() -> None:
    result = judge(EXPECTED, "https://se:443", EXPECTED.url, Found(12, None, "no Digest header"))
    assert result.verdict is Verdict.NO_CHECKSUM
    assert "no Digest header" in result.detail


def test_judge_a_size_mismatch_wins_over_a_missing_checksum() -> None:
    result = judge(EXPECTED, "https://se:443", EXPECTED.url, Found(11, None))
    assert result.verdict is Verdict.MISMATCH


def test_judge_compares_only_what_was_reported() -> None:
    nothing = Expected("f", "root://se//f", None, None)
    assert judge(nothing, "root://se:1094", nothing.url, Found(5, None)).verdict is Verdict.OK
    size_only = Expected("f", "root://se//f", 5, None)
    assert judge(size_only, "root://se:1094", nothing.url, Found(5, None)).verdict is Verdict.OK
    assert (
        judge(size_only, "root://se:1094", nothing.url, Found(6, None)).verdict is Verdict.MISMATCH
    )


def test_judge_a_reported_value_that_is_no_adler32_is_a_mismatch() -> None:
    bad = Expected("f", "root://se//f", 12, "not-hex!")
    result = judge(bad, "root://se:1094", bad.url, Found(12, "1e720467"))
    assert result.verdict is Verdict.MISMATCH
    assert "'not-hex!' is not an adler32" in result.detail


def test_judge_shows_the_rewritten_url() -> None:
    result = judge(EXPECTED, "root://door:1094", "root://door//a/b", Found(12, "1e720467"))
    assert "checked as root://door//a/b" in result.detail
    assert result.expected.url == EXPECTED.url
