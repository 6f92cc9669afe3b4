"""Running act's real executables (actd, act-daemon) as subprocesses in tests."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent.parent


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def env(root: Path, **extra: str) -> dict[str, str]:
    result = {k: v for k, v in os.environ.items() if not k.startswith(("ACT_", "NOTIFY_"))}
    result.update(PYTHONPATH=str(REPO), ACT_ROOT=str(root), **extra)
    return result


#: ``act-daemon``, and act-daemon with the scripted CE back end (a test double) registered.
ACT_DAEMON = [sys.executable, "-m", "act.service.daemon"]
SCRIPTED_DAEMON = [sys.executable, "-m", "tests.support.scripted_backend"]


def daemon_once(
    name: str,
    config: Path,
    root: Path,
    *,
    command: list[str] = ACT_DAEMON,
    fault: str | None = None,
    log: Path | None = None,
    **extra_env: str,
) -> subprocess.CompletedProcess[str]:
    """Run daemon ``name`` for one cycle in a child process (``act-daemon NAME --config CONFIG
    --once``) with ``$ACT_FAULT`` set to ``fault`` if given; its stderr is kept in ``log``."""
    if fault:
        extra_env["ACT_FAULT"] = fault
    done = subprocess.run(
        [*command, name, "--config", str(config), "--once"],
        env=env(root, **extra_env),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if log is not None:
        log.write_text(done.stderr)
    return done


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has stopped all the same.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


class Actd:
    """An actd process with its config file and log directory."""

    def __init__(self, root: Path, config: Path, **extra_env: str) -> None:
        self.root, self.config = root, config
        self.log = root / "log" / "actd.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "act.service.actd", "--config", str(config)],
            env=env(root, **extra_env),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def text(self, name: str = "actd") -> str:
        path = self.root / "log" / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def lines(self, pattern: str, name: str = "actd") -> list[re.Match[str]]:
        return [m for m in (re.search(pattern, line) for line in self.text(name).splitlines()) if m]

    def child_pids(self, name: str) -> dict[int, int]:
        """The current pid of each slot of daemon ``name``, from actd's log."""
        pids: dict[int, int] = {}
        for match in self.lines(rf"started {name}\[(\d+)\] \(pid (\d+)\)"):
            pids[int(match.group(1))] = int(match.group(2))
        return pids

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)
