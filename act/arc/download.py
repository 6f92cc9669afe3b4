"""Fetching an ARC job's session directory safely: names from the CE checked, files created
below the destination without following symlinks, size and count capped."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path, PurePosixPath

from act.arc.rest import ArcRest, RestError


class FetchError(RuntimeError):
    """Outputs that cannot be fetched safely (too large, too many, an unsafe name)."""


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or not path.parts or any(p in ("", ".", "..") for p in path.parts):
        raise FetchError(f"unsafe file name from the CE: {name!r}")
    if any("\x00" in p or "\\" in p for p in path.parts):
        raise FetchError(f"unsafe file name from the CE: {name!r}")
    return path


def _open_below(dest: Path, relative: PurePosixPath) -> int:
    """Create ``dest/relative`` for writing without following any symlink on the way."""
    dirfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        for part in relative.parts[:-1]:
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, 0o750, dir_fd=dirfd)
            try:
                nextfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
            except OSError as error:
                if error.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise FetchError(f"{relative}: {part} is not a plain directory") from None
                raise
            os.close(dirfd)
            dirfd = nextfd
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        try:
            fd = os.open(relative.parts[-1], flags, 0o640, dir_fd=dirfd)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise FetchError(f"{relative} is a symlink in the destination") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FetchError(f"{relative} is not a regular file in the destination")
        return fd
    finally:
        os.close(dirfd)


def download_tree(
    client: ArcRest, job_id: str, dest: Path, max_bytes: int, max_files: int
) -> tuple[list[str], int]:
    dest.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink():
        raise FetchError(f"destination {dest} is a symlink")
    written: list[str] = []
    total = 0
    pending = [PurePosixPath()]
    while pending:
        folder = pending.pop()
        files, dirs = client.listing(job_id, str(folder) if folder.parts else "")
        for name in dirs:
            pending.append(folder / _safe_relative(name))
        for name in files:
            relative = folder / _safe_relative(name)
            if len(written) >= max_files:
                raise FetchError(f"more than {max_files} files in the session directory")
            fd = _open_below(dest, relative)
            with os.fdopen(fd, "wb") as handle:
                try:
                    total += client.download(job_id, str(relative), handle, max_bytes - total)
                except RestError as error:
                    if error.status == 413:
                        raise FetchError(f"outputs larger than {max_bytes} bytes") from None
                    raise
            written.append(str(relative))
    return sorted(written), total
