"""What a per-protocol client tells the checker: :class:`Found`, or :class:`Missing` /
:class:`Unreachable` raised.

Each protocol module (:mod:`.xrootd`, :mod:`.webdav`, :mod:`.localfile`) implements
:class:`Probe`; the comparison with what the job reported is done once, in
:mod:`act.atlas.storage.checker`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Found:
    """The file exists; its size and adler32 as storage reports them."""

    size: int | None  # None: storage did not say
    adler32: str | None  # normalised; None: storage has none (or was not asked)
    note: str = ""  # why adler32 is None when it was asked for


class Missing(Exception):
    """Storage answered that the file does not exist (the message says how)."""


class Unreachable(Exception):
    """Storage did not answer usefully: connection, TLS, timeout, 5xx, refused access."""


class Probe(Protocol):
    """A client for one family of URL schemes."""

    def probe(self, url: str, *, checksum: bool, timeout: float) -> Found:
        """Size (and adler32 when ``checksum``) of the file at ``url``, within ``timeout`` s.

        Raises Missing or Unreachable; never anything else for what storage answers.
        """
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def one_line(text: object) -> str:
    """``text`` on one line (errors from clients may span several), at most 300 characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= 300 else line[:297] + "..."
