"""Extracting an untrusted tar archive (a pilot's log tarball) into one directory and nowhere else.

Three layers, each enough on its own for the path checks:

1. Python's own ``tarfile.data_filter`` (PEP 706; the ``filter="data"`` policy) vets every member:
   no absolute or escaping names, no links leading out, no device or FIFO members, no setuid or
   group/other-writable modes. It is a well-kept library part, so it goes first; but its path checks
   rest on ``os.path.realpath``, which Python before 3.11.13 / 3.12.11 / 3.13.4 could be led astray
   by chains of symbolic links (CVE-2025-4517 and relatives), hence the two layers below.
2. Stricter rules of our own: names must be relative without ``..`` (the filter would silently
   strip a leading ``/``), only files, directories and links are accepted, and every symbolic link
   present when the extraction ends is resolved inside ``dest`` component by component (links
   made later can change where earlier ones lead, so this is checked on the final tree).
3. Writing never follows a symbolic link: each path component is opened with ``O_NOFOLLOW``
   relative to its parent (:mod:`act.common.safe_paths`), files are created with ``O_EXCL``, so a
   link in the archive or already in ``dest`` cannot redirect a write.

Caps: at most ``max_files`` members and ``max_bytes`` of file content, checked on the headers'
sizes and again on the bytes written; the decompressed stream as a whole is bounded too (headers
and padding included), so a lying or enormous header cannot make ``tarfile`` read without end.
Modes: files 0o600, or 0o640 when the archive let the group read; directories 0o750.

On any refusal, whatever this call created is removed and :class:`BadArchive` is raised. Other
errors of the local file system (disk full, permissions) are raised as they are, after the same
clean-up.
"""

from __future__ import annotations

import bz2
import contextlib
import errno
import gzip
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from act.common.safe_paths import DIR_FLAGS, UnsafePath, open_parent, relative_parts

if not hasattr(tarfile, "data_filter"):  # pragma: no cover - python_requires keeps it away
    raise ImportError("act.common.safe_tar needs tarfile.data_filter (Python >= 3.10.12, 3.11.4)")

_CHUNK = 1 << 20
_HEADER_ALLOWANCE = 8 << 10  # per member: header block, pax/GNU long-name headers, padding
_END_ALLOWANCE = 64 << 10  # end-of-archive blocks and record padding
_MAX_SYMLINK_HOPS = 40
# An error the archive's content causes while writing: a name through a link, over a file, ...
_ARCHIVE_ERRNOS = {
    errno.ELOOP,
    errno.ENOTDIR,
    errno.EEXIST,
    errno.EISDIR,
    errno.ENAMETOOLONG,
    errno.ENOTEMPTY,
    errno.EMLINK,
}


class BadArchive(ValueError):
    """An archive refused by :func:`extract`; str() is '<archive name>: <reason>'."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = " ".join(reason.split())
        super().__init__(f"{' '.join(name.split())}: {self.reason}")


class _Refused(Exception):
    """Internal: a reason to refuse the archive, turned into BadArchive by extract()."""


class _Bounded:
    """A read-only stream that fails once more than ``limit`` bytes have been read from it."""

    def __init__(
        self, raw: IO[bytes] | gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile, limit: int
    ) -> None:
        self._raw = raw
        self._limit = limit
        self._count = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._limit + 1 - self._count
        data = self._raw.read(min(size, self._limit + 1 - self._count))
        self._count += len(data)
        if self._count > self._limit:
            raise _Refused(f"more than {self._limit} bytes once decompressed")
        return data


def _decompressed(raw: IO[bytes]) -> IO[bytes] | gzip.GzipFile | bz2.BZ2File | lzma.LZMAFile:
    """A decompressing reader chosen by the stream's magic bytes (gzip, bzip2, xz, else plain)."""
    magic = raw.read(6)
    raw.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(raw, mode="rb")
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(raw, mode="rb")
    return raw


