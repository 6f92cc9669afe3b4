"""act.common.safe_tar: extracting untrusted tarballs only inside the destination, within caps."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from act.common.safe_tar import BadArchive, extract

Member = tuple[str, str, object]  # (kind, name, data or link target)
Compression = Literal["gz", "bz2", "xz", ""]  # "" for a plain tar
WRITE_MODES: dict[Compression, Literal["w:gz", "w:bz2", "w:xz", "w:"]] = {
    "gz": "w:gz",
    "bz2": "w:bz2",
    "xz": "w:xz",
    "": "w:",
}


def _info(kind: str, name: str, payload: object) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.mtime = 1_700_000_000
    if kind == "file":
        data = payload if isinstance(payload, bytes) else str(payload).encode()
        info.size = len(data)
        info.mode = 0o644
        return info, data
    if kind == "dir":
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    elif kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = str(payload)
    elif kind == "hardlink":
        info.type = tarfile.LNKTYPE
        info.linkname = str(payload)
    elif kind == "fifo":
        info.type = tarfile.FIFOTYPE
    elif kind == "chardev":
        info.type = tarfile.CHRTYPE
        info.devmajor, info.devminor = 1, 3
    else:
        raise AssertionError(kind)
    return info, None


def _tar(path: Path, members: Sequence[Member], compression: Compression = "gz") -> Path:
    with tarfile.open(path, WRITE_MODES[compression], format=tarfile.PAX_FORMAT) as tar:
        for kind, name, payload in members:
            info, data = _info(kind, name, payload)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    return tmp_path / "out" / "job"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to dest that nothing may touch."""
    path = tmp_path / "outside"
    path.mkdir()
    (path / "keep").write_text("original")
    return path


def _refused(archive: Path, dest: Path, reason: str, **caps: int) -> BadArchive:
    with pytest.raises(BadArchive) as caught:
        extract(
            archive,
            dest,
            max_bytes=caps.get("max_bytes", 1 << 20),
            max_files=caps.get("max_files", 100),
        )
    assert str(caught.value).startswith(f"{archive.name}: ")
    assert reason in caught.value.reason, caught.value.reason
    return caught.value


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def _untouched(outside: Path) -> None:
    assert _tree(outside) == ["keep"]
    assert (outside / "keep").read_text() == "original"


# --- what is extracted -----------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz", ""])
def test_a_normal_log_tarball_is_extracted(
    tmp_path: Path, dest: Path, compression: Compression
) -> None:
    archive = _tar(
        tmp_path / f"log.tar.{compression or 'plain'}",
        [
            ("dir", "tarball_PandaJob_1", None),
            ("file", "tarball_PandaJob_1/pilotlog.txt", b"pilot says hi\n"),
            ("file", "./tarball_PandaJob_1/sub/payload.stdout", b"x" * 3000),
            ("symlink", "tarball_PandaJob_1/latest", "pilotlog.txt"),
            ("symlink", "tarball_PandaJob_1/sub/up", "../pilotlog.txt"),
            ("hardlink", "tarball_PandaJob_1/copy.txt", "tarball_PandaJob_1/pilotlog.txt"),
        ],
        compression,
    )
    written = extract(archive, dest, max_bytes=10_000, max_files=10)
    assert written == [
        "tarball_PandaJob_1",
        "tarball_PandaJob_1/pilotlog.txt",
        "tarball_PandaJob_1/sub",
        "tarball_PandaJob_1/sub/payload.stdout",
        "tarball_PandaJob_1/latest",
        "tarball_PandaJob_1/sub/up",
        "tarball_PandaJob_1/copy.txt",
    ]
    top = dest / "tarball_PandaJob_1"
    assert (top / "latest").read_text() == "pilot says hi\n"
    assert (top / "sub" / "up").read_text() == "pilot says hi\n"
    assert os.stat(top / "copy.txt").st_ino == os.stat(top / "pilotlog.txt").st_ino
    assert stat.S_IMODE(dest.stat().st_mode) == 0o750
    assert stat.S_IMODE(top.stat().st_mode) == 0o750
    assert stat.S_IMODE((top / "pilotlog.txt").stat().st_mode) == 0o640
    assert (top / "pilotlog.txt").stat().st_mtime == 1_700_000_000


