"""Opening paths below a directory without following any symbolic link on the way.

Files that come from a CE, a pilot or a tarball may be symbolic links, or sit below one
(``gmlog -> /etc``). ``O_NOFOLLOW`` alone only guards the last component, so every component is
opened in turn relative to the previous one (``dir_fd``) with ``O_NOFOLLOW``. Used by
:mod:`act.atlas.pilot_files` (reading) and :mod:`act.common.safe_tar` (writing).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def relative_parts(name: str) -> list[str]:
    """The components of a relative path, ``.`` dropped; ValueError for an absolute path, a
    ``..`` component or an empty name (``''``, ``'.'``)."""
    if name.startswith("/"):
        raise ValueError("absolute path")
    parts = [part for part in PurePosixPath(name).parts if part != "."]
    if ".." in parts:
        raise ValueError("'..' in path")
    if not parts:
        raise ValueError("empty path")
    return parts


def open_parent(
    root: Path | int,
    parts: Sequence[str],
    *,
    create: bool = False,
    made: Callable[[Sequence[str]], None] | None = None,
) -> int:
    """A descriptor of the directory holding ``parts[-1]`` below ``root`` (a path, or an open
    directory descriptor that stays the caller's), reached without following symbolic links.

    ``create``: missing directories are made (mode 0o750), and ``made`` is told the parts of each
    one made. Raises OSError (``ELOOP`` or
    ``ENOTDIR`` for a symbolic link or a non-directory on the way, ``ENOENT`` for a missing one).
    The caller closes the returned descriptor.
    """
    fd = os.open(root, DIR_FLAGS) if isinstance(root, Path) else os.dup(root)
    try:
        for index, part in enumerate(parts[:-1]):
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, 0o750, dir_fd=fd)
                if made is not None:
                    made(parts[: index + 1])
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd
