"""Log rotation: SIGUSR1 moves actd's and its daemons' output (log, stdout, fd 2) to new files.

Real processes throughout: actd on SQLite with the CHATTY test daemon (a numbered line per cycle
through its logger, to stdout and straight to fd 2), a standalone act-daemon, and the real
``logrotate`` binary on ``etc/logrotate.d/act`` with only its paths and user rewritten.
"""

from __future__ import annotations

import grp
import gzip
import os
import pwd
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from act.common import exitcodes, migrate
from act.common.db import Database
from tests.support.procs import ACT_DAEMON, REPO, Actd, alive, env, wait_for, write_config

pytestmark = pytest.mark.slow

LOGROTATE = "/usr/sbin/logrotate"
TICK = re.compile(r"(log|stdout|stderr) tick (\d+)$")
STREAMS = ("log", "stdout", "stderr")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    database = Database(f"sqlite:///{root / 'act.db'}")
    migrate.upgrade(database)
    database.dispose()
    return root


def _config(root: Path) -> dict[str, Any]:
    return {
        "root": str(root),
        "liveness": {"heartbeat_interval": 0.2, "dead_after": 2.0},
        "supervisor": {"stop_timeout": 10.0, "restart_delay": 0.2},
        "daemons": {"chatty": {"entry": "tests.support.workers:CHATTY", "interval": 0.2}},
    }


@pytest.fixture
def actd(root: Path) -> Iterator[Actd]:
    process = Actd(root, write_config(root.parent / "act.yaml", _config(root)))
    yield process
    if process.proc.poll() is None:
        process.proc.kill()
        process.proc.wait()


def _read(path: Path) -> str:
    if path.suffix == ".gz":
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            return handle.read()
    return path.read_text(encoding="utf-8") if path.exists() else ""


def _ticks(*paths: Path) -> dict[str, list[int]]:
    """The tick numbers of each stream, in file order across ``paths`` (oldest file first)."""
    found: dict[str, list[int]] = {stream: [] for stream in STREAMS}
    for path in paths:
        for line in _read(path).splitlines():
            match = TICK.search(line)
            if match:
                found[match.group(1)].append(int(match.group(2)))
    return found


def _assert_nothing_lost(ticks: dict[str, list[int]]) -> None:
    """Every stream's ticks run 1, 2, ..., n: no line lost or written twice across the files."""
    for stream, numbers in ticks.items():
        assert numbers, f"no {stream} ticks"
        assert numbers == list(range(1, len(numbers) + 1)), f"{stream}: {numbers}"


def _fd_target(pid: int, fd: int) -> str:
    return os.readlink(f"/proc/{pid}/fd/{fd}")


def _chatty_pid(actd: Actd) -> int:
    pids = wait_for(lambda: actd.child_pids("chatty"), what="chatty started")
    return int(pids[0])


def _wait_ticks(path: Path, count: int, *older: Path) -> None:
    wait_for(
        lambda: min(len(v) for v in _ticks(*older, path).values()) >= count,
        what=f"{count} ticks of every stream in {path.name}",
    )


def test_sigusr1_moves_actd_and_daemon_output_to_the_new_files(root: Path, actd: Actd) -> None:
    log_dir = root / "log"
    chatty, actd_log = log_dir / "chatty.log", log_dir / "actd.log"
    pid = _chatty_pid(actd)
    _wait_ticks(chatty, 3)
    rotated, actd_rotated = log_dir / "chatty.log.1", log_dir / "actd.log.1"
    chatty.rename(rotated)
    actd_log.rename(actd_rotated)
    # A rename alone changes nothing for the writers (no stat per line): they follow the inode.
    before = len(_ticks(rotated)["log"])
    _wait_ticks(rotated, before + 2)
    assert not chatty.exists() and not actd_log.exists()
    assert _fd_target(pid, 1) == _fd_target(pid, 2) == str(rotated)

    actd.signal(signal.SIGUSR1)
    wait_for(
        lambda: "log files reopened; SIGUSR1 forwarded to 1 daemon process(es)" in _read(actd_log),
        what="actd's reopen line in the new actd.log",
    )
    wait_for(lambda: "log files reopened on request" in _read(chatty), what="chatty reopened")
    assert _fd_target(pid, 1) == _fd_target(pid, 2) == str(chatty)
    old_sizes = rotated.stat().st_size, actd_rotated.stat().st_size
    in_new = len(_ticks(chatty)["stderr"])
    _wait_ticks(chatty, in_new + 3)
    assert (rotated.stat().st_size, actd_rotated.stat().st_size) == old_sizes
    new_ticks = _ticks(chatty)
    assert all(new_ticks[stream] for stream in STREAMS), new_ticks
    assert "log files reopened" not in _read(rotated) + _read(actd_rotated)

    assert actd.stop() == exitcodes.OK
    assert (rotated.stat().st_size, actd_rotated.stat().st_size) == old_sizes
    assert "actd stopped" in _read(actd_log) and "chatty[0] stopped" in _read(actd_log)
    assert "stopped; released 0 claimed job(s)" in _read(chatty)
    _assert_nothing_lost(_ticks(rotated, chatty))
    assert alive(pid) is False


