"""Outputs in a job's initialdir: copied into the fetch directory safely, and removed.

The initialdir is written by the schedd with what the job's sandbox sent back, so it is untrusted:
only regular files and plain directories are copied, a symlink is neither followed nor copied (on
either side: every path is opened relative to a directory descriptor with ``O_NOFOLLOW``, by
:mod:`act.common.safe_paths`; one swapped in meanwhile is skipped on the source side), and the
copy stops with :class:`FetchError` beyond the caps of ``engine.fetch``.

Subdirectories are copied as they are (a pilot's ``PanDA_Pilot-<PandaID>/jobReport.json`` keeps
its place, where :mod:`act.atlas.pilot_files` looks for it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from act.common.safe_paths import SYMLINK, UnsafePath, open_dir, open_file


class FetchError(RuntimeError):
    """Outputs that cannot be fetched within the caps, or safely."""


def remove_tree(path: Path) -> None:
    """Remove a directory the back end made (symlinks inside are removed, never followed)."""
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)


def copy_tree(source: Path, dest: Path, max_bytes: int, max_files: int) -> tuple[list[str], int]:
    """Copy the regular files under ``source`` into ``dest``, neither following nor copying a
    symlink on either side; FetchError beyond ``max_files`` files or ``max_bytes`` bytes."""
    dest.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    total = 0
    try:
        src_fd = open_dir(source)
    except UnsafePath as error:
        raise FetchError(f"the initialdir {error}") from None
    try:
        dst_fd = open_dir(dest)
    except UnsafePath as error:
        os.close(src_fd)
        raise FetchError(f"the destination {error}") from None
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
                        try:
                            child_src = open_dir(sfd, entry.name)
                        except UnsafePath:
                            continue  # a symlink swapped in since the listing
                        try:
                            child_dst = open_dir(dfd, entry.name)
                        except UnsafePath:
                            os.close(child_src)
                            raise FetchError(f"{relative} is not a plain directory") from None
                        except BaseException:
                            os.close(child_src)
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
    try:
        src = open_file(sfd, name)
    except UnsafePath:
        return 0  # not a regular file (or a symlink swapped in since the listing)
    try:
        try:
            dst = open_file(dfd, name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        except UnsafePath as error:
            if error.reason == SYMLINK:
                raise FetchError(f"{relative} is a symlink in the destination") from None
            raise FetchError(f"{relative} is not a regular file in the destination") from None
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
