"""The local CE's files: inputs staged from the input directory into a job's working
directory, outputs collected there (never through a link out of it) and copied out with a
size cap, and the tail of a job's logs."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

from act.common.safe_paths import safe_relative


class InputError(ValueError):
    """An input file that cannot be staged (missing, or outside the input directory)."""


class UnsafeOutput(ValueError):
    """An output that is not a regular file inside the job directory (e.g. a symlink out)."""


def tail(path: Path, limit: int) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as handle:
        handle.seek(max(0, os.fstat(handle.fileno()).st_size - limit))
        return handle.read(limit).decode("utf-8", "replace").strip()


def copy_input(input_dir: Path | None, name: str, work: Path) -> None:
    if input_dir is None:
        raise InputError(f"job description: inputs: {name!r} given but the job has no input_dir")
    base = input_dir.resolve()
    source = (input_dir / name).resolve()
    if not source.is_relative_to(base):
        raise InputError(f"job description: inputs: {name!r} leads outside the input directory")
    if not source.is_file():
        raise InputError(f"job description: inputs: {name!r} is not a file in {input_dir}")
    target = work / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source, target)


def collect(work: Path, name: str, notes: list[str]) -> list[tuple[Path, str]]:
    """The regular files an output names: the file, or every file below a directory.

    Symbolic links are followed only if they stay inside the job's working directory; a link out
    of it makes the whole fetch fail (the payload is not trusted).
    """
    base = work.resolve()
    path = work / safe_relative(name)
    if not os.path.lexists(path):
        notes.append(f"missing output: {name}")
        return []
    real = path.resolve()
    if not real.is_relative_to(base):
        raise UnsafeOutput(f"output {name!r} points outside the job directory")
    if real.is_file():
        return [(real, name)]
    if not real.is_dir():
        raise UnsafeOutput(f"output {name!r} is not a regular file or directory")
    found: list[tuple[Path, str]] = []
    for folder, dirs, files in os.walk(real):
        for entry in dirs + files:
            full = Path(folder) / entry
            inside = full.resolve()
            if not inside.is_relative_to(base):
                raise UnsafeOutput(f"output {name!r}: {entry!r} points outside the job directory")
            if entry in files:
                if not inside.is_file():
                    continue  # sockets, fifos: not data
                found.append((inside, str(Path(name) / full.relative_to(real))))
    return found


def copy_file(source: Path, target: Path, budget: int) -> int:
    """Copy without following a link swapped in meanwhile; at most ``budget`` bytes."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as error:
        raise UnsafeOutput(f"cannot read {source.name!r}: {error.strerror}") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    copied = 0
    with os.fdopen(fd, "rb") as reader:
        if not stat.S_ISREG(os.fstat(reader.fileno()).st_mode):
            raise UnsafeOutput(f"{source.name!r} is not a regular file")
        with open(target, "wb") as writer:
            while chunk := reader.read(1 << 20):
                copied += len(chunk)
                if copied > budget:
                    raise UnsafeOutput("outputs grew beyond engine.fetch.max_bytes while copied")
                writer.write(chunk)
    return copied