def _open_archive(archive: Path) -> IO[bytes]:
    try:
        fd = os.open(archive, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Refused("the archive is a symbolic link") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _Refused("the archive is not a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


class _Extraction:
    """The state of one extract() call: what was made (for clean-up and the result)."""

    def __init__(self, dest: Path, dest_fd: int, max_bytes: int, max_files: int) -> None:
        self.dest = dest
        self.dest_fd = dest_fd
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.members = 0
        self.declared = 0
        self.written = 0
        self.made: list[tuple[tuple[str, ...], bool]] = []  # (parts, is_directory), in order
        self.files: set[tuple[str, ...]] = set()
        self.links: list[tuple[str, ...]] = []

    def note(self, parts: tuple[str, ...], directory: bool) -> None:
        self.made.append((parts, directory))

    def member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        self.members += 1
        if self.members > self.max_files:
            raise _Refused(f"more than {self.max_files} members")
        if member.isreg():
            self.declared += member.size
            if self.declared > self.max_bytes:
                raise _Refused(f"more than {self.max_bytes} bytes of content")
        elif not (member.isdir() or member.issym() or member.islnk()):
            raise _Refused(f"{member.name!r} is a device, FIFO or other special member")
        try:
            parts = tuple(relative_parts(member.name, max_path=None))
        except UnsafePath as exc:
            if member.name.strip("/.") == "" and not member.name.startswith("/"):
                return  # "./": the destination itself
            raise _Refused(f"member {member.name!r}: {exc.reason}") from None
        try:
            filtered = tarfile.data_filter(member, str(self.dest))
        except tarfile.FilterError as exc:
            raise _Refused(f"member {member.name!r}: {exc}") from None
        if member.isdir():
            self._directory(parts)
        elif member.issym():
            self._symlink(parts, filtered.linkname)
        elif member.islnk():
            self._hardlink(parts, filtered.linkname)
        else:
            self._file(parts, tar, member, filtered.mode)

    def _parent(self, parts: tuple[str, ...]) -> int:
        return open_parent(
            self.dest_fd, parts, create=True, made=lambda sub: self.note(tuple(sub), True)
        )

    def _directory(self, parts: tuple[str, ...]) -> None:
        parent = self._parent(parts)
        try:
            try:
                os.mkdir(parts[-1], 0o750, dir_fd=parent)
                self.note(parts, True)
            except FileExistsError:
                os.close(os.open(parts[-1], DIR_FLAGS, dir_fd=parent))  # a directory, no link
        finally:
            os.close(parent)

    def _replace(self, parent: int, name: str) -> None:
        """Make room for a new entry ``name``: a file or link there is removed (as tar does),
        a directory is not (the create then fails with EEXIST)."""
        try:
            info = os.stat(name, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(name, dir_fd=parent)

    def _symlink(self, parts: tuple[str, ...], target: str) -> None:
        if target.startswith("/") or not target:
            raise _Refused(f"symbolic link {'/'.join(parts)!r} to {target!r}")
        parent = self._parent(parts)
        try:
            self._replace(parent, parts[-1])
            os.symlink(target, parts[-1], dir_fd=parent)
        finally:
            os.close(parent)
        self.note(parts, False)
        self.links.append(parts)

    def _hardlink(self, parts: tuple[str, ...], target: str) -> None:
        try:
            source = tuple(relative_parts(target, max_path=None))
        except UnsafePath as exc:
            raise _Refused(f"hard link {'/'.join(parts)!r} to {target!r}: {exc.reason}") from None
        if source not in self.files:
            raise _Refused(
                f"hard link {'/'.join(parts)!r} to {target!r}, not a file of the archive"
            )
        source_parent = open_parent(self.dest_fd, source)
        try:
            parent = self._parent(parts)
            try:
                self._replace(parent, parts[-1])
                os.link(
                    source[-1],
                    parts[-1],
                    src_dir_fd=source_parent,
                    dst_dir_fd=parent,
                    follow_symlinks=False,
                )
            finally:
                os.close(parent)
        finally:
            os.close(source_parent)
        self.note(parts, False)
        self.files.add(parts)

    def _file(
        self, parts: tuple[str, ...], tar: tarfile.TarFile, member: tarfile.TarInfo, mode: Any
    ) -> None:
        source = tar.extractfile(member)
        if source is None:
            raise _Refused(f"member {member.name!r} has no data")
        parent = self._parent(parts)
        try:
            self._replace(parent, parts[-1])
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(parts[-1], flags, 0o600, dir_fd=parent)
        finally:
            os.close(parent)
        self.note(parts, False)
        self.files.add(parts)
        with os.fdopen(fd, "wb") as out:
            written = 0
            for chunk in iter(lambda: source.read(_CHUNK), b""):
                written += len(chunk)
                self.written += len(chunk)
                if written > member.size or self.written > self.max_bytes:
                    raise _Refused(f"more than {self.max_bytes} bytes written")
                out.write(chunk)
            out.flush()  # before the time stamp, which a later write would change
            os.fchmod(out.fileno(), 0o640 if isinstance(mode, int) and mode & 0o040 else 0o600)
            # a nonsense time stamp is not worth refusing the archive
            with contextlib.suppress(OverflowError, ValueError, OSError):
                os.utime(out.fileno(), (member.mtime, member.mtime))

    def check_links(self) -> None:
        """Every symbolic link made must, in the final tree, lead to a place inside dest."""
        for parts in self.links:
            link = _readlink_below(self.dest_fd, list(parts))
            if link is None or not _resolves_inside(self.dest_fd, list(parts[:-1]), link):
                raise _Refused(f"symbolic link {'/'.join(parts)!r} leads outside the destination")

    def remove_made(self) -> None:
        """Undo: remove what this extraction created, newest first (best effort)."""
        for parts, directory in reversed(self.made):
            try:
                parent = open_parent(self.dest_fd, parts)
            except OSError:
                continue
            try:
                if directory:
                    os.rmdir(parts[-1], dir_fd=parent)
                else:
                    os.unlink(parts[-1], dir_fd=parent)
            except OSError:
                pass
            finally:
                os.close(parent)


def _readlink_below(dest_fd: int, parts: list[str]) -> str | None:
    """The text of the link at ``parts`` below dest; None if that is not a link (or unreachable)."""
    try:
        parent = open_parent(dest_fd, parts)
    except OSError:
        return None
    try:
        return os.readlink(parts[-1], dir_fd=parent)
    except OSError:  # EINVAL: not a link; ENOENT: missing
        return None
    finally:
        os.close(parent)


def _resolves_inside(dest_fd: int, base: list[str], target: str) -> bool:
    """Whether the link text ``target``, read in directory ``base`` (parts below dest), leads to a
    place inside dest, following the links it meets there (a realpath confined to dest). Missing
    entries are taken as they are written: the kernel would stop there, reaching nothing."""
    current = list(base)
    pending = target.split("/")[::-1]
    hops = 0
    if target.startswith("/"):
        return False
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if not current:
                return False
            current.pop()
            continue
        current.append(part)
        link = _readlink_below(dest_fd, current)
        if link is None:
            continue
        hops += 1
        if hops > _MAX_SYMLINK_HOPS or link.startswith("/"):
            return False
        current.pop()
        pending.extend(link.split("/")[::-1])
    return True


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while True:
        member = tar.next()
        if member is None:
            return
        yield member


def extract(archive: Path, dest: Path, *, max_bytes: int, max_files: int) -> list[str]:
    """Extract a (gzip/bzip2/xz/plain) tar into dest (created 0o750 if missing), only inside it.
    Refuses (BadArchive, and removes what was extracted) an archive with: absolute paths, '..'
    components, links (sym or hard) pointing outside dest, device/fifo members, more than
    max_files members, more than max_bytes in total (counted from the members' sizes AND while
    writing, since headers can lie), a corrupt/truncated stream. Returns the relative paths written.

    Also refused: a symbolic link as ``archive`` or ``dest``, a hard link to anything but a file
    extracted before it from the same archive, a member written through a symbolic link (from the
    archive or already in dest), an entry that would replace a directory. A member named like an
    existing file or link replaces it (as tar does). Returned paths are POSIX, relative to dest,
    in archive order, each once (directories included).
    """
    name = archive.name
    created_dest = False
    try:
        os.makedirs(dest, 0o750)
        os.chmod(dest, 0o750)
        created_dest = True
    except FileExistsError:
        pass
    try:
        dest_fd = os.open(dest, DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise BadArchive(
                name, "the destination is not a directory (or a symbolic link)"
            ) from None
        raise
    job = _Extraction(dest, dest_fd, max_bytes, max_files)
    try:
        try:
            with _open_archive(archive) as raw:
                stream = _Bounded(
                    _decompressed(raw),
                    max_bytes + _HEADER_ALLOWANCE * (max_files + 1) + _END_ALLOWANCE,
                )
                with tarfile.open(fileobj=stream, mode="r|", bufsize=_CHUNK) as tar:  # type: ignore[call-overload]
                    for member in _members(tar):
                        job.member(tar, member)
            job.check_links()
        except _Refused as exc:
            raise BadArchive(name, str(exc)) from None
        except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise BadArchive(name, f"corrupt or truncated: {exc}") from None
        except ValueError as exc:  # a NUL inside a pax name or link target, ...
            raise BadArchive(name, f"unusable member: {exc}") from None
        except OSError as exc:
            if isinstance(exc, gzip.BadGzipFile) or exc.errno is None:
                raise BadArchive(name, f"corrupt or truncated: {exc}") from None
            if exc.errno in _ARCHIVE_ERRNOS:
                raise BadArchive(name, f"cannot be written inside the destination: {exc}") from None
            raise
    except BaseException:
        job.remove_made()
        os.close(dest_fd)
        if created_dest:
            with contextlib.suppress(OSError):
                os.rmdir(dest)
        raise
    os.close(dest_fd)
    result: dict[str, None] = {}
    for parts, _ in job.made:
        result["/".join(parts)] = None
    return list(result)
