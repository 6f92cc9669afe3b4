"""atomic_write: whole new content or the old one, the mode asked for, no leftovers."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from act.common.atomic import atomic_write


@pytest.mark.parametrize("durable", [False, True])
def test_replaces_the_content_with_the_mode_asked_for(tmp_path: Path, durable: bool) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    atomic_write(target, b"new", mode=0o644, durable=durable)
    assert target.read_bytes() == b"new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_default_mode_is_private(tmp_path: Path) -> None:
    target = tmp_path / "cache.json"
    atomic_write(target, b"{}")
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_a_failed_rename_leaves_the_target_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_text("keep")
    with pytest.raises(OSError):
        atomic_write(target, b"data")
    assert (target / "inside").read_text() == "keep"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]
