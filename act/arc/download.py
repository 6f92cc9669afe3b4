"""Fetching an ARC job's session directory safely: names from the CE checked, files created
below the destination without following symlinks, size and count capped."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from act.arc.rest import ArcRest, RestError
from act.common import safe_paths


class FetchError(RuntimeError):
    """Outputs that cannot be fetched safely (too large, too many, an unsafe name)."""


def _safe_relative(name: str) -> PurePosixPath:
    """A file name from the CE's listing, checked by the common rules (act.common.safe_paths);
    a backslash is refused too (no CE has one in a session directory's names)."""
    try:
        parts = safe_paths.relative_parts(name)
    except safe_paths.UnsafePath as error:
        raise FetchError(f"unsafe file name from the CE: {name!r} ({error.reason})") from None
    if "\\" in name:
        raise FetchError(f"unsafe file name from the CE: {name!r} (backslash)")
    return PurePosixPath(*parts)


def _open_below(dest: Path, relative: PurePosixPath) -> int:
    """Create ``dest/relative`` for writing without following any symlink on the way."""
    try:
        return safe_paths.open_file(
            dest, str(relative), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640, create_dirs=True
        )
    except safe_paths.UnsafePath as error:
        if error.reason == safe_paths.SYMLINK:
            raise FetchError(f"{relative} is a symlink in the destination") from None
        if error.reason == safe_paths.NOT_REGULAR:
            raise FetchError(f"{relative} is not a regular file in the destination") from None
        raise FetchError(f"{relative}: a directory on the way is not a plain directory") from None


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
