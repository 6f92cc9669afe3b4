"""StorageChecker against the real XRootD server of tests/harness/xrootd-server (root://, https://,
davs://), the local file system (file://), and, for doors without checksums, a plain HTTP server
(labelled as such below)."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from act.atlas.storage.checker import SWITCHED_DOWN, StorageChecker
from act.atlas.storage.model import Expected, FileCheck, Verdict, endpoint_of
from act.atlas.storage.probe import Found, Probe
from act.atlas.storage.settings import StorageSettings
from tests.support.xrootd_real import REPO, PrivateXRootD, XRootDServer

pytestmark = pytest.mark.storage

LOG = logging.getLogger("test.storage")
PROTOCOLS = ["root", "https", "davs"]


def url_of(server: XRootDServer, protocol: str, path: str) -> str:
    method: Callable[[str], str] = getattr(server, protocol)
    return method(path)


@pytest.fixture
def unique() -> str:
    """A directory of this test's own under the server's data directory."""
    return f"act-tests/{uuid.uuid4().hex}"


def make_checker(server: XRootDServer | None = None, **values: object) -> StorageChecker:
    settings = StorageSettings(timeout=5, ca=str(server.ca) if server else None)
    return StorageChecker(settings.model_copy(update=values), LOG)


@pytest.fixture
def checker(xrootd_server: XRootDServer) -> Iterator[StorageChecker]:
    made = make_checker(xrootd_server)
    yield made
    made.close()


class Counting:
    """Wraps a real probe: counts calls and the most checks in flight, in all and per endpoint."""

    def __init__(self, inner: Probe, *, pause: float = 0.0) -> None:
        self.inner = inner
        self.pause = pause
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.most: Counter[str] = Counter()
        self.most_total = 0

    def probe(self, url: str, *, checksum: bool, timeout: float) -> Found:
        endpoint = endpoint_of(url)
        with self.lock:
            self.calls[endpoint] += 1
            self.in_flight[endpoint] += 1
            self.most[endpoint] = max(self.most[endpoint], self.in_flight[endpoint])
            self.most_total = max(self.most_total, sum(self.in_flight.values()))
        try:
            if self.pause:
                time.sleep(self.pause)  # keeps checks overlapping so the bounds are exercised
            return self.inner.probe(url, checksum=checksum, timeout=timeout)
        finally:
            with self.lock:
                self.in_flight[endpoint] -= 1

    def close(self) -> None:
        self.inner.close()


def count_all(checker: StorageChecker, *, pause: float = 0.0) -> Counting:
    """One counter shared by every scheme's probe (concurrency is bounded across protocols)."""
    counting = Counting(_Dispatch(dict(checker.probes)), pause=pause)
    for scheme in list(checker.probes):
        checker.probes[scheme] = counting
    return counting


class _Dispatch:
    def __init__(self, probes: dict[str, Probe]) -> None:
        self.probes = probes

    def probe(self, url: str, *, checksum: bool, timeout: float) -> Found:
        scheme = endpoint_of(url).partition("://")[0]
        return self.probes[scheme].probe(url, checksum=checksum, timeout=timeout)

    def close(self) -> None:
        for probe in set(self.probes.values()):
            probe.close()


def verdicts(results: list[FileCheck]) -> list[Verdict]:
    return [result.verdict for result in results]


