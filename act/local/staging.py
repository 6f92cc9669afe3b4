"""The local CE's files: inputs staged from the input directory into a job's working
directory, outputs collected there and copied out with a size cap, and the tail of a job's logs.

Every file is reached through :mod:`act.common.safe_paths` (the one path-safety module): no
symbolic link is followed, on either side. What a payload leaves in its job directory is
untrusted, so a link it planted there is refused wherever it points (a link into the job's own
directory too: following it would need the resolution the rules forbid), naming the link.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from pathlib import Path

from act.common.safe_paths import (
    LINK_ERRNOS,
    LINK_ON_THE_WAY,
    SYMLINK,
    UnsafePath,
    open_dir,
    open_file,
    open_parent,
    relative_parts,
)


class InputError(ValueError):
    """An input file that cannot be staged (missing, a symbolic link, or not a regular file)."""


class UnsafeOutput(ValueError):
    """An output that is not a regular file inside the job directory (e.g. a symlink)."""


def refused(what: str, error: UnsafePath) -> str:
    """The message for a name or file the path rules refused: what it is, the path, why."""
    if error.reason == SYMLINK:
        return f"{what}: {error.path!r} is a symbolic link, not followed"
    if error.reason == LINK_ON_THE_WAY:
        return (
            f"{what}: a directory on the way to {error.path!r} is a symbolic link or not a"
            " directory, not followed"
        )
    return f"{what}: {error.path!r} is refused: {error.reason}"


def tail(path: Path, limit: int) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - limit))
        return handle.read(limit).decode("utf-8", "replace").strip()


def copy_input(input_dir: Path | None, name: str, work: Path) -> None:
    """Copy the regular file ``name`` of ``input_dir`` (act's own directory: its path is resolved)
    to ``work``, mode and times kept; a symbolic link below ``input_dir`` is refused."""
    what = f"job description: inputs: {name!r}"
    if input_dir is None:
        raise InputError(f"{what} given but the job has no input_dir")
    try:
        source = open_file(input_dir.resolve(), name)
    except UnsafePath as error:
        if error.reason not in (SYMLINK, LINK_ON_THE_WAY):
            raise InputError(f"{what} is not a file in {input_dir}") from None
        raise InputError(
            refused("job description: inputs", error)
            + " (a link could lead outside the input directory)"
        ) from None
    except OSError:
        raise InputError(f"{what} is not a file in {input_dir}") from None
    try:
        info = os.fstat(source)
        try:
            target = open_file(
                work, name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, create_dirs=True
            )
        except UnsafePath as error:  # e.g. inputs "a" and "a/b": a file where a directory goes
            what = "job description: inputs, in the working directory"
            raise InputError(refused(what, error)) from None
        try:
            with contextlib.ExitStack() as files:
                reader = files.enter_context(os.fdopen(os.dup(source), "rb"))
                writer = files.enter_context(os.fdopen(os.dup(target), "wb"))
                shutil.copyfileobj(reader, writer, 1 << 20)
            os.fchmod(target, stat.S_IMODE(info.st_mode))
            os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            os.close(target)
    finally:
        os.close(source)


def collect(work: Path, name: str, notes: list[str]) -> list[tuple[str, int]]:
    """The regular files an output names, as (path below ``work``, size): the file, or every
    file below a directory (sockets and FIFOs are not data: left out).

    Nothing is reached through a symbolic link: one met (the output itself, a directory on the
    way, an entry below it) raises UnsafePath naming it, whatever it points at.
    """
    parts = relative_parts(name)
    relative = "/".join(parts)
    try:
        parent = open_parent(work, parts)
    except FileNotFoundError:
        notes.append(f"missing output: {name}")
        return []
    except OSError as error:
        if error.errno in LINK_ERRNOS:
            raise UnsafePath(relative, LINK_ON_THE_WAY) from None
        raise
    try:
        try:
            info = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            notes.append(f"missing output: {name}")
            return []
        if stat.S_ISLNK(info.st_mode):
            raise UnsafePath(relative, SYMLINK)
        if stat.S_ISREG(info.st_mode):
            return [(relative, info.st_size)]
        if not stat.S_ISDIR(info.st_mode):
            raise UnsafeOutput(f"output {name!r} is not a regular file or directory")
        top = open_dir(parent, parts[-1])
    finally:
        os.close(parent)
    found: list[tuple[str, int]] = []
    pending: list[tuple[int, str]] = [(top, relative)]
    try:
        while pending:
            fd, prefix = pending.pop()
            try:
                with os.scandir(fd) as entries:
                    listing = sorted(entries, key=lambda entry: entry.name)
                for entry in listing:
                    path = f"{prefix}/{entry.name}"
                    if entry.is_symlink():
                        raise UnsafePath(path, SYMLINK)
                    if entry.is_dir(follow_symlinks=False):
                        pending.append((open_dir(fd, entry.name), path))
                    elif entry.is_file(follow_symlinks=False):
                        found.append((path, entry.stat(follow_symlinks=False).st_size))
            finally:
                os.close(fd)
    finally:
        for fd, _ in pending:
            os.close(fd)
    return found


def copy_file(root: Path, name: str, target: Path, budget: int) -> int:
    """Copy the regular file ``name`` below ``root`` to ``target`` (a path of act's), no symbolic
    link followed (one swapped in since :func:`collect` is refused); at most ``budget`` bytes."""
    fd = open_file(root, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    copied = 0
    with os.fdopen(fd, "rb") as reader, open(target, "wb") as writer:
        while chunk := reader.read(1 << 20):
            copied += len(chunk)
            if copied > budget:
                raise UnsafeOutput("outputs grew beyond engine.fetch.max_bytes while copied")
            writer.write(chunk)
    return copied
