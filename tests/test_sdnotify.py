"""The systemd notify protocol against real datagram sockets."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from act.common.sdnotify import Notifier


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_interval is None
    assert notifier.ready() is False


def test_path_socket_receives_each_message(tmp_path: Path) -> None:
    address = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        notifier = Notifier({"NOTIFY_SOCKET": address})
        assert notifier.ready("3 running") and notifier.stopping() and notifier.watchdog()
        assert sock.recv(100) == b"READY=1\nSTATUS=3 running"
        assert sock.recv(100) == b"STOPPING=1"
        assert sock.recv(100) == b"WATCHDOG=1"


def test_abstract_namespace_socket() -> None:
    name = f"act-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert Notifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert sock.recv(100) == b"STATUS=hello"


def test_a_vanished_socket_is_reported_not_raised(tmp_path: Path) -> None:
    assert Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}).ready() is False


def test_watchdog_interval_is_half_the_timeout_and_only_for_this_pid() -> None:
    mine = str(os.getpid())
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": mine}).watchdog_interval == 15
    assert Notifier({"WATCHDOG_USEC": "30000000"}).watchdog_interval == 15
    assert Notifier({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}).watchdog_interval is None
    assert Notifier({"WATCHDOG_USEC": "soon"}).watchdog_interval is None
