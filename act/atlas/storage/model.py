"""What an output check is about and what it found: :class:`Expected` in, :class:`FileCheck` out.

The validator builds one :class:`Expected` per output file a job reported (its URL as the pilot
gave it, size and adler32 when reported) and gets one :class:`FileCheck` back from
:class:`act.atlas.storage.checker.StorageChecker`. The helpers here are pure: the endpoint a URL
belongs to (the unit of concurrency limits and of an operator's down switch), adler32 in one
canonical spelling, adler32 of a local file, and the URL rewriting of ``storage.rewrite``.
"""

from __future__ import annotations

import os
import string
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from urllib.parse import urlsplit

CHUNK = 1 << 20  # bytes read at a time by adler32_of_file

#: URL scheme -> (scheme of the endpoint, default port). davs/dav are WebDAV over https/http.
_SCHEMES: dict[str, tuple[str, int]] = {
    "root": ("root", 1094),
    "roots": ("roots", 1094),
    "xroot": ("root", 1094),
    "xroots": ("roots", 1094),
    "https": ("https", 443),
    "davs": ("https", 443),
    "http": ("http", 80),
    "dav": ("http", 80),
}
_HEX = frozenset(string.hexdigits)


@dataclass(frozen=True)
class Expected:
    """One output file as the job reported it."""

    lfn: str
    url: str  # as the pilot reported it (surl)
    size: int | None  # None: not reported
    adler32: str | None  # 8 lowercase hex digits, or None: not reported


class Verdict(str, Enum):
    """The outcome of one file's check."""

    OK = "ok"  # size and checksum match (or nothing to compare was reported)
    MISMATCH = "mismatch"  # size or adler32 differ
    MISSING = "missing"  # storage says the file does not exist
    NO_CHECKSUM = "no_checksum"  # size matches, storage has no adler32 for the file
    UNREACHABLE = "unreachable"  # storage did not answer (connect/TLS/timeout/5xx): retry later
    UNSUPPORTED = "unsupported"  # a scheme we cannot check (srm://, gsiftp://, ...)
    INVALID = "invalid"  # the URL itself is malformed


@dataclass(frozen=True)
class FileCheck:
    """What storage said about one :class:`Expected` file."""

    expected: Expected
    endpoint: str  # see endpoint_of; "" when the URL is malformed
    verdict: Verdict
    size: int | None = None  # what storage says
    adler32: str | None = None  # what storage says, normalised
    # one line for operators and PanDA: names the file (lfn and url), expected and found values,
    # or the error
    detail: str = ""


def endpoint_of(url: str) -> str:
    """The storage endpoint ``url`` belongs to: ``scheme://host:port``, or ``file://``.

    ``davs`` is ``https`` and ``dav`` is ``http`` (WebDAV over HTTP); ``xroot`` is ``root``;
    default ports are filled in (root 1094, https 443, http 80) and the host is lowercased, so
    every spelling of one door is one endpoint. Other schemes (``srm://``, ``gsiftp://``, ...)
    give ``scheme://host[:port]`` as written. Raises ValueError for a malformed URL: no scheme,
    no host, a bad port, blanks or control characters, a ``file://`` URL naming another host.
    """
    if not url or url != url.strip() or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValueError(f"blank or control characters in URL {url!r}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if not scheme or "://" not in url:
        raise ValueError(f"no scheme:// in URL {url!r}")
    try:
        port = parts.port
    except ValueError as error:
        raise ValueError(f"bad port in URL {url!r}: {error}") from None
    host = (parts.hostname or "").lower()
    if scheme == "file":
        if host not in ("", "localhost") or port is not None:
            raise ValueError(f"file URL {url!r} names a host")
        if not parts.path.startswith("/"):
            raise ValueError(f"file URL {url!r} has no absolute path")
        return "file://"
    if not host:
        raise ValueError(f"no host in URL {url!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"credentials in URL {url!r}")
    shown = f"[{host}]" if ":" in host else host
    if scheme in _SCHEMES:
        canonical, default_port = _SCHEMES[scheme]
        return f"{canonical}://{shown}:{port if port is not None else default_port}"
    return f"{scheme}://{shown}" + (f":{port}" if port is not None else "")


def checkable(endpoint: str) -> bool:
    """Whether act has a client for the endpoint's scheme (see :mod:`act.atlas.storage.checker`)."""
    scheme = endpoint.partition("://")[0]
    return scheme in ("root", "roots", "https", "http", "file")


def normalise_adler32(value: str) -> str:
    """``value`` as 8 lowercase hex digits, zero-padded (``'1E72467'`` → ``'01e72467'``).

    Surrounding blanks and an ``ad:`` prefix (PanDA's spelling in its file table) are accepted.
    Raises ValueError for anything that is not 1-8 hex digits.
    """
    text = value.strip()
    if text[:3].lower() == "ad:":
        text = text[3:]
    if not text or len(text) > 8 or not set(text) <= _HEX:
        raise ValueError(f"not an adler32 (1-8 hex digits): {value!r}")
    return text.lower().zfill(8)


def adler32_of_file(path: str | os.PathLike[str]) -> str:
    """adler32 of the file at ``path`` in the canonical spelling, read in 1 MiB chunks."""
    value = 1
    with open(path, "rb") as stream:
        while chunk := stream.read(CHUNK):
            value = zlib.adler32(chunk, value)
    return f"{value & 0xFFFFFFFF:08x}"


def rewrite_url(url: str, rules: Mapping[str, str]) -> str:
    """``url`` with the longest matching prefix of ``rules`` replaced (``storage.rewrite``).

    Sites publish one door and checks go through another (aCT: ``davs://dav.ndgf.org`` →
    another host); a URL no rule matches is returned as it is.
    """
    best = max(
        (prefix for prefix in rules if prefix and url.startswith(prefix)), key=len, default=""
    )
    return rules[best] + url[len(best) :] if best else url
