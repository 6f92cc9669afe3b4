"""Helpers for tests against the real XRootD storage element of ``tests/harness/xrootd-server``.

The ``xrootd_server`` session fixture uses the running server, or starts it (``make test``
starts it beforehand; starting needs root the first time, to install Debian's xrootd). A server
that cannot be started fails the tests that need it, with the harness's message; they are never
skipped.

:class:`XRootDServer` gives the URLs of one file over each protocol and writes "job outputs"
straight into the directory that backs the URL paths.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
HARNESS = REPO / "tests" / "harness" / "xrootd-server"


class XRootDServerUnavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class XRootDServer:
    """One running test SE, from ``xrootd-server env``."""

    root_url: str  # root://127.0.0.1:21094
    https_url: str  # https://localhost:21095 (also serves plain http)
    http_url: str  # http://127.0.0.1:21095
    ca: Path  # CA file of the server's certificate
    ca_dir: Path  # the same CA as a hashed directory (X509_CERT_DIR for roots://)
    data: Path  # URL path /<p> is the file data/<p>

    def root(self, path: str) -> str:
        return f"{self.root_url}//{path.lstrip('/')}"

    def roots(self, path: str) -> str:
        return "roots" + self.root(path).removeprefix("root")

    def https(self, path: str) -> str:
        return f"{self.https_url}/{path.lstrip('/')}"

    def davs(self, path: str) -> str:
        return "davs" + self.https(path).removeprefix("https")

    def http(self, path: str) -> str:
        return f"{self.http_url}/{path.lstrip('/')}"

    def file(self, path: str) -> str:
        return f"file://{self.local(path)}"

    def local(self, path: str) -> Path:
        """The file behind URL path ``path`` (never outside the data directory)."""
        target = (self.data / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.data.resolve()):
            raise ValueError(f"{path!r} is outside {self.data}")
        return target

    def write(self, path: str, content: bytes) -> tuple[int, str]:
        """Store ``content`` at URL path ``path``; return its size and adler32 (8 hex digits).

        The file is given to the server's user, so the server can cache its checksum in an
        extended attribute instead of logging a permission error on each query.
        """
        target = self.local(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        owner = self.data.stat()
        if os.geteuid() == 0:
            for made in (target, *target.parents):
                if made == self.data or not made.is_relative_to(self.data):
                    break
                os.chown(made, owner.st_uid, owner.st_gid)
        return len(content), f"{zlib.adler32(content) & 0xFFFFFFFF:08x}"


def harness(command: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HARNESS), command],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )


def read_env(env: Mapping[str, str] | None = None, *, start: bool = True) -> XRootDServer:
    """The server the harness describes (with ``env`` overrides), started first if needed."""
    if harness("status", env).returncode != 0:
        if not start:
            raise XRootDServerUnavailable(f"the XRootD test server is not running: {HARNESS} start")
        result = harness("start", env)
        if result.returncode != 0:
            raise XRootDServerUnavailable(
                f"`{HARNESS} start` failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
            )
    values: dict[str, str] = {}
    for line in harness("env", env).stdout.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = shlex.split(value)[0] if value else ""
    return XRootDServer(
        root_url=values["ACT_XROOTD_ROOT_URL"],
        https_url=values["ACT_XROOTD_HTTP_URL"],
        http_url=values["ACT_XROOTD_PLAIN_HTTP_URL"],
        ca=Path(values["ACT_XROOTD_CA"]),
        ca_dir=Path(values["ACT_XROOTD_CA_DIR"]),
        data=Path(values["ACT_XROOTD_DATA"]),
    )


@dataclass(frozen=True)
class PrivateXRootD:
    """A second, private server instance a test may stop and start (``ACT_XROOTD_*`` env)."""

    env: dict[str, str]
    server: XRootDServer

    def stop(self) -> None:
        result = harness("stop", self.env)
        assert result.returncode == 0, result.stderr

    def start(self) -> None:
        result = harness("start", self.env)
        assert result.returncode == 0, result.stderr


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def private_xrootd() -> Iterator[PrivateXRootD]:
    """A private server on free ports in a fresh ``/tmp/act-xrootd-*`` directory, removed after.

    Under ``/tmp`` itself (not pytest's 0700 tmp_path) so the server's user can reach it.
    """
    base = Path(tempfile.mkdtemp(prefix="act-xrootd-", dir="/tmp"))
    base.chmod(0o755)
    env = {
        "ACT_XROOTD_DIR": str(base),
        "ACT_XROOTD_ROOT_PORT": str(_free_port()),
        "ACT_XROOTD_HTTP_PORT": str(_free_port()),
    }
    try:
        yield PrivateXRootD(env, read_env(env))
    finally:
        harness("stop", env)
        shutil.rmtree(base, ignore_errors=True)


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def xrootd_server() -> XRootDServer:
    """The shared XRootD test server (started if it is not running); never skipped."""
    try:
        return read_env()
    except XRootDServerUnavailable as error:
        problem = str(error)
    pytest.fail(problem, pytrace=False)


@pytest.fixture
def private_xrootd_server() -> Iterator[PrivateXRootD]:
    """A server of the test's own, which it may stop and start again."""
    try:
        with private_xrootd() as private:
            yield private
            return
    except XRootDServerUnavailable as error:
        problem = str(error)
    pytest.fail(problem, pytrace=False)
