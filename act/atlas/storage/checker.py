"""StorageChecker: checks a batch of output files on storage, endpoint by endpoint, in parallel.

For each :class:`Expected` file: apply ``storage.rewrite`` to its URL, find its endpoint
(:func:`endpoint_of`), then ask the endpoint's protocol client (:mod:`.xrootd` for ``root://``,
:mod:`.webdav` for ``davs://``/``https://``, :mod:`.localfile` for ``file://``) for size and
adler32 and compare with what the job reported. The answer is one :class:`FileCheck` per file,
in input order; storage trouble is a verdict, never an exception.

Load on storage is bounded: at most ``storage.concurrency`` checks in flight in all and
``storage.per_endpoint`` per endpoint, each within ``storage.timeout``. An endpoint the operator
switched down is not contacted, and once a check of an endpoint is UNREACHABLE the endpoint's
remaining files in the batch are UNREACHABLE without being tried: a dead storage element costs
one timeout per pass (per worker already in flight), not one per file.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from act.atlas.storage.localfile import LocalFileProbe
from act.atlas.storage.model import (
    Expected,
    FileCheck,
    Verdict,
    checkable,
    endpoint_of,
    normalise_adler32,
    rewrite_url,
)
from act.atlas.storage.probe import Found, Missing, Probe, Unreachable, one_line
from act.atlas.storage.settings import StorageSettings
from act.atlas.storage.webdav import WebDavProbe
from act.atlas.storage.xrootd import XRootDProbe

SWITCHED_DOWN = "endpoint switched down by an operator"


@dataclass
class _Pass:
    """One endpoint's files in one ``check`` call, shared by the workers draining it."""

    endpoint: str
    todo: deque[tuple[int, Expected, str]]  # (index in the input, file, URL to check)
    lock: threading.Lock = field(default_factory=threading.Lock)
    failure: str | None = None  # the first UNREACHABLE's cause: skip the rest


class StorageChecker:
    """Size and adler32 checks of output files; see the module docstring.

    ``probes`` maps an endpoint scheme (``root``, ``roots``, ``https``, ``http``, ``file``) to
    its protocol client; tests may wrap them.
    """

    def __init__(self, settings: StorageSettings, log: logging.Logger) -> None:
        self.settings = settings
        self.log = log
        xroot = XRootDProbe(
            timeout=settings.timeout, ca=settings.ca, credential=settings.credential
        )
        web = WebDavProbe(
            ca=settings.ca, credential=settings.credential, pool_size=settings.per_endpoint
        )
        self.probes: dict[str, Probe] = {
            "root": xroot,
            "roots": xroot,
            "https": web,
            "http": web,
            "file": LocalFileProbe(),
        }
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="storage-check")

    def check(self, files: Sequence[Expected], *, down: Collection[str] = ()) -> list[FileCheck]:
        """One FileCheck per file, in input order. Files are grouped per endpoint and checked
        concurrently (at most settings.concurrency in all, settings.per_endpoint per endpoint),
        each with settings.timeout. Endpoints in `down` (operator switched them off) are not
        contacted: their files are UNREACHABLE with detail 'endpoint switched down by an operator'.
        Once one check of an endpoint is UNREACHABLE, its remaining files are UNREACHABLE without
        further calls in this call (do not hammer a dead SE). Never raises for storage errors.

        ``down`` holds endpoints as :func:`endpoint_of` spells them (other spellings of the same
        door are normalised); a file is switched down when the endpoint of its reported URL or
        of its rewritten URL is. ``FileCheck.endpoint`` is the endpoint actually checked.
        """
        switched_down = {_normalised(endpoint) for endpoint in down}
        results: list[FileCheck | None] = [None] * len(files)
        passes: dict[str, _Pass] = {}
        for index, expected in enumerate(files):
            url = rewrite_url(expected.url, self.settings.rewrite)
            try:
                endpoint = endpoint_of(url)
            except ValueError as error:
                results[index] = _verdict(expected, "", url, Verdict.INVALID, f"bad URL: {error}")
                continue
            if not checkable(endpoint):
                scheme = endpoint.partition("://")[0]
                results[index] = _verdict(
                    expected, endpoint, url, Verdict.UNSUPPORTED, f"act cannot check {scheme}://"
                )
            elif endpoint in switched_down or _normalised(expected.url) in switched_down:
                results[index] = _verdict(
                    expected, endpoint, url, Verdict.UNREACHABLE, SWITCHED_DOWN
                )
            else:
                passes.setdefault(endpoint, _Pass(endpoint, deque())).todo.append(
                    (index, expected, url)
                )
        workers = [
            self._pool.submit(self._drain, one_pass, results)
            for one_pass in passes.values()
            for _ in range(min(self.settings.per_endpoint, len(one_pass.todo)))
        ]
        for worker in workers:
            worker.result()
        done = [result for result in results if result is not None]
        assert len(done) == len(files), "a file was left unchecked"
        return done

    def close(self) -> None:
        """Stop the worker threads and drop storage connections."""
        self._pool.shutdown(wait=True)
        for probe in {id(probe): probe for probe in self.probes.values()}.values():
            probe.close()

    # ------------------------------------------------------------------------------ internals
    def _drain(self, one_pass: _Pass, results: list[FileCheck | None]) -> None:
        """Check the pass's files one by one until none is left (one of per_endpoint workers)."""
        while True:
            with one_pass.lock:
                if not one_pass.todo:
                    return
                index, expected, url = one_pass.todo.popleft()
                failure = one_pass.failure
            if failure is not None:
                results[index] = _verdict(
                    expected,
                    one_pass.endpoint,
                    url,
                    Verdict.UNREACHABLE,
                    f"not tried: the endpoint failed earlier in this pass ({failure})",
                )
                continue
            result, cause = self._check_one(expected, one_pass.endpoint, url)
            results[index] = result
            if cause is not None:
                with one_pass.lock:
                    first = one_pass.failure is None
                    if first:
                        one_pass.failure = cause
                    left = len(one_pass.todo)
                if first:
                    self.log.warning(
                        "storage %s unreachable (%s); %d more files there not tried in this pass",
                        one_pass.endpoint,
                        cause,
                        left,
                    )

    def _check_one(
        self, expected: Expected, endpoint: str, url: str
    ) -> tuple[FileCheck, str | None]:
        """The file's check, and the cause when the endpoint did not answer."""
        probe = self.probes[endpoint.partition("://")[0]]
        try:
            found = probe.probe(
                url, checksum=expected.adler32 is not None, timeout=self.settings.timeout
            )
        except Missing as error:
            return _verdict(
                expected, endpoint, url, Verdict.MISSING, f"not on storage: {error}"
            ), None
        except Unreachable as error:
            cause = one_line(error)
        except Exception as error:  # a client's bug or an answer it chokes on: ask again later
            self.log.exception("checking %s on %s failed", url, endpoint)
            cause = one_line(f"internal error {error!r}")
        else:
            return judge(expected, endpoint, url, found), None
        return _verdict(expected, endpoint, url, Verdict.UNREACHABLE, cause), cause


