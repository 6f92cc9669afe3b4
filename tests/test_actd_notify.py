"""actd's systemd notify protocol against a socket the test binds: what test_supervisor's
notify test leaves out — the watchdog cadence, an abstract-namespace socket, STATUS changes,
and that a hung main loop stops the WATCHDOG=1 pings (so systemd would restart actd)."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import statistics
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from act.common import exitcodes, migrate
from act.common.db import Database
from tests.support.procs import Actd, write_config

pytestmark = pytest.mark.slow

WORKERS = "tests.support.workers"
WATCHDOG_USEC = 1_000_000  # systemd would kill actd after 1 s without WATCHDOG=1


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    database = Database(f"sqlite:///{root / 'act.db'}")
    migrate.upgrade(database)
    database.dispose()
    return root


class Listener:
    """A unix datagram socket in the abstract namespace, as systemd's NOTIFY_SOCKET may be."""

    def __init__(self) -> None:
        self.name = f"act-test-{uuid.uuid4().hex}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.messages: list[tuple[float, str]] = []  # (arrival, datagram)

    def receive(self, timeout: float) -> str | None:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(4096).decode()
        except TimeoutError:
            return None
        self.messages.append((time.monotonic(), data))
        return data

    def until(self, wanted: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            data = self.receive(left)
            if data is not None and wanted in data:
                return data
        raise AssertionError(f"no {wanted!r} within {timeout}s; got {self.messages}")

    def during(self, seconds: float) -> list[tuple[float, str]]:
        """Every datagram arriving in the next ``seconds``."""
        first = len(self.messages)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.receive(left)
        return self.messages[first:]


@pytest.fixture
def listener() -> Iterator[Listener]:
    result = Listener()
    yield result
    result.sock.close()


@pytest.fixture
def started(root: Path) -> Iterator[list[Actd]]:
    processes: list[Actd] = []
    yield processes
    for actd in processes:
        if actd.proc.poll() is None:
            actd.proc.kill()
            actd.proc.wait()


def _config(root: Path, daemons: dict[str, Any]) -> dict[str, Any]:
    return {
        "root": str(root),
        "liveness": {"heartbeat_interval": 0.2, "dead_after": 2.0},
        "supervisor": {"stop_timeout": 10.0, "restart_delay": 0.5},
        "daemons": daemons,
    }


def _start(started: list[Actd], root: Path, listener: Listener, daemons: dict[str, Any]) -> Actd:
    config = write_config(root.parent / "act.yaml", _config(root, daemons))
    actd = Actd(
        root,
        config,
        NOTIFY_SOCKET="@" + listener.name,
        WATCHDOG_USEC=str(WATCHDOG_USEC),
        WATCHDOG_PID="",  # systemd sets it to actd's pid; empty is "not restricted"
    )
    started.append(actd)
    return actd


def _pings(messages: list[tuple[float, str]]) -> list[float]:
    return [at for at, data in messages if "WATCHDOG=1" in data.split("\n")]


def test_watchdog_pings_every_half_timeout_through_an_abstract_socket(
    root: Path, listener: Listener, started: list[Actd]
) -> None:
    idle = {"entry": f"{WORKERS}:IDLE", "interval": 0.5}
    actd = _start(started, root, listener, {"idle": idle})
    ready = listener.until("READY=1")
    assert "STATUS=1 of 1 daemon processes running" in ready.split("\n")
    pings = _pings(listener.during(4.0))
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert len(pings) >= 5, pings
    # Half the timeout, checked each 0.2 s tick of the main loop (so about 0.6 s here): never
    # as late as systemd's deadline, never a flood either.
    assert max(gaps) < WATCHDOG_USEC / 1e6, gaps
    assert statistics.median(gaps) >= WATCHDOG_USEC / 1e6 / 2 * 0.9, gaps
    actd.signal(signal.SIGTERM)
    listener.until("STOPPING=1")
    assert actd.proc.wait(timeout=15) == exitcodes.OK


def test_status_follows_the_daemon_processes(
    root: Path, listener: Listener, started: list[Actd]
) -> None:
    crasher = {"entry": f"{WORKERS}:CRASHER", "options": {"exit_code": 7, "after": 0.5}}
    actd = _start(started, root, listener, {"crasher": crasher})
    listener.until("READY=1")
    listener.until("STATUS=0 of 1 daemon processes running")  # it crashed
    listener.until("STATUS=1 of 1 daemon processes running")  # and was started again
    assert actd.stop() == exitcodes.OK


def test_a_hung_main_loop_stops_the_watchdog_pings(
    root: Path, listener: Listener, started: list[Actd]
) -> None:
    """The pings come from actd's main loop, not from a thread that would outlive a hang.

    The hang: a reload whose config file is a FIFO nobody writes (as a config on a hung
    network mount would be) blocks the loop in open(). Writing the config ends it."""
    idle = {"entry": f"{WORKERS}:IDLE", "interval": 0.5}
    actd = _start(started, root, listener, {"idle": idle})
    listener.until("READY=1")
    listener.until("WATCHDOG=1")
    text = actd.config.read_text()
    actd.config.unlink()
    os.mkfifo(actd.config, 0o600)
    actd.signal(signal.SIGHUP)
    listener.until("RELOADING=1")
    silent = listener.during(3 * WATCHDOG_USEC / 1e6)
    assert not _pings(silent), silent  # systemd would have restarted actd after 1 s
    assert actd.proc.poll() is None

    with open(actd.config, "w", encoding="utf-8") as fifo:  # the reader waits: no blocking
        fifo.write(text)
    listener.until("READY=1")
    resumed = _pings(listener.during(2.0))
    assert len(resumed) >= 2, resumed
    assert actd.lines(r"configuration reloaded from .*: 0 started, 0 restarted, 0 stopped")
    assert actd.stop() == exitcodes.OK
