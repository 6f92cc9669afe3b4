"""``file://`` outputs: ``os.stat`` and adler32 computed here (no server to ask)."""

from __future__ import annotations

import errno
import os
import stat
from urllib.parse import unquote, urlsplit

from act.atlas.storage.model import adler32_of_file
from act.atlas.storage.probe import Found, Missing, Unreachable, one_line


class LocalFileProbe:
    """Checks files on a file system mounted here. ``timeout`` does not apply: a local read."""

    def probe(self, url: str, *, checksum: bool, timeout: float) -> Found:
        path = unquote(urlsplit(url).path)
        try:
            info = os.stat(path)
            if stat.S_ISDIR(info.st_mode):
                raise Missing(f"{path} is a directory, not a file")
            if not stat.S_ISREG(info.st_mode):
                raise Missing(f"{path} is not a regular file")
            return Found(size=info.st_size, adler32=adler32_of_file(path) if checksum else None)
        except OSError as error:
            if error.errno in (errno.ENOENT, errno.ENOTDIR):
                raise Missing(f"no such file {path}") from None
            raise Unreachable(one_line(f"{path}: {error.strerror or error}")) from None

    def close(self) -> None:
        pass