def test_modes_are_capped_at_0640_and_lose_setuid(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "modes.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, mode in [("suid", 0o4777), ("private", 0o600), ("odd", 0o007)]:
            info = tarfile.TarInfo(name)
            info.mode = mode
            tar.addfile(info, io.BytesIO(b""))
    extract(archive, dest, max_bytes=100, max_files=10)
    modes = {
        name: stat.S_IMODE((dest / name).stat().st_mode) for name in ("suid", "private", "odd")
    }
    assert modes == {"suid": 0o640, "private": 0o600, "odd": 0o600}


@pytest.mark.slow
def test_ten_thousand_entries_within_the_caps_are_extracted(tmp_path: Path, dest: Path) -> None:
    members: list[Member] = [("file", f"d{i // 1000}/f{i}", b"y") for i in range(10_000)]
    archive = _tar(tmp_path / "many.tgz", members)
    written = extract(archive, dest, max_bytes=10_000, max_files=10_000)
    assert len(written) == 10_010  # 10 directories made on the way
    assert (dest / "d9" / "f9999").read_bytes() == b"y"


@pytest.mark.slow
def test_more_members_than_max_files_are_refused_and_removed(tmp_path: Path, dest: Path) -> None:
    members: list[Member] = [("file", f"d{i // 1000}/f{i}", b"y") for i in range(10_000)]
    archive = _tar(tmp_path / "many.tgz", members)
    _refused(archive, dest, "more than 9999 members", max_bytes=10_000, max_files=9_999)
    assert not dest.exists()


def test_a_refusal_keeps_what_was_in_dest_before(tmp_path: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    (dest / "mine.txt").write_text("before")
    archive = _tar(
        tmp_path / "x.tgz",
        [("file", "a/b.txt", b"1"), ("file", "c.txt", b"2"), ("file", "../x", b"")],
    )
    _refused(archive, dest, "'..'")
    assert _tree(dest) == ["mine.txt"]
    assert (dest / "mine.txt").read_text() == "before"


# --- paths and links -------------------------------------------------------------------------


def test_dot_dot_is_refused(tmp_path: Path, dest: Path, outside: Path) -> None:
    archive = _tar(
        tmp_path / "x.tgz", [("file", "ok.txt", b"1"), ("file", "../../outside/x", b"2")]
    )
    _refused(archive, dest, "'..' in path")
    _untouched(outside)
    assert not dest.exists()


def test_dot_dot_inside_is_refused_too(tmp_path: Path, dest: Path) -> None:
    archive = _tar(tmp_path / "x.tgz", [("file", "a/../b", b"2")])
    _refused(archive, dest, "'..' in path")


def test_an_absolute_path_is_refused(tmp_path: Path, dest: Path, outside: Path) -> None:
    archive = _tar(tmp_path / "x.tgz", [("file", str(outside / "evil"), b"2")])
    _refused(archive, dest, "absolute path")
    _untouched(outside)


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "a/../../../outside/keep"])
def test_a_symlink_pointing_out_is_refused(
    tmp_path: Path, dest: Path, outside: Path, target: str
) -> None:
    archive = _tar(tmp_path / "x.tgz", [("symlink", "link", target)])
    _refused(archive, dest, "link")
    assert not dest.exists()


def test_a_file_written_through_an_outward_symlink_is_refused(
    tmp_path: Path, dest: Path, outside: Path
) -> None:
    archive = _tar(
        tmp_path / "x.tgz", [("symlink", "l", str(outside)), ("file", "l/keep", b"evil")]
    )
    _refused(archive, dest, "link")
    _untouched(outside)


