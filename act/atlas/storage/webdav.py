"""``davs://`` / ``https://`` (and ``dav://`` / ``http://``) outputs: HEAD with ``Want-Digest``.

A WebDAV door (XrdHttp, dCache, StoRM, EOS) answers ``HEAD`` with ``Content-Length`` and, asked
with ``Want-Digest: adler32``, a ``Digest: adler32=<hex>`` header (RFC 3230). Some doors send
another algorithm than the one asked for (XrdHttp does), so the algorithm name is checked. When
a door gives no ``Content-Length`` or refuses ``HEAD``, ``PROPFIND`` (``Depth: 0``) gives the
size (never a checksum). 404/410 is a missing file; 5xx, connection and TLS errors, timeouts and
refused access (401/403) mean "ask again later".

The ``requests`` session ignores the environment (``REQUESTS_CA_BUNDLE`` would replace the CA),
verifies TLS with ``storage.ca`` or the system's CAs, and presents ``storage.credential`` (an X509
proxy: certificate and key in one file) as client certificate when configured.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from act.atlas.storage.model import normalise_adler32
from act.atlas.storage.probe import Found, Missing, Unreachable, one_line

_HTTP_SCHEME = {"davs": "https", "dav": "http", "https": "https", "http": "http"}
_GONE = (404, 410)
_NO_HEAD = (405, 501)
MAX_PROPFIND_BYTES = 1 << 20  # a Depth 0 answer is a few hundred bytes; never read more
_PROPFIND_BODY = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<D:propfind xmlns:D="DAV:"><D:prop><D:getcontentlength/><D:resourcetype/></D:prop>'
    "</D:propfind>"
)


def http_url(url: str) -> str:
    """``url`` with ``davs``/``dav`` mapped to ``https``/``http``."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(scheme=_HTTP_SCHEME[parts.scheme.lower()]))


class WebDavProbe:
    """Checks files over HTTP(S)/WebDAV with one keep-alive ``requests`` session."""

    def __init__(self, *, ca: str | None, credential: str | None, pool_size: int) -> None:
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = ca or True
        if credential:
            self.session.cert = credential
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)

    def probe(self, url: str, *, checksum: bool, timeout: float) -> Found:
        target = http_url(url)
        headers = {"Want-Digest": "adler32"} if checksum else {}
        try:
            answer = self.session.head(
                target, headers=headers, timeout=timeout, allow_redirects=True
            )
        except requests.RequestException as error:
            raise Unreachable(one_line(f"HEAD: {_reason(error)}")) from None
        if answer.status_code in _NO_HEAD:
            return Found(self._propfind_size(target, timeout), None, "the door refuses HEAD")
        _raise_for(answer, "HEAD")
        length = answer.headers.get("Content-Length", "")
        size = int(length) if length.isdigit() else self._propfind_size(target, timeout)
        if not checksum:
            return Found(size, None)
        return _digest(size, answer.headers.get("Digest"))

    def _propfind_size(self, target: str, timeout: float) -> int | None:
        try:
            with self.session.request(
                "PROPFIND",
                target,
                headers={"Depth": "0", "Content-Type": "application/xml"},
                data=_PROPFIND_BODY,
                timeout=timeout,
                stream=True,
            ) as answer:
                _raise_for(answer, "PROPFIND")
                body = answer.raw.read(MAX_PROPFIND_BYTES, decode_content=True)
        except requests.RequestException as error:
            raise Unreachable(one_line(f"PROPFIND: {_reason(error)}")) from None
        try:
            root = ET.fromstring(body)
        except ET.ParseError as error:
            raise Unreachable(one_line(f"PROPFIND: unreadable answer ({error})")) from None
        if root.find(".//{DAV:}resourcetype/{DAV:}collection") is not None:
            raise Missing("a directory, not a file")
        length = root.findtext(".//{DAV:}getcontentlength", "").strip()
        return int(length) if length.isdigit() else None

    def close(self) -> None:
        self.session.close()


def _raise_for(answer: requests.Response, method: str) -> None:
    code = answer.status_code
    if code in _GONE:
        raise Missing(f"{method}: HTTP {code} {answer.reason}")
    if not 200 <= code < 300:
        raise Unreachable(one_line(f"{method}: HTTP {code} {answer.reason}"))


def _digest(size: int | None, header: str | None) -> Found:
    """The adler32 of a ``Digest`` header (``adler32=1e720467, md5=...``), if it has one."""
    for item in (header or "").split(","):
        name, _, value = item.partition("=")
        if name.strip().lower() == "adler32":
            try:
                return Found(size, normalise_adler32(value))
            except ValueError:
                return Found(size, None, one_line(f"malformed Digest adler32={value.strip()!r}"))
    if header:
        return Found(size, None, one_line(f"Digest has no adler32: {header!r}"))
    return Found(size, None, "no Digest header in the answer to Want-Digest: adler32")


def _reason(error: requests.RequestException) -> str:
    """A short cause: the innermost exception's text, not urllib3's nested repr."""
    cause: BaseException = error
    while cause.__context__ is not None and len(str(cause)) > 200:
        cause = cause.__context__
    return f"{type(error).__name__}: {cause}"
