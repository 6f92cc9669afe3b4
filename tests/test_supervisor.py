"""actd as a real process: restarts with backoff, orderly stop, reload, exit codes, systemd."""

from __future__ import annotations

import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from act.common import exitcodes, migrate
from act.common.db import Database
from tests.support.procs import Actd, alive, wait_for, write_config

pytestmark = pytest.mark.slow

WORKERS = "tests.support.workers"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    database = Database(f"sqlite:///{root / 'act.db'}")
    migrate.upgrade(database)
    database.dispose()
    return root


def _config(root: Path, daemons: dict[str, Any], **supervisor: float) -> dict[str, Any]:
    return {
        "root": str(root),
        "liveness": {"heartbeat_interval": 0.2, "dead_after": 2.0},
        "supervisor": {"stop_timeout": 10.0, "restart_delay": 0.2, **supervisor},
        "daemons": daemons,
    }


def _idle(instances: int = 1, **more: Any) -> dict[str, Any]:
    return {"entry": f"{WORKERS}:IDLE", "instances": instances, "interval": 0.5, **more}


@pytest.fixture
def running(root: Path, tmp_path: Path) -> Iterator[list[Actd]]:
    started: list[Actd] = []
    yield started
    for actd in started:
        if actd.proc.poll() is None:
            actd.proc.kill()
            actd.proc.wait()


def _start(running: list[Actd], root: Path, config: dict[str, Any], **env: str) -> Actd:
    path = write_config(root.parent / "act.yaml", config)
    actd = Actd(root, path, **env)
    running.append(actd)
    return actd


def test_a_crashing_daemon_is_restarted_with_exponential_backoff(
    root: Path, running: list[Actd]
) -> None:
    crasher = {"entry": f"{WORKERS}:CRASHER", "options": {"exit_code": 7}}
    config = _config(root, {"crasher": crasher, "idle": _idle()}, restart_delay_max=1.6)
    actd = _start(running, root, config)
    pattern = r"crasher\[0\] exited with code 7 after [\d.]+s; restart (\d+) in ([\d.]+)s"
    wait_for(lambda: len(actd.lines(pattern)) >= 6, timeout=30, what="six restarts")
    delays = [float(m.group(2)) for m in actd.lines(pattern)]
    counts = [int(m.group(1)) for m in actd.lines(pattern)]
    assert delays[:6] == [0.2, 0.4, 0.8, 1.6, 1.6, 1.6]
    assert counts[:6] == [1, 2, 3, 4, 5, 6]
    # The healthy daemon was started once and never disturbed by its neighbour's crashes.
    assert len(actd.lines(r"started idle\[0\]")) == 1
    assert "crashing with exit code 7" in actd.text("crasher")
    assert actd.stop() == exitcodes.OK


def test_sigterm_stops_every_daemon_within_the_timeout_with_exit_code_0(
    root: Path, running: list[Actd]
) -> None:
    config = _config(root, {"idle": _idle(3), "janitor": {"interval": 0.5}}, stop_timeout=10.0)
    actd = _start(running, root, config)
    wait_for(lambda: len(actd.child_pids("idle")) == 3 and actd.child_pids("janitor"))
    wait_for(lambda: actd.text("idle").count("started (instance") == 3, what="children up")
    pids = [*actd.child_pids("idle").values(), *actd.child_pids("janitor").values()]
    began = time.monotonic()
    actd.signal(signal.SIGTERM)
    assert actd.proc.wait(timeout=15) == exitcodes.OK
    assert time.monotonic() - began < 10.0
    assert not [pid for pid in pids if alive(pid)]
    assert actd.text("idle").count("stopped; released 0 claimed job(s)") == 3
    assert "actd stopped" in actd.text()
    # 10 s is shorter than one PanDA call may take with the default timeouts: said at start
    assert (
        "supervisor.stop_timeout: 10s is not longer than panda.timeout (connect + read) (130s)"
    ) in actd.text()


def test_a_daemon_in_a_call_shorter_than_stop_timeout_finishes_it_and_is_not_killed(
    root: Path, running: list[Actd]
) -> None:
    """What the default stop_timeout (longer than every configured call timeout) is for: a
    SIGTERM while a daemon waits for a slow call ends in a clean stop, not in SIGKILL."""
    slow = {"entry": f"{WORKERS}:SLOW_CALL", "options": {"call": 3.0}, "interval": 0.2}
    config = _config(root, {"slow": slow}, stop_timeout=8.0)
    actd = _start(running, root, config)
    wait_for(lambda: "calling (3.0s)" in actd.text("slow"), what="the slow call")
    (pid,) = actd.child_pids("slow").values()
    began = time.monotonic()
    actd.signal(signal.SIGTERM)
    assert actd.proc.wait(timeout=20) == exitcodes.OK
    assert time.monotonic() - began < 8.0  # the call's end, not stop_timeout
    assert not alive(pid)
    text = actd.text("slow")
    assert text.index("call done") < text.index("stopped; released 0 claimed job(s)")
    assert "slow[0] stopped (exit code 0)" in actd.text()
    assert "did not stop within" not in actd.text()