def judge(expected: Expected, endpoint: str, url: str, found: Found) -> FileCheck:
    """Compare what the job reported with what storage says about an existing file.

    Sizes are compared when both are known, adler32 as integers of the normalised hex when the
    job reported one. A reported adler32 that storage cannot give back is NO_CHECKSUM (the
    validator decides); a reported value that is not an adler32 at all is a MISMATCH.
    """
    problems: list[str] = []
    notes: list[str] = []
    if expected.size is not None:
        if found.size is None:
            notes.append("storage gave no size")
        elif found.size != expected.size:
            problems.append(f"size {expected.size} reported, {found.size} on storage")
    no_checksum = False
    if expected.adler32 is not None:
        try:
            wanted: str | None = normalise_adler32(expected.adler32)
        except ValueError:
            wanted = None
            problems.append(f"reported adler32 {expected.adler32!r} is not an adler32")
        if wanted is not None and found.adler32 is None:
            no_checksum = True
            notes.append(f"storage has no adler32 ({found.note or 'not given'})")
        elif (
            wanted is not None
            and found.adler32 is not None
            and int(wanted, 16) != int(found.adler32, 16)
        ):
            problems.append(f"adler32 {wanted} reported, {found.adler32} on storage")
    if problems:
        verdict, text = Verdict.MISMATCH, "; ".join(problems + notes)
    elif no_checksum or (found.size is None and expected.size is not None):
        verdict, text = Verdict.NO_CHECKSUM, "; ".join(notes)
    else:
        verdict = Verdict.OK
        text = f"size {found.size}, adler32 {found.adler32 or 'not compared'}"
        if notes:
            text += "; " + "; ".join(notes)
    return _verdict(expected, endpoint, url, verdict, text, found=found)


def _verdict(
    expected: Expected,
    endpoint: str,
    url: str,
    verdict: Verdict,
    text: str,
    *,
    found: Found | None = None,
) -> FileCheck:
    where = expected.url if url == expected.url else f"{expected.url} (checked as {url})"
    return FileCheck(
        expected=expected,
        endpoint=endpoint,
        verdict=verdict,
        size=found.size if found else None,
        adler32=found.adler32 if found else None,
        detail=one_line(f"{expected.lfn} at {where}: {verdict.value}: {text}"),
    )


def _normalised(url_or_endpoint: str) -> str:
    try:
        return endpoint_of(url_or_endpoint)
    except ValueError:
        return url_or_endpoint