# ------------------------------------------------------------------------------- matching files
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_matching_files_are_ok_with_what_storage_computed(
    xrootd_server: XRootDServer, checker: StorageChecker, unique: str, protocol: str
) -> None:
    payloads = {
        "tiny.bin": b"\x00\x01",
        "hello.txt": b"hello world\n",
        "big.root": os.urandom(3_000_000),
    }
    files = []
    for name, content in payloads.items():
        size, adler = xrootd_server.write(f"{unique}/{name}", content)
        files.append(
            Expected(name, url_of(xrootd_server, protocol, f"{unique}/{name}"), size, adler)
        )
    results = checker.check(files)
    assert verdicts(results) == [Verdict.OK] * 3, [r.detail for r in results]
    for expected, result in zip(files, results, strict=True):
        assert result.expected == expected
        assert (result.size, result.adler32) == (expected.size, expected.adler32)
    assert results[0].adler32 == "00030002"  # zero-padded like the pilot's
    assert results[0].endpoint == endpoint_of(
        url_of(xrootd_server, "https" if protocol == "davs" else protocol, "x")
    )


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_empty_file_has_adler32_00000001(
    xrootd_server: XRootDServer, checker: StorageChecker, unique: str, protocol: str
) -> None:
    size, adler = xrootd_server.write(f"{unique}/empty", b"")
    assert (size, adler) == (0, "00000001")
    [result] = checker.check(
        [Expected("empty", url_of(xrootd_server, protocol, f"{unique}/empty"), 0, adler)]
    )
    assert result.verdict is Verdict.OK, result.detail
    assert (result.size, result.adler32) == (0, "00000001")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_different_size_is_a_mismatch(
    xrootd_server: XRootDServer, checker: StorageChecker, unique: str, protocol: str
) -> None:
    size, adler = xrootd_server.write(f"{unique}/out.root", b"x" * 1000)
    url = url_of(xrootd_server, protocol, f"{unique}/out.root")
    [result] = checker.check([Expected("out.root", url, size + 1, adler)])
    assert result.verdict is Verdict.MISMATCH
    assert result.size == 1000
    assert "size 1001 reported, 1000 on storage" in result.detail
    assert "out.root" in result.detail and url in result.detail


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_different_checksum_is_a_mismatch(
    xrootd_server: XRootDServer, checker: StorageChecker, unique: str, protocol: str
) -> None:
    size, adler = xrootd_server.write(f"{unique}/out.root", b"payload of the job")
    wrong = f"{(int(adler, 16) + 1) & 0xFFFFFFFF:08x}"
    url = url_of(xrootd_server, protocol, f"{unique}/out.root")
    [result] = checker.check([Expected("out.root", url, size, wrong)])
    assert result.verdict is Verdict.MISMATCH
    assert result.adler32 == adler
    assert f"adler32 {wrong} reported, {adler} on storage" in result.detail


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_file_not_on_storage_is_missing(
    xrootd_server: XRootDServer, checker: StorageChecker, unique: str, protocol: str
) -> None:
    xrootd_server.write(f"{unique}/other", b"something else")
    url = url_of(xrootd_server, protocol, f"{unique}/never-written.root")
    [result] = checker.check([Expected("never-written.root", url, 10, "00000001")])
    assert result.verdict is Verdict.MISSING, result.detail
    assert "never-written.root" in result.detail


def test_size_only_when_no_checksum_was_reported(
    xrootd_server: XRootDServer, checker: StorageChecker, unique: str
) -> None:
    size, _ = xrootd_server.write(f"{unique}/f", b"abc")
    results = checker.check(
        [
            Expected("f", xrootd_server.root(f"{unique}/f"), size, None),
            Expected("f", xrootd_server.https(f"{unique}/f"), None, None),
            Expected("f", xrootd_server.root(f"{unique}/f"), size + 1, None),
        ]
    )
    assert verdicts(results) == [Verdict.OK, Verdict.OK, Verdict.MISMATCH]
    assert results[0].adler32 is None  # not asked for


# ------------------------------------------------------------------------------- file://
def test_local_files(xrootd_server: XRootDServer, checker: StorageChecker, unique: str) -> None:
    size, adler = xrootd_server.write(f"{unique}/local.root", b"local payload")
    results = checker.check(
        [
            Expected("a", xrootd_server.file(f"{unique}/local.root"), size, adler),
            Expected("b", xrootd_server.file(f"{unique}/local.root"), size, "0badc0de"),
            Expected("c", xrootd_server.file(f"{unique}/absent.root"), size, adler),
            Expected("d", xrootd_server.file(unique), None, None),  # a directory
        ]
    )
    assert verdicts(results) == [Verdict.OK, Verdict.MISMATCH, Verdict.MISSING, Verdict.MISSING]
    assert results[0].endpoint == "file://"
    assert (results[0].size, results[0].adler32) == (size, adler)