def test_a_daemon_ignoring_sigterm_is_killed_after_stop_timeout(
    root: Path, running: list[Actd]
) -> None:
    config = _config(root, {"stubborn": {"entry": f"{WORKERS}:STUBBORN"}}, stop_timeout=1.0)
    actd = _start(running, root, config)
    wait_for(lambda: "ignoring SIGTERM" in actd.text("stubborn"), what="stubborn daemon up")
    (pid,) = actd.child_pids("stubborn").values()
    began = time.monotonic()
    actd.signal(signal.SIGTERM)
    assert actd.proc.wait(timeout=10) == exitcodes.OK
    assert 1.0 <= time.monotonic() - began < 5.0
    assert not alive(pid)
    assert "stubborn[0] (pid" in actd.text() and "did not stop within 1s" in actd.text()


def test_a_hung_daemon_is_killed_and_restarted_and_a_slow_progressing_one_is_not(
    root: Path, running: list[Actd]
) -> None:
    """supervisor.hung_after: ``hung`` spends 60 s in one call that shows no progress and is
    killed after 3 s, then restarted through the crash path (its back-off); ``plodder``'s cycles
    take 4 s but heartbeat every 0.5 s, and ``slow``'s 1 s calls each end a cycle: both are
    left alone, as is ``idle``."""
    hung = {"entry": f"{WORKERS}:SLOW_CALL", "options": {"call": 60.0}, "interval": 0.2}
    plodder = {"entry": f"{WORKERS}:PLODDER", "options": {"steps": 8, "step": 0.5}}
    slow = {"entry": f"{WORKERS}:SLOW_CALL", "options": {"call": 1.0}, "interval": 0.1}
    daemons = {"hung": hung, "plodder": plodder | {"interval": 0.1}, "slow": slow, "idle": _idle()}
    actd = _start(running, root, _config(root, daemons, hung_after=3.0))
    wait_for(lambda: "calling (60.0s)" in actd.text("hung"), what="the hung call")
    (first,) = actd.child_pids("hung").values()
    pattern = (
        r"hung\[0\] \(pid (\d+)\) hung: its cycle has run (\d+)s, (\d+)s without progress "
        r"\(supervisor.hung_after 3s\); killing it to restart it"
    )
    (found,) = wait_for(lambda: actd.lines(pattern), timeout=30, what="the hung daemon killed")
    assert int(found.group(1)) == first
    assert 3 <= int(found.group(2)) < 10 and 3 <= int(found.group(3)) < 10
    # Restarted as a crashed daemon is: its exit, the back-off, a new process calling again.
    wait_for(
        lambda: actd.lines(r"hung\[0\] exited with code -9 after [\d.]+s; restart 1 in 0.2s"),
        what="the restart scheduled",
    )
    assert not alive(first)  # reaped
    wait_for(lambda: actd.child_pids("hung").get(0, first) != first, what="a new process")
    wait_for(lambda: actd.text("hung").count("calling (60.0s)") == 2, what="the new call")
    # Twice the limit in slow cycles, each showing progress or ending in time: none is killed.
    wait_for(lambda: actd.text("plodder").count("cycle done in") >= 2, timeout=30, what="cycles")
    assert actd.text("slow").count("call done") >= 4
    assert not actd.lines(r"(plodder|slow|idle)\[0\] \(pid \d+\) hung")
    for name in ("plodder", "slow", "idle"):
        assert len(actd.lines(rf"started {name}\[0\]")) == 1, name
    assert actd.stop() == exitcodes.OK


def test_sighup_with_a_broken_config_keeps_the_old_one_and_logs_why(
    root: Path, running: list[Actd]
) -> None:
    config = _config(root, {"idle": _idle(1)})
    actd = _start(running, root, config)
    wait_for(lambda: actd.child_pids("idle"), what="idle started")
    before = actd.child_pids("idle")
    actd.config.write_text(actd.config.read_text().replace("interval:", "intervall:"))
    actd.signal(signal.SIGHUP)
    refused = wait_for(
        lambda: actd.lines(
            r"reload refused, still running on the previous "
            r"configuration: (.*)"
        ),
        what="refusal",
    )
    assert "invalid configuration" in refused[0].group(1)
    assert "daemons.idle.intervall: unknown key (did you mean 'interval'?)" in actd.text()
    time.sleep(0.5)
    assert actd.proc.poll() is None
    assert actd.child_pids("idle") == before and all(alive(p) for p in before.values())

    # A valid change is applied: one more instance, and the changed settings restart the first.
    write_config(actd.config, _config(root, {"idle": _idle(2, interval=0.7)}))
    actd.signal(signal.SIGHUP)
    wait_for(lambda: actd.lines(r"configuration reloaded .*: 1 started, 1 restarted"))
    wait_for(
        lambda: len(actd.child_pids("idle")) == 2 and actd.child_pids("idle")[0] != before[0],
        what="restarted and added instances",
    )
    assert not alive(before[0])
    assert actd.stop() == exitcodes.OK