def test_standalone_act_daemon_reopens_on_sigusr1_even_one_sent_while_it_starts(
    root: Path,
) -> None:
    config = write_config(root.parent / "act.yaml", _config(root))
    log_file = root / "log" / "chatty.log"
    # As actd starts its daemons: SIGUSR1 blocked, and sent at once, before any handler exists.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    try:
        proc = subprocess.Popen(
            [*ACT_DAEMON, "chatty", "--config", str(config), "--log-file", str(log_file)],
            env=env(root),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    try:
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: len(_ticks(log_file)["log"]) >= 2, what="ticks in the log file")
        assert proc.poll() is None  # the early signal waited for the handler instead of killing
        rotated = log_file.with_name("chatty.log.1")
        log_file.rename(rotated)
        proc.send_signal(signal.SIGUSR1)
        wait_for(lambda: "log files reopened on request" in _read(log_file), what="reopen")
        in_new = len(_ticks(log_file)["log"])
        wait_for(lambda: len(_ticks(log_file)["log"]) >= in_new + 2, what="ticks after reopen")
        # Its fd 2 is a pipe, not the log file: it is left alone.
        assert _fd_target(proc.pid, 2).startswith("pipe:")
        size = rotated.stat().st_size
        time.sleep(0.5)
        assert rotated.stat().st_size == size
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == exitcodes.OK
        numbers = _ticks(rotated, log_file)["log"]
        assert numbers == list(range(1, len(numbers) + 1))
        assert "log files reopened" not in _read(rotated)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _logrotate_config(tmp_path: Path, root: Path) -> Path:
    """etc/logrotate.d/act with /var/log/act and /var/lib/act moved to the test's root and the
    act user replaced by the one running the test; everything else as shipped."""
    if not Path(LOGROTATE).is_file():
        pytest.fail(
            f"{LOGROTATE} is missing: install logrotate (apt-get install logrotate, "
            "dnf install logrotate) to test etc/logrotate.d/act"
        )
    user = pwd.getpwuid(os.getuid()).pw_name
    group = grp.getgrgid(os.getgid()).gr_name
    text = (REPO / "etc" / "logrotate.d" / "act").read_text()
    directives = [line.split("#")[0].strip() for line in text.splitlines()]
    assert "copytruncate" not in directives and "create 0640 act act" in directives
    for old, new in (
        ("/var/log/act", str(root / "log")),
        ("/var/lib/act", str(root)),
        ("su act act", f"su {user} {group}"),
        ("create 0640 act act", f"create 0640 {user} {group}"),
    ):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "logrotate.conf"
    path.write_text(text)
    return path


def _logrotate(config: Path, state: Path) -> None:
    done = subprocess.run(
        [LOGROTATE, "-f", "-s", str(state), str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "error" not in done.stderr.lower(), done.stderr


def test_real_logrotate_with_the_shipped_config_loses_no_line(
    root: Path, actd: Actd, tmp_path: Path
) -> None:
    config, state = _logrotate_config(tmp_path, root), tmp_path / "logrotate.state"
    log_dir = root / "log"
    chatty = log_dir / "chatty.log"
    pid = _chatty_pid(actd)
    _wait_ticks(chatty, 3)

    _logrotate(config, state)  # postrotate: pkill -USR1 -L -F <root>/run/actd.lock
    first = log_dir / "chatty.log.1"
    assert first.exists() and (log_dir / "actd.log.1").exists()  # delaycompress: not yet .gz
    assert (chatty.stat().st_mode & 0o777) == 0o640
    wait_for(lambda: "log files reopened on request" in _read(chatty), what="chatty reopened")
    wait_for(lambda: "SIGUSR1 forwarded to 1" in _read(log_dir / "actd.log"), what="actd reopened")
    assert _fd_target(pid, 1) == _fd_target(pid, 2) == str(chatty)
    _wait_ticks(chatty, 3 + len(_ticks(chatty)["log"]))

    _logrotate(config, state)  # again: .1 is compressed to .2.gz, the current file becomes .1
    second = log_dir / "chatty.log.2.gz"
    assert second.exists() and (log_dir / "actd.log.2.gz").exists()
    wait_for(lambda: "log files reopened on request" in _read(chatty), what="reopened again")
    size = first.stat().st_size
    _wait_ticks(chatty, 3 + len(_ticks(chatty)["log"]))
    assert first.stat().st_size == size  # nothing after the reopen went to the rotated file

    assert actd.stop() == exitcodes.OK
    _assert_nothing_lost(_ticks(second, first, chatty))
    assert "actd stopped" in _read(log_dir / "actd.log")