# ------------------------------------------------------------------------------- batches
def test_a_mixed_batch_keeps_input_order(
    xrootd_server: XRootDServer, checker: StorageChecker, unique: str
) -> None:
    size, adler = xrootd_server.write(f"{unique}/f", b"mixed")
    files = [
        Expected("1", "srm://srm.example.org:8443/srm/managerv2?SFN=/x", 1, None),
        Expected("2", xrootd_server.root(f"{unique}/f"), size, adler),
        Expected("3", "root:/broken", 1, None),
        Expected("4", xrootd_server.davs(f"{unique}/f"), size, adler),
        Expected("5", xrootd_server.root(f"{unique}/gone"), size, adler),
        Expected("6", xrootd_server.file(f"{unique}/f"), size, adler),
        Expected("7", "gsiftp://gridftp.example.org/x", 1, None),
    ]
    results = checker.check(files)
    assert [r.expected.lfn for r in results] == [f.lfn for f in files]
    assert verdicts(results) == [
        Verdict.UNSUPPORTED,
        Verdict.OK,
        Verdict.INVALID,
        Verdict.OK,
        Verdict.MISSING,
        Verdict.OK,
        Verdict.UNSUPPORTED,
    ]
    assert "srm://" in results[0].detail
    assert results[2].endpoint == ""
    assert checker.check([]) == []


def test_rewrite_checks_another_door_and_keeps_the_reported_url(
    xrootd_server: XRootDServer, unique: str
) -> None:
    size, adler = xrootd_server.write(f"{unique}/f", b"rewritten")
    published = "davs://dav.example.org:443/"
    made = make_checker(xrootd_server, rewrite={published: xrootd_server.https("")})
    try:
        [result] = made.check([Expected("f", f"{published}{unique}/f", size, adler)])
    finally:
        made.close()
    assert result.verdict is Verdict.OK, result.detail
    assert result.expected.url == f"{published}{unique}/f"
    assert result.endpoint == endpoint_of(xrootd_server.https_url)
    assert f"checked as {xrootd_server.https(f'{unique}/f')}" in result.detail


def test_a_door_switched_down_under_its_published_name_is_not_contacted(
    xrootd_server: XRootDServer, unique: str
) -> None:
    size, adler = xrootd_server.write(f"{unique}/f", b"published")
    published = "davs://dav.example.org:443/"
    made = make_checker(xrootd_server, rewrite={published: xrootd_server.https("")})
    counting = count_all(made)
    try:
        [result] = made.check(
            [Expected("f", f"{published}{unique}/f", size, adler)],
            down=["https://dav.example.org:443"],
        )
    finally:
        made.close()
    assert result.verdict is Verdict.UNREACHABLE
    assert SWITCHED_DOWN in result.detail
    assert sum(counting.calls.values()) == 0


# ------------------------------------------------------------------------------- load bounds
def test_concurrency_is_bounded_in_all_and_per_endpoint(
    xrootd_server: XRootDServer, unique: str
) -> None:
    made = make_checker(xrootd_server, concurrency=3, per_endpoint=2)
    counting = count_all(made, pause=0.02)
    files = []
    for i in range(8):
        size, adler = xrootd_server.write(f"{unique}/f{i}", f"file {i}".encode())
        for protocol in ("root", "https", "file"):
            files.append(
                Expected(f"f{i}", url_of(xrootd_server, protocol, f"{unique}/f{i}"), size, adler)
            )
    try:
        results = made.check(files)
    finally:
        made.close()
    assert verdicts(results) == [Verdict.OK] * len(files)
    assert sum(counting.calls.values()) == len(files)
    assert counting.most_total == 3  # the bound is reached, never passed
    assert set(counting.most.values()) == {2}


def test_an_endpoint_switched_down_is_not_contacted(
    xrootd_server: XRootDServer, checker: StorageChecker, unique: str
) -> None:
    counting = count_all(checker)
    size, adler = xrootd_server.write(f"{unique}/f", b"down")
    files = [
        Expected("a", xrootd_server.root(f"{unique}/f"), size, adler),
        Expected("b", xrootd_server.davs(f"{unique}/f"), size, adler),
        Expected("c", xrootd_server.file(f"{unique}/f"), size, adler),
    ]
    # the https door, switched down under its davs:// spelling
    down = {xrootd_server.davs(""), "root://unrelated.example.org:1094"}
    results = checker.check(files, down=down)
    assert verdicts(results) == [Verdict.OK, Verdict.UNREACHABLE, Verdict.OK]
    assert SWITCHED_DOWN in results[1].detail
    assert counting.calls[endpoint_of(xrootd_server.https_url)] == 0
    assert verdicts(checker.check(files, down=[endpoint_of(xrootd_server.root_url)])) == [
        Verdict.UNREACHABLE,
        Verdict.OK,
        Verdict.OK,
    ]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("scheme", ["root", "https"])