def test_sighup_removing_a_daemon_stops_it(root: Path, running: list[Actd]) -> None:
    actd = _start(running, root, _config(root, {"idle": _idle(2), "janitor": {}}))
    wait_for(lambda: len(actd.child_pids("idle")) == 2 and actd.child_pids("janitor"))
    idle = list(actd.child_pids("idle").values())
    write_config(actd.config, _config(root, {"janitor": {}}))
    actd.signal(signal.SIGHUP)
    wait_for(lambda: actd.lines(r"reloaded .*: 0 started, 0 restarted, 2 stopped"))
    wait_for(lambda: not any(alive(p) for p in idle), what="removed daemon stopped")
    assert actd.proc.poll() is None
    assert actd.stop() == exitcodes.OK


def test_exit_codes_for_bad_config_stale_schema_and_a_second_actd(
    root: Path, tmp_path: Path, running: list[Actd]
) -> None:
    bad = _start(running, root, {"root": str(root), "daemonz": {}})
    assert bad.proc.wait(timeout=30) == exitcodes.CONFIG
    assert bad.proc.stderr is not None
    assert b"daemonz: unknown key (did you mean 'daemons'?)" in bad.proc.stderr.read()

    empty = tmp_path / "empty"
    stale = _start(running, empty, _config(empty, {"idle": _idle()}))
    assert stale.proc.wait(timeout=30) == exitcodes.DATABASE
    assert "run `actctl db upgrade`" in stale.text()

    first = _start(running, root, _config(root, {"idle": _idle()}))
    wait_for(lambda: first.child_pids("idle"))
    second = _start(running, root, _config(root, {"idle": _idle()}))
    assert second.proc.wait(timeout=30) == exitcodes.LOCKED
    assert f"another actd (pid {first.proc.pid}) already runs on {root}" in second.text()
    assert first.stop() == exitcodes.OK


def test_one_log_file_per_daemon(root: Path, running: list[Actd]) -> None:
    actd = _start(running, root, _config(root, {"idle": _idle(2), "janitor": {}}))
    wait_for(lambda: actd.text("idle").count("started (instance") == 2 and actd.text("janitor"))
    assert actd.stop() == exitcodes.OK
    logs = sorted(p.name for p in (root / "log").iterdir())
    assert logs == ["actd.log", "idle.log", "janitor.log"]
    assert "act.janitor" not in actd.text("idle") and "act.idle" not in actd.text("janitor")


def test_systemd_notify_ready_watchdog_reload_and_stopping(
    root: Path, tmp_path: Path, running: list[Actd]
) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(10)
    messages: list[str] = []

    def receive_until(wanted: str) -> None:
        while not any(wanted in m for m in messages):
            messages.append(sock.recv(4096).decode())

    actd = _start(
        running,
        root,
        _config(root, {"idle": _idle()}),
        NOTIFY_SOCKET=address,
        WATCHDOG_USEC="400000",
    )
    try:
        receive_until("READY=1")
        ready = next(m for m in messages if "READY=1" in m)
        assert "STATUS=1 of 1 daemon processes running" in ready
        messages.clear()
        receive_until("WATCHDOG=1")
        pings = time.monotonic()
        messages.clear()
        receive_until("WATCHDOG=1")
        assert time.monotonic() - pings < 1.0
        actd.signal(signal.SIGHUP)
        receive_until("RELOADING=1")
        assert "MONOTONIC_USEC=" in next(m for m in messages if "RELOADING=1" in m)
        receive_until("READY=1")
        actd.signal(signal.SIGTERM)
        receive_until("STOPPING=1")
        assert actd.proc.wait(timeout=15) == exitcodes.OK
    finally:
        sock.close()


def test_daemons_stop_cleanly_when_actd_is_killed(root: Path, running: list[Actd]) -> None:
    actd = _start(running, root, _config(root, {"idle": _idle(2)}))
    wait_for(lambda: actd.text("idle").count("started (instance") == 2, what="children up")
    pids = list(actd.child_pids("idle").values())
    actd.proc.kill()
    actd.proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in pids), timeout=15, what="orphans to stop")
    text = actd.text("idle")
    assert text.count("supervisor (pid") == 2 and "has gone away: stopping" in text
    assert text.count("stopped; released 0 claimed job(s)") == 2
