"""Names and files below a directory, never following a symbolic link: the one rule set for
every path that comes from a CE, a pilot, a job description or a tarball.

Standard library only (the local CE's stage-out process imports it and must start fast).

Names (:func:`relative_parts`, :func:`safe_relative`) must be relative POSIX paths: not empty,
not absolute, no ``..`` component, no NUL, at most :data:`MAX_PATH` bytes in all and
:data:`MAX_COMPONENT` bytes per component (UTF-8). ``.`` components and repeated slashes are
dropped (``./a//b`` is ``a/b``); a name that is only ``.`` names the directory itself and is
refused. A refused name raises :class:`UnsafePath` (a ValueError) naming it and the reason.

Opening (:func:`open_parent`, :func:`open_file`, :func:`open_dir`): ``O_NOFOLLOW`` alone only
guards the last component, so every component is opened in turn relative to the previous one
(``dir_fd``) with ``O_NOFOLLOW | O_DIRECTORY``: a symbolic link anywhere on the way
(``gmlog -> /etc``), or swapped in meanwhile, fails the open instead of being followed. The
root itself is opened with ``O_NOFOLLOW`` (its own last component); the directories above it are
the caller's.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

#: Flags to open a directory, never a symbolic link to one.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: Longest name accepted, in UTF-8 bytes (Linux's PATH_MAX).
MAX_PATH = 4096
#: Longest component accepted, in UTF-8 bytes (Linux's NAME_MAX).
MAX_COMPONENT = 255
#: errno values of an open that met a symbolic link or a non-directory on the way.
LINK_ERRNOS = frozenset({errno.ELOOP, errno.ENOTDIR, errno.EMLINK})

#: The reasons of :class:`UnsafePath` raised on opening (the name's own are free text).
SYMLINK = "a symbolic link"
NOT_REGULAR = "not a regular file"
NOT_DIRECTORY = "a symbolic link or not a directory"
LINK_ON_THE_WAY = "a directory on the way is a symbolic link or not a directory"


class UnsafePath(ValueError):
    """A name or a file refused by the rules; str() is ``'<path>': <reason>``."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path!r}: {reason}")


def relative_parts(name: str, *, max_path: int | None = MAX_PATH) -> list[str]:
    """The components of a relative name (``.`` and empty ones dropped); UnsafePath otherwise.

    ``max_path`` None: no bound on the whole name (a tarball's members, written component by
    component through directory descriptors, can lawfully go deeper than PATH_MAX); the bound
    per component stays."""
    if not isinstance(name, str):
        raise UnsafePath(repr(name), "not a string")
    if "\x00" in name:
        raise UnsafePath(name, "NUL character in path")
    if name.startswith("/"):
        raise UnsafePath(name, "absolute path")
    if max_path is not None and len(name.encode("utf-8", "surrogateescape")) > max_path:
        raise UnsafePath(name, f"longer than {max_path} bytes")
    parts = [part for part in PurePosixPath(name).parts if part != "."]
    if ".." in parts:
        raise UnsafePath(name, "'..' in path")
    if not parts:
        raise UnsafePath(name, "empty path")
    for part in parts:
        if len(part.encode("utf-8", "surrogateescape")) > MAX_COMPONENT:
            raise UnsafePath(name, f"a component is longer than {MAX_COMPONENT} bytes")
    return parts


def safe_relative(name: str) -> str:
    """``name`` normalised (``./a//b`` is ``a/b``) if it passes :func:`relative_parts`."""
    return "/".join(relative_parts(name))


def open_parent(
    root: Path | str | int,
    parts: Sequence[str],
    *,
    create: bool = False,
    made: Callable[[Sequence[str]], None] | None = None,
) -> int:
    """A descriptor of the directory holding ``parts[-1]`` below ``root`` (a path, or an open
    directory descriptor that stays the caller's), reached without following symbolic links.

    ``parts`` come from :func:`relative_parts`. ``create``: missing directories are made (mode
    0o750), and ``made`` is told the parts of each one made. Raises OSError (``ELOOP`` or
    ``ENOTDIR`` for a symbolic link or a non-directory on the way, ``ENOENT`` for a missing one).
    The caller closes the returned descriptor.
    """
    fd = os.dup(root) if isinstance(root, int) else os.open(root, DIR_FLAGS)
    try:
        for index, part in enumerate(parts[:-1]):
            try:
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    os.mkdir(part, 0o750, dir_fd=fd)
                except FileExistsError:
                    pass  # made meanwhile (or a dangling link: the open below refuses it)
                else:
                    if made is not None:
                        made(parts[: index + 1])
                child = os.open(part, DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_file(
    root: Path | str | int,
    name: str,
    flags: int = os.O_RDONLY,
    mode: int = 0o600,
    *,
    create_dirs: bool = False,
) -> int:
    """A descriptor of the regular file ``name`` below ``root``, no symbolic link followed.

    ``flags`` as for :func:`os.open` (``O_NOFOLLOW | O_CLOEXEC`` are added; the open does not
    block on a FIFO). ``create_dirs``: missing directories on the way are made (0o750).
    Raises UnsafePath for a refused name, a symbolic link or non-directory on the way, or a
    file that is not regular; other OSError (``ENOENT``, ``EACCES``) as they are.
    """
    parts = relative_parts(name)
    try:
        parent = open_parent(root, parts, create=create_dirs)
    except OSError as error:
        if error.errno in LINK_ERRNOS:
            raise UnsafePath(name, LINK_ON_THE_WAY) from None
        raise
    try:
        fd = os.open(
            parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode, dir_fd=parent
        )
    except OSError as error:
        if error.errno in LINK_ERRNOS:
            raise UnsafePath(name, SYMLINK) from None
        if error.errno == errno.ENXIO:  # a FIFO without a reader, opened for writing
            raise UnsafePath(name, NOT_REGULAR) from None
        raise
    finally:
        os.close(parent)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePath(name, NOT_REGULAR)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_dir(root: Path | str | int, name: str | None = None) -> int:
    """A descriptor of the directory ``root`` (``name`` None) or ``name`` below it, no symbolic
    link followed; UnsafePath for a refused name or a link or non-directory met; other OSError
    as they are."""
    if name is None:
        try:
            return os.dup(root) if isinstance(root, int) else os.open(root, DIR_FLAGS)
        except OSError as error:
            if error.errno in LINK_ERRNOS:
                raise UnsafePath(str(root), NOT_DIRECTORY) from None
            raise
    parts = relative_parts(name)
    try:
        parent = open_parent(root, parts)
        try:
            return os.open(parts[-1], DIR_FLAGS, dir_fd=parent)
        finally:
            os.close(parent)
    except OSError as error:
        if error.errno in LINK_ERRNOS:
            raise UnsafePath(name, NOT_DIRECTORY) from None
        raise