def test_a_closed_port_is_unreachable_and_tried_once_per_worker(
    xrootd_server: XRootDServer, unique: str, scheme: str
) -> None:
    port = closed_port()
    made = make_checker(xrootd_server, per_endpoint=2)
    counting = count_all(made)
    base = f"root://127.0.0.1:{port}//" if scheme == "root" else f"https://127.0.0.1:{port}/"
    files = [Expected(f"f{i}", f"{base}{unique}/f{i}", 1, "00000001") for i in range(20)]
    try:
        started = time.monotonic()
        results = made.check(files)
        elapsed = time.monotonic() - started
    finally:
        made.close()
    assert verdicts(results) == [Verdict.UNREACHABLE] * 20
    # at most the workers already running try it; the rest are not tried
    assert counting.calls[endpoint_of(base)] <= 2
    assert sum("not tried" in result.detail for result in results) >= 18
    assert elapsed < made.settings.timeout  # refused connections fail at once, not per file


@pytest.mark.parametrize("scheme", ["root", "https"])
def test_a_server_that_never_answers_costs_one_timeout_per_pass(unique: str, scheme: str) -> None:
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # the kernel accepts connections; nobody ever reads or answers
    port = silent.getsockname()[1]
    made = make_checker(timeout=2, per_endpoint=2)
    counting = count_all(made)
    base = f"root://127.0.0.1:{port}//" if scheme == "root" else f"https://127.0.0.1:{port}/"
    files = [Expected(f"f{i}", f"{base}{unique}/f{i}", 1, "00000001") for i in range(10)]
    try:
        started = time.monotonic()
        results = made.check(files)
        elapsed = time.monotonic() - started
    finally:
        made.close()
        silent.close()
    assert verdicts(results) == [Verdict.UNREACHABLE] * 10
    assert counting.calls[endpoint_of(base)] <= 2
    # bounded by the timeout of the checks in flight, not by 10 files x 2 s (generous margin)
    assert elapsed < 3 * made.settings.timeout, elapsed


def test_storage_down_then_back(private_xrootd_server: PrivateXRootD, unique: str) -> None:
    server = private_xrootd_server.server
    made = make_checker(server, timeout=5)
    files = []
    for i in range(4):
        size, adler = server.write(f"{unique}/f{i}", f"back {i}".encode())
        files += [
            Expected(f"r{i}", server.root(f"{unique}/f{i}"), size, adler),
            Expected(f"h{i}", server.https(f"{unique}/f{i}"), size, adler),
        ]
    try:
        assert verdicts(made.check(files)) == [Verdict.OK] * len(files)
        private_xrootd_server.stop()
        started = time.monotonic()
        down = made.check(files)
        elapsed = time.monotonic() - started
        assert verdicts(down) == [Verdict.UNREACHABLE] * len(files), [r.detail for r in down]
        assert elapsed < made.settings.timeout  # the stopped server refuses: no waiting
        private_xrootd_server.start()
        back = made.check(files)
        assert verdicts(back) == [Verdict.OK] * len(files), [r.detail for r in back]
    finally:
        made.close()


