"""``root://`` (and ``roots://``) outputs: stat and checksum query with the XRootD client.

``FileSystem.stat`` gives the size, ``FileSystem.query(QueryCode.CHECKSUM)`` the server's
checksum as bytes ``b'adler32 1e720467\\x00'`` (algorithm name, hex value, trailing NUL). The
server answers errno 3011 (kXR_NotFound) for a file that does not exist. One ``FileSystem`` per
endpoint is kept; XrdCl multiplexes the calls of all threads over its connection.

XrdCl's defaults would let a dead endpoint take minutes (connection window 120 s, 5 retries,
timeouts checked on a 15 s tick), so the constructor tunes the client process-wide: one
connection attempt, connection window and request timeout the check timeout, a 1 s timeout tick,
and no stream error window (by default XrdCl fails every request to a host for 30 min after its
connection broke, so a storage element that restarted would stay "unreachable"). Every call
passes ``timeout=`` as well. A configured credential is given to XrdCl's GSI through
``X509_USER_PROXY`` and a CA directory through ``X509_CERT_DIR`` (process environment). XrdCl
reads them once, when the process first connects anywhere: a daemon's one checker sets them
before that, but a later checker with other settings in the same process cannot change them.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Any
from urllib.parse import urlsplit

from XRootD import client
from XRootD.client.flags import QueryCode, StatInfoFlags

from act.atlas.storage.model import endpoint_of, normalise_adler32
from act.atlas.storage.probe import Found, Missing, Unreachable, one_line

NOT_FOUND = 3011  # kXR_NotFound
ERROR_RESPONSE = 400  # XrdCl errErrorResponse: the server answered with an error code


class XRootDProbe:
    """Checks files over the xroot protocol (PyPI ``xrootd``)."""

    def __init__(self, *, timeout: float, ca: str | None = None, credential: str | None = None):
        if credential:
            os.environ["X509_USER_PROXY"] = credential
        if ca and os.path.isdir(ca):
            os.environ["X509_CERT_DIR"] = ca
        seconds = _seconds(timeout)
        client.EnvPutInt("ConnectionRetry", 1)
        client.EnvPutInt("ConnectionWindow", seconds)
        client.EnvPutInt("RequestTimeout", seconds)
        client.EnvPutInt("TimeoutResolution", 1)
        client.EnvPutInt("StreamErrorWindow", 0)
        self._lock = threading.Lock()
        self._filesystems: dict[str, Any] = {}

    def _filesystem(self, endpoint: str) -> Any:
        with self._lock:
            if endpoint not in self._filesystems:
                self._filesystems[endpoint] = client.FileSystem(endpoint)
            return self._filesystems[endpoint]

    def probe(self, url: str, *, checksum: bool, timeout: float) -> Found:
        filesystem = self._filesystem(endpoint_of(url))
        path = "/" + urlsplit(url).path.lstrip("/")
        seconds = _seconds(timeout)
        status, info = filesystem.stat(path, timeout=seconds)
        if not status.ok:
            _raise(status, "stat")
        if info.flags & StatInfoFlags.IS_DIR:
            raise Missing(f"{path} is a directory, not a file")
        found = Found(size=int(info.size), adler32=None)
        if not checksum:
            return found
        status, raw = filesystem.query(QueryCode.CHECKSUM, path, timeout=seconds)
        if not status.ok:
            if status.code == ERROR_RESPONSE and status.errno != NOT_FOUND:
                # the server answered but has no checksum to give (not configured, unsupported)
                return Found(found.size, None, one_line(f"checksum query: {status.message}"))
            _raise(status, "checksum query")
        return _parse_checksum(found.size, raw)

    def close(self) -> None:
        with self._lock:
            self._filesystems.clear()


def _seconds(timeout: float) -> int:
    """XrdCl takes whole seconds, 1 to 65535 (an unsigned 16-bit field)."""
    return min(65535, max(1, math.ceil(timeout)))


def _raise(status: Any, what: str) -> None:
    message = one_line(f"{what}: {status.message}")
    if status.code == ERROR_RESPONSE and status.errno == NOT_FOUND:
        raise Missing(message)
    raise Unreachable(message)


def _parse_checksum(size: int | None, raw: bytes | None) -> Found:
    text = (raw or b"").decode("ascii", "replace").rstrip("\x00").strip()
    algorithm, _, value = text.partition(" ")
    if algorithm.lower() != "adler32":
        return Found(size, None, one_line(f"server gave no adler32 but {text!r}"))
    try:
        return Found(size, normalise_adler32(value))
    except ValueError:
        return Found(size, None, one_line(f"server gave a malformed adler32 {value!r}"))
