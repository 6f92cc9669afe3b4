"""tests/harness/xrootd-server itself: loopback only, and a clear failure when it cannot start."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.xrootd_real import XRootDServer, harness

pytestmark = pytest.mark.storage


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from ``ss``)."""
    out = subprocess.run(
        ["ss", "-Htln", f"sport = :{port}"], check=True, capture_output=True, text=True
    ).stdout
    return {line.split()[3].rpartition(":")[0] for line in out.splitlines() if line.strip()}


def test_the_server_listens_on_loopback_only(xrootd_server: XRootDServer) -> None:
    for url in (xrootd_server.root_url, xrootd_server.https_url):
        port = urlsplit(url).port
        assert port is not None
        assert listening_addresses(port) == {"127.0.0.1"}


def test_start_fails_loudly_when_a_port_is_taken() -> None:
    base = Path(tempfile.mkdtemp(prefix="act-xrootd-", dir="/tmp"))
    base.chmod(0o755)
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    env = {
        "ACT_XROOTD_DIR": str(base),
        "ACT_XROOTD_ROOT_PORT": str(port),
        "ACT_XROOTD_HTTP_PORT": "1",  # never reached: the first port already fails
    }
    try:
        result = harness("start", env)
        status = harness("status", env)
    finally:
        taken.close()
        harness("stop", env)
        shutil.rmtree(base, ignore_errors=True)
    assert result.returncode != 0
    assert f"cannot bind 127.0.0.1:{port}" in result.stderr
    assert "ERROR: xrootd exited during startup" in result.stderr
    assert status.returncode != 0


def test_env_names_what_tests_need(xrootd_server: XRootDServer) -> None:
    assert xrootd_server.root_url.startswith("root://127.0.0.1:")
    assert xrootd_server.https_url.startswith("https://localhost:")
    assert xrootd_server.ca.is_file()
    assert xrootd_server.data.is_dir()
    assert harness("env", {"ACT_XROOTD_DIR": "relative"}).returncode != 0