# ------------------------------------------------------------------------------- no checksum
class NoDigestDoor(BaseHTTPRequestHandler):
    """A plain HTTP server standing in for a WebDAV door that has no checksums (XrdHttp always
    sends a Digest, so it cannot play that part). Paths: /plain (HEAD with Content-Length, no
    Digest), /nolength (HEAD without Content-Length; PROPFIND gives the size), /md5 (a Digest of
    another algorithm), /several (several algorithms, upper case), /busy (503)."""

    CONTENT = b"twelve bytes"

    def do_HEAD(self) -> None:
        if self.path == "/plain":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.CONTENT)))
        elif self.path == "/nolength":
            self.send_response(200)
        elif self.path in ("/md5", "/several"):
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.CONTENT)))
            digest = "md5=XrY7u+Ae7tCTyyK7j1rNww=="
            if self.path == "/several":
                digest += ", ADLER32=1E720467"
            self.send_header("Digest", digest)
        elif self.path == "/busy":
            self.send_response(503)
            self.send_header("Content-Length", "0")
        else:
            self.send_response(404)
            self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PROPFIND(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = (
            b'<?xml version="1.0"?><D:multistatus xmlns:D="DAV:"><D:response><D:href>/nolength'
            b"</D:href><D:propstat><D:prop><D:getcontentlength>12</D:getcontentlength>"
            b"<D:resourcetype/></D:prop><D:status>HTTP/1.1 200 OK</D:status></D:propstat>"
            b"</D:response></D:multistatus>"
        )
        self.send_response(207)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def no_digest_door() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), NoDigestDoor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_door_without_checksums(no_digest_door: str) -> None:
    made = make_checker()
    try:
        results = made.check(
            [
                Expected("a", f"{no_digest_door}/plain", 12, "1e720467"),
                Expected("b", f"{no_digest_door}/plain", 12, None),
                Expected("c", f"{no_digest_door}/plain", 11, "1e720467"),
                Expected("d", f"{no_digest_door}/nolength", 12, "1e720467"),
                Expected("e", f"{no_digest_door}/nolength", 12, None),
                Expected("f", f"{no_digest_door}/missing", 12, None),
                Expected("g", f"{no_digest_door}/md5", 12, "1e720467"),
                Expected("h", f"{no_digest_door}/several", 12, "1e720467"),
            ]
        )
        [busy] = made.check([Expected("g", f"{no_digest_door}/busy", 12, None)])
    finally:
        made.close()
    assert verdicts(results) == [
        Verdict.NO_CHECKSUM,
        Verdict.OK,
        Verdict.MISMATCH,
        Verdict.NO_CHECKSUM,
        Verdict.OK,
        Verdict.MISSING,
        Verdict.NO_CHECKSUM,
        Verdict.OK,
    ]
    assert "no Digest header" in results[0].detail
    assert "Digest has no adler32" in results[6].detail
    assert results[7].adler32 == "1e720467"
    assert results[4].size == 12  # from PROPFIND
    assert busy.verdict is Verdict.UNREACHABLE
    assert "503" in busy.detail


ROOTS_CHECK = """
import json, logging, sys
from act.atlas.storage.checker import StorageChecker
from act.atlas.storage.model import Expected
from act.atlas.storage.settings import StorageSettings
ca, *urls = sys.argv[1:]
checker = StorageChecker(StorageSettings(timeout=5, ca=ca), logging.getLogger("roots"))
files = [Expected("f", url, int(size), adler) for url, size, adler in zip(*[iter(urls)] * 3)]
print(json.dumps([[r.verdict.value, r.endpoint, r.detail] for r in checker.check(files)]))
checker.close()
"""


def test_a_ca_directory_serves_roots_and_https(xrootd_server: XRootDServer, unique: str) -> None:
    """In a process of its own: XrdCl reads X509_CERT_DIR once, at its first connection, and
    earlier tests of this session have connected already (see act/atlas/storage/xrootd.py)."""
    size, adler = xrootd_server.write(f"{unique}/f", b"xroot over TLS")
    arguments = [str(xrootd_server.ca_dir)]
    for url in (xrootd_server.roots(f"{unique}/f"), xrootd_server.https(f"{unique}/f")):
        arguments += [url, str(size), adler]
    done = subprocess.run(
        [sys.executable, "-c", ROOTS_CHECK, *arguments],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    assert [verdict for verdict, _, _ in results] == ["ok", "ok"], results
    assert results[0][1].startswith("roots://127.0.0.1:")


def test_https_is_verified_against_the_configured_ca_only(
    xrootd_server: XRootDServer, unique: str
) -> None:
    size, adler = xrootd_server.write(f"{unique}/f", b"tls")
    made = make_checker()  # system CAs: the test CA is unknown to them
    try:
        [result] = made.check([Expected("f", xrootd_server.https(f"{unique}/f"), size, adler)])
    finally:
        made.close()
    assert result.verdict is Verdict.UNREACHABLE
    assert "certificate" in result.detail.lower()
