"""The one rule set for untrusted names and files below a directory (act.common.safe_paths)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path, PurePosixPath

import pytest

from act.arc.download import FetchError as ArcFetchError
from act.arc.download import _open_below
from act.common import safe_paths
from act.common.safe_paths import (
    UnsafePath,
    open_dir,
    open_file,
    open_parent,
    relative_parts,
    safe_relative,
)
from act.condor.outputs import FetchError as CondorFetchError
from act.condor.outputs import copy_tree

GOOD = [
    ("a", ["a"], "a"),
    ("a/b/c.txt", ["a", "b", "c.txt"], "a/b/c.txt"),
    ("./a", ["a"], "a"),
    ("a//b/./c", ["a", "b", "c"], "a/b/c"),
    ("a/", ["a"], "a"),
    ("..a/b..", ["..a", "b.."], "..a/b.."),
    ("a b/é", ["a b", "é"], "a b/é"),
    ("x" * 255, ["x" * 255], "x" * 255),
    ("/".join(["y" * 200] * 20), ["y" * 200] * 20, "/".join(["y" * 200] * 20)),
]

BAD = [
    ("", "empty path"),
    (".", "empty path"),
    ("./", "empty path"),
    ("/etc/passwd", "absolute path"),
    ("//x", "absolute path"),
    ("..", "'..' in path"),
    ("../x", "'..' in path"),
    ("a/../../x", "'..' in path"),
    ("a/..", "'..' in path"),
    ("a\x00b", "NUL character in path"),
    ("x" * 256, "a component is longer than 255 bytes"),
    ("é" * 128, "a component is longer than 255 bytes"),
    ("/".join(["y" * 200] * 21), "longer than 4096 bytes"),
]


@pytest.mark.parametrize(("name", "parts", "normal"), GOOD)
def test_good_names(name: str, parts: list[str], normal: str) -> None:
    assert relative_parts(name) == parts
    assert safe_relative(name) == normal


@pytest.mark.parametrize(("name", "reason"), BAD)
def test_bad_names_name_the_path_and_the_reason(name: str, reason: str) -> None:
    with pytest.raises(UnsafePath) as caught:
        relative_parts(name)
    assert caught.value.path == name
    assert caught.value.reason == reason
    assert str(caught.value) == f"{name!r}: {reason}"
    assert isinstance(caught.value, ValueError)
    with pytest.raises(UnsafePath):
        safe_relative(name)


def test_a_name_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(UnsafePath, match="not a string"):
        relative_parts(b"a")  # type: ignore[arg-type]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/a/b/c/file.txt, and an outside directory holding a decoy at every level."""
    root = tmp_path / "root"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "file.txt").write_text("inside")
    outside = tmp_path / "outside"
    (outside / "b" / "c").mkdir(parents=True)
    (outside / "b" / "c" / "file.txt").write_text("outside")
    (outside / "c").mkdir()
    (outside / "c" / "file.txt").write_text("outside")
    (outside / "file.txt").write_text("outside")
    return root


def _read(fd: int) -> str:
    with os.fdopen(fd, "rb") as handle:
        return handle.read().decode()


def test_open_file_reads_below_the_root(tree: Path) -> None:
    assert _read(open_file(tree, "a/b/c/file.txt")) == "inside"
    fd = open_dir(tree)
    try:
        assert _read(open_file(fd, "./a//b/c/file.txt")) == "inside"
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    ("link", "target", "reason"),
    [
        ("a", "outside", safe_paths.LINK_ON_THE_WAY),
        ("a/b", "outside/b", safe_paths.LINK_ON_THE_WAY),
        ("a/b/c", "outside/c", safe_paths.LINK_ON_THE_WAY),
        ("a/b/c/file.txt", "outside/file.txt", safe_paths.SYMLINK),
    ],
)
def test_a_symlink_at_any_level_is_never_followed(
    tree: Path, link: str, target: str, reason: str
) -> None:
    path = tree / link
    if path.is_dir():
        os.rename(path, path.with_name(path.name + ".moved"))
    else:
        path.unlink()
    path.symlink_to(tree.parent / target)
    with pytest.raises(UnsafePath) as caught:
        open_file(tree, "a/b/c/file.txt")
    assert caught.value.reason == reason
    assert caught.value.path == "a/b/c/file.txt"
    with pytest.raises(UnsafePath):  # creating through it is refused too
        open_file(tree, "a/b/c/file.txt", os.O_WRONLY | os.O_CREAT, create_dirs=True)
    for decoy in (tree.parent / "outside").rglob("file.txt"):
        assert decoy.read_text() == "outside"