def test_no_write_goes_through_a_symlink_even_one_inside(tmp_path: Path, dest: Path) -> None:
    archive = _tar(
        tmp_path / "x.tgz", [("dir", "sub", None), ("symlink", "l", "sub"), ("file", "l/f", b"1")]
    )
    _refused(archive, dest, "cannot be written inside the destination")
    assert not dest.exists()


def test_a_symlink_already_in_dest_is_never_followed(
    tmp_path: Path, dest: Path, outside: Path
) -> None:
    dest.mkdir(parents=True)
    (dest / "pre").symlink_to(outside)
    _refused(_tar(tmp_path / "x.tgz", [("file", "pre/keep", b"evil")]), dest, "")
    _untouched(outside)
    # A member named like a link leading out is refused too (the data filter resolves it).
    (dest / "file").symlink_to(outside / "keep")
    _refused(_tar(tmp_path / "y.tgz", [("file", "file", b"new")]), dest, "outside the destination")
    assert (dest / "file").is_symlink()
    _untouched(outside)


def test_a_member_replaces_a_file_or_inner_link_already_in_dest(tmp_path: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("old")
    (dest / "inner").symlink_to("old.txt")
    archive = _tar(tmp_path / "y.tgz", [("file", "inner", b"new"), ("file", "old.txt", b"newer")])
    assert extract(archive, dest, max_bytes=10, max_files=5) == ["inner", "old.txt"]
    assert not (dest / "inner").is_symlink()
    assert (dest / "inner").read_text() == "new"
    assert (dest / "old.txt").read_text() == "newer"


def test_symlinks_composed_to_escape_are_refused(tmp_path: Path, dest: Path) -> None:
    """Each link alone stays inside when made (d is missing, then d -> '.'), together they lead
    out: l -> d/.. -> ./.. (the check runs on the final tree)."""
    archive = _tar(tmp_path / "x.tgz", [("symlink", "l", "d/.."), ("symlink", "d", ".")])
    _refused(archive, dest, "symbolic link 'l' leads outside the destination")
    assert not dest.exists()


def test_a_symlink_loop_is_refused(tmp_path: Path, dest: Path) -> None:
    archive = _tar(tmp_path / "x.tgz", [("symlink", "a", "b"), ("symlink", "b", "a")])
    _refused(archive, dest, "leads outside")


@pytest.mark.parametrize("target", ["../outside/keep", "/etc/passwd", "missing.txt"])
def test_a_hard_link_out_or_to_nothing_of_the_archive_is_refused(
    tmp_path: Path, dest: Path, outside: Path, target: str
) -> None:
    archive = _tar(tmp_path / "x.tgz", [("file", "a", b"1"), ("hardlink", "h", target)])
    _refused(archive, dest, "")
    _untouched(outside)
    assert not dest.exists()


def test_a_hard_link_to_a_file_already_in_dest_is_refused(tmp_path: Path, dest: Path) -> None:
    dest.mkdir(parents=True)
    (dest / "secret").write_text("s")
    _refused(_tar(tmp_path / "x.tgz", [("hardlink", "h", "secret")]), dest, "not a file of the")
    assert _tree(dest) == ["secret"]


@pytest.mark.parametrize("kind", ["fifo", "chardev"])
def test_special_members_are_refused(tmp_path: Path, dest: Path, kind: str) -> None:
    _refused(_tar(tmp_path / "x.tgz", [(kind, "dev", None)]), dest, "special member")


def test_an_archive_that_is_a_symlink_is_refused(tmp_path: Path, dest: Path) -> None:
    real = _tar(tmp_path / "real.tgz", [("file", "a", b"1")])
    (tmp_path / "link.tgz").symlink_to(real)
    _refused(tmp_path / "link.tgz", dest, "the archive is a symbolic link")


# --- sizes and corrupt streams ---------------------------------------------------------------


def test_a_gzip_bomb_is_refused_from_its_header(tmp_path: Path, dest: Path) -> None:
    archive = tmp_path / "bomb.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("zeros")
        info.size = 200 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    assert archive.stat().st_size < 1 << 20  # a small download...
    _refused(archive, dest, "more than 1048576 bytes of content")  # ...refused before writing
    assert not dest.exists()


def test_the_total_over_several_members_counts(tmp_path: Path, dest: Path) -> None:
    archive = _tar(tmp_path / "x.tgz", [("file", f"f{i}", b"z" * 400) for i in range(3)])
    _refused(archive, dest, "more than 1000 bytes", max_bytes=1000)
    assert extract(archive, dest, max_bytes=1200, max_files=3) == ["f0", "f1", "f2"]


def test_an_enormous_header_cannot_make_tarfile_read_without_end(
    tmp_path: Path, dest: Path
) -> None:
    """A pax header is read whole into memory by tarfile: the stream bound stops it."""
    archive = tmp_path / "pax.tgz"
    with tarfile.open(archive, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a")
        info.pax_headers = {"comment": "c" * (4 << 20)}
        tar.addfile(info, io.BytesIO(b""))
    _refused(archive, dest, "bytes once decompressed", max_bytes=1000, max_files=10)


def test_a_header_lying_about_its_size_is_refused(tmp_path: Path, dest: Path) -> None:
    """The header says 1 MB, the data that follows is 10 bytes then the end: truncated."""
    info = tarfile.TarInfo("liar")
    info.size = 1 << 20
    raw = info.tobuf(format=tarfile.USTAR_FORMAT) + b"0123456789".ljust(512, b"\0") + bytes(1024)
    (tmp_path / "liar.tar").write_bytes(raw)
    _refused(tmp_path / "liar.tar", dest, "corrupt or truncated", max_bytes=2 << 20)
    assert not dest.exists()


@pytest.mark.parametrize("compression", ["gz", ""])
def test_a_truncated_archive_is_refused(
    tmp_path: Path, dest: Path, compression: Compression
) -> None:
    good = _tar(tmp_path / "good", [("file", "a", os.urandom(20_000))], compression)
    data = good.read_bytes()
    (tmp_path / "cut").write_bytes(data[: len(data) // 2])
    _refused(tmp_path / "cut", dest, "corrupt or truncated")
    assert not dest.exists()


@pytest.mark.parametrize(
    "content", [b"", b"this is not a tar file at all" * 40, b"\x1f\x8b" + b"garbage" * 100]
)
def test_not_a_tar_is_refused(tmp_path: Path, dest: Path, content: bytes) -> None:
    (tmp_path / "x.tgz").write_bytes(content)
    _refused(tmp_path / "x.tgz", dest, "corrupt or truncated")


def test_gzip_of_not_a_tar_is_refused(tmp_path: Path, dest: Path) -> None:
    (tmp_path / "x.gz").write_bytes(gzip.compress(b"plain text, no tar here\n" * 100))
    _refused(tmp_path / "x.gz", dest, "corrupt or truncated")


@pytest.mark.parametrize("field", ["path", "linkpath"])
def test_a_nul_inside_a_pax_name_is_refused(tmp_path: Path, dest: Path, field: str) -> None:
    archive = tmp_path / "nul.tar"
    with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("plain")
        if field == "linkpath":
            info.type = tarfile.SYMTYPE
        info.pax_headers = {field: "a\x00b"}
        tar.addfile(info, io.BytesIO(b""))
    _refused(archive, dest, "")
    assert not dest.exists()


def test_a_destination_that_is_a_symlink_is_refused(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "dest").symlink_to(outside)
    archive = _tar(tmp_path / "x.tgz", [("file", "a", b"1")])
    _refused(archive, tmp_path / "dest", "the destination is not a directory")
    _untouched(outside)


def _long_chain() -> tuple[list[Member], str]:
    """Directories with 247-character names and one-letter links to them, 16 deep: the path
    a/b/.../p is short, what it resolves to is longer than PATH_MAX."""
    comp = "d" * 247
    members: list[Member] = []
    path = ""
    for step in "abcdefghijklmnop":
        members.append(("dir", os.path.join(path, comp), None))
        members.append(("symlink", os.path.join(path, step), comp))
        path = os.path.join(path, comp)
    return members, path


def test_the_realpath_overflow_attack_is_refused(tmp_path: Path, dest: Path, outside: Path) -> None:
    """The shape of CVE-2025-4517's proof of concept: past PATH_MAX ``os.path.realpath`` (and so
    ``data_filter``) of Python < 3.11.13 stops resolving; a link then climbs out and a file is
    written through it. Seen on this venv's Python 3.11.7: ``extractall(filter="data")`` of this
    archive overwrites outside/keep. Here the write through a link is refused."""
    members, _ = _long_chain()
    linkpath = os.path.join(*"abcdefghijklmnop", "l" * 254)
    members.append(("symlink", linkpath, os.path.join(*[".."] * 16)))
    climb = os.path.join(linkpath, *[".."] * 4, str(outside).lstrip("/"))
    members.append(("symlink", "escape", climb))
    members.append(("file", "escape/keep", b"overwritten"))
    _refused(_tar(tmp_path / "poc.tar", members, ""), dest, "cannot be written inside")
    _untouched(outside)
    assert not dest.exists()


def test_a_link_escaping_past_path_max_is_caught_on_the_final_tree(
    tmp_path: Path, dest: Path, outside: Path
) -> None:
    """The same chain without writing through links: only the final check (resolving each link
    component by component, with no PATH_MAX) sees that 'escape' leads out."""
    members, deepest = _long_chain()
    members.append(("symlink", os.path.join(deepest, "l" * 254), os.path.join(*[".."] * 16)))
    linkpath = os.path.join(*"abcdefghijklmnop", "l" * 254)
    members.append(("symlink", "escape", os.path.join(linkpath, "..", "outside")))
    _refused(_tar(tmp_path / "poc.tar", members, ""), dest, "'escape' leads outside")
    _untouched(outside)
    assert not dest.exists()


_SEED_MEMBERS: list[Member] = [
    ("dir", "d", None),
    ("file", "d/a.txt", b"alpha\n" * 30),
    ("symlink", "d/l", "a.txt"),
    ("hardlink", "d/h", "d/a.txt"),
    ("file", "b.txt", b"beta"),
]


def _seed_tar() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for kind, name, payload in _SEED_MEMBERS:
            info, data = _info(kind, name, payload)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


_SEED = _seed_tar()


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_SEED) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
    cut=st.integers(0, len(_SEED)),
    compress=st.booleans(),
)
def test_fuzz_damaged_archives_only_extract_inside_or_are_refused(
    tmp_path_factory: pytest.TempPathFactory,
    edits: list[tuple[int, int]],
    cut: int,
    compress: bool,
) -> None:
    root = tmp_path_factory.mktemp("fuzz")
    data = bytearray(_SEED)
    for offset, value in edits:
        data[offset] = value
    raw = bytes(data[: max(cut, 512)])
    (root / "x.tar").write_bytes(gzip.compress(raw) if compress else raw)
    (root / "outside").mkdir()
    try:
        written = extract(root / "x.tar", root / "dest", max_bytes=10_000, max_files=20)
    except BadArchive as error:
        assert "\n" not in str(error)
        assert not (root / "dest").exists()
    else:
        for name in written:
            assert (root / "dest" / name).is_symlink() or (root / "dest" / name).exists()
    assert sorted(p.name for p in root.iterdir()) in (
        ["dest", "outside", "x.tar"],
        ["outside", "x.tar"],
    )
    assert list((root / "outside").iterdir()) == []
