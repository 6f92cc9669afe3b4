"""Outputs in a job's initialdir: copied into the fetch directory safely, and removed.

The initialdir is written by the schedd with what the job's sandbox sent back, so it is untrusted:
only regular files and plain directories are copied, a symlink is neither followed nor copied (on
either side: every path is opened relative to a directory descriptor with ``O_NOFOLLOW``), and
the copy stops with :class:`FetchError` beyond the caps of ``engine.fetch``.

Subdirectories are copied as they are (a pilot's ``PanDA_Pilot-<PandaID>/jobReport.json`` keeps
its place, where :mod:`act.atlas.pilot_files` looks for it).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path


class FetchError(RuntimeError):
    """Outputs that cannot be fetched within the caps, or safely."""


def remove_tree(path: Path) -> None:
    """Remove a directory the back end made (symlinks inside are removed, never followed)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def copy_tree(source: Path, dest: Path, max_bytes: int, max_files: int) -> tuple[list[str], int]:
    """Copy the regular files under ``source`` into ``dest``, neither following nor copying a
    symlink on either side; FetchError beyond ``max_files`` files or ``max_bytes`` bytes."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    total = 0
    src_fd = os.open(source, _DIR_FLAGS)
    try:
        dst_fd = os.open(dest, _DIR_FLAGS)
    except BaseException:
        os.close(src_fd)
        raise
    pending: list[tuple[int, int, str]] = [(src_fd, dst_fd, "")]
    try:
        while pending:
            sfd, dfd, prefix = pending.pop()
            try:
                with os.scandir(sfd) as entries:
                    listing = sorted(entries, key=lambda e: e.name)
                for entry in listing:
                    relative = f"{prefix}{entry.name}"
                    if entry.is_symlink():
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        with contextlib.suppress(FileExistsError):
                            os.mkdir(entry.name, 0o750, dir_fd=dfd)
                        child_src = os.open(entry.name, _DIR_FLAGS, dir_fd=sfd)
                        try:
                            child_dst = os.open(entry.name, _DIR_FLAGS, dir_fd=dfd)
                        except OSError as error:
                            os.close(child_src)
                            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                                raise FetchError(f"{relative} is not a plain directory") from None
                            raise
                        pending.append((child_src, child_dst, relative + "/"))
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    if len(written) >= max_files:
                        raise FetchError(f"more than {max_files} files in the initialdir")
                    total += _copy_file(sfd, dfd, entry.name, max_bytes - total, relative)
                    written.append(relative)
            finally:
                os.close(sfd)
                os.close(dfd)
    finally:
        for sfd, dfd, _ in pending:
            os.close(sfd)
            os.close(dfd)
    return sorted(written), total


def _copy_file(sfd: int, dfd: int, name: str, room: int, relative: str) -> int:
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=sfd)
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            return 0
        try:
            dst = os.open(
                name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640, dir_fd=dfd
            )
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise FetchError(f"{relative} is a symlink in the destination") from None
            raise
        copied = 0
        try:
            while chunk := os.read(src, 1 << 20):
                copied += len(chunk)
                if copied > room:
                    raise FetchError("outputs larger than the engine.fetch.max_bytes cap")
                view = memoryview(chunk)
                while view:
                    view = view[os.write(dst, view) :]
        finally:
            os.close(dst)
        return copied
    finally:
        os.close(src)