def test_the_root_itself_must_not_be_a_symlink(tree: Path, tmp_path: Path) -> None:
    (tmp_path / "alias").symlink_to(tree)
    with pytest.raises(UnsafePath, match="a symbolic link or not a directory"):
        open_dir(tmp_path / "alias")
    with pytest.raises(OSError):  # the low-level call keeps the errno
        open_parent(tmp_path / "alias", ["x"])


def test_a_non_regular_file_is_refused_without_blocking(tree: Path) -> None:
    os.mkfifo(tree / "fifo")
    with pytest.raises(UnsafePath, match="not a regular file"):
        open_file(tree, "fifo")
    with pytest.raises(UnsafePath, match="not a regular file"):
        open_file(tree, "fifo", os.O_WRONLY)
    with pytest.raises(UnsafePath, match="not a regular file"):
        open_file(tree, "a", os.O_RDONLY)


def test_missing_files_and_directories_raise_file_not_found(tree: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_file(tree, "a/nope/file.txt")
    with pytest.raises(FileNotFoundError):
        open_file(tree, "a/nope.txt")


def test_create_dirs_makes_the_missing_directories(tree: Path) -> None:
    made: list[list[str]] = []
    parent = open_parent(
        tree, ["x", "y", "z.txt"], create=True, made=lambda p: made.append(list(p))
    )
    os.close(parent)
    assert made == [["x"], ["x", "y"]]
    assert oct((tree / "x").stat().st_mode & 0o777) == "0o750"
    fd = open_file(
        tree, "n/m/new.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640, create_dirs=True
    )
    os.write(fd, b"ok")
    os.close(fd)
    assert (tree / "n" / "m" / "new.txt").read_text() == "ok"
    assert oct((tree / "n" / "m" / "new.txt").stat().st_mode & 0o777) == "0o640"


def test_open_dir_below(tree: Path) -> None:
    fd = open_dir(tree, "a/b")
    try:
        assert sorted(os.listdir(fd)) == ["c"]
    finally:
        os.close(fd)
    with pytest.raises(UnsafePath, match="not a directory"):
        open_dir(tree, "a/b/c/file.txt")


def test_descriptors_are_close_on_exec(tree: Path) -> None:
    fd = open_file(tree, "a/b/c/file.txt")
    try:
        assert not os.get_inheritable(fd)
        assert os.get_blocking(fd)
    finally:
        os.close(fd)


def test_a_symlink_swapped_in_during_the_walk_is_not_followed(tree: Path) -> None:
    """A race: another thread swaps a directory of the path for a link out, over and over; every
    open either reads the file inside or is refused, never the decoy outside."""
    middle = tree / "a" / "b"
    moved = tree / "a" / "b.real"
    outside = tree.parent / "outside" / "b"
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            os.rename(middle, moved)
            middle.symlink_to(outside)
            middle.unlink()
            os.rename(moved, middle)

    swapper = threading.Thread(target=swap)
    swapper.start()
    seen: set[str] = set()
    try:
        for _ in range(2000):
            try:
                seen.add(_read(open_file(tree, "a/b/c/file.txt")))
            except (UnsafePath, FileNotFoundError):
                seen.add("refused")
    finally:
        stop.set()
        swapper.join()
    assert "outside" not in seen


def test_the_module_needs_only_the_standard_library() -> None:
    code = (
        "import sys, act.common.safe_paths; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic', 'sqlalchemy', 'yaml', 'lxml')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_tarball_may_go_deeper_than_path_max() -> None:
    deep = "/".join(["y" * 200] * 21)
    assert len(relative_parts(deep, max_path=None)) == 21
    with pytest.raises(UnsafePath, match="component is longer"):
        relative_parts("x" * 256, max_path=None)


# -- where the callers were weaker before: a FIFO in the destination blocked their write ----------


@pytest.mark.timeout(20)
def test_a_fifo_in_the_destination_no_longer_blocks_the_fetches(tmp_path: Path) -> None:
    source = tmp_path / "initialdir"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "out.txt").write_text("data")
    (source / "top.txt").write_text("top")
    dest = tmp_path / "dest"
    (dest / "sub").mkdir(parents=True)
    os.mkfifo(dest / "sub" / "out.txt")
    with pytest.raises(CondorFetchError, match="not a regular file in the destination"):
        copy_tree(source, dest, max_bytes=1 << 20, max_files=10)
    os.mkfifo(dest / "arc.txt")
    with pytest.raises(ArcFetchError, match="not a regular file in the destination"):
        _open_below(dest, PurePosixPath("arc.txt"))


def test_an_initialdir_that_is_a_symlink_is_a_fetch_error(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    with pytest.raises(CondorFetchError, match="initialdir"):
        copy_tree(tmp_path / "alias", tmp_path / "dest", max_bytes=1, max_files=1)
