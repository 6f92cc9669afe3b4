"""A private MariaDB server for one test, which the test may stop and start again (a database
outage) without touching the machine's shared server on port 3306.

``mariadb-install-db`` makes a data directory (root without a password, over TCP), ``mariadbd``
serves it on a free loopback port with its socket, pid file and error log next to it. :meth:`stop`
is SIGTERM and a wait (a clean shutdown), :meth:`kill` is SIGKILL (a crash); :meth:`start` serves
the same data directory on the same port again. Anything that goes wrong is a
:class:`MariaDBError` naming the command and the server's error log: a test using this fails, it is
never skipped."""

from __future__ import annotations

import getpass
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

INSTALL_DB = "mariadb-install-db"
SERVER_CANDIDATES = ("/usr/sbin/mariadbd", "/usr/sbin/mysqld", "mariadbd")


class MariaDBError(RuntimeError):
    """The private server cannot be made, started or stopped."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_binary() -> str:
    for candidate in SERVER_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    raise MariaDBError(f"no MariaDB server binary (looked for {', '.join(SERVER_CANDIDATES)})")


class PrivateMariaDB:
    """One private server; ``url`` (no database) is what to connect to as root."""

    def __init__(self, base: Path | None = None) -> None:
        # a short directory: the unix socket path must stay under ~100 characters
        self.base = Path(tempfile.mkdtemp(prefix="act-mdb-", dir=base))
        self.datadir = self.base / "data"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.error_log = self.base / "error.log"
        self.start_seconds: list[float] = []
        self.install_seconds = 0.0
        self._install()

    @property
    def url(self) -> str:
        return f"mysql+mysqldb://root@127.0.0.1:{self.port}/"

    def _install(self) -> None:
        if shutil.which(INSTALL_DB) is None:
            raise MariaDBError(f"{INSTALL_DB} is not installed: the private MariaDB cannot be made")
        clock = time.monotonic()
        done = subprocess.run(
            [
                INSTALL_DB,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--user={getpass.getuser()}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise MariaDBError(
                f"{INSTALL_DB} failed with code {done.returncode}: {done.stderr.strip()[-2000:]}"
            )
        self.install_seconds = time.monotonic() - clock

    def start(self, timeout: float = 120.0) -> float:
        """Serve the data directory; return once it answers. How long that took."""
        if self.proc is not None and self.proc.poll() is None:
            raise MariaDBError("the private MariaDB already runs")
        clock = time.monotonic()
        command = [
            _server_binary(),
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            f"--socket={self.base / 'sock'}",
            f"--pid-file={self.base / 'pid'}",
            f"--log-error={self.error_log}",
            "--bind-address=127.0.0.1",
            f"--user={getpass.getuser()}",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=64M",
            "--max-connections=500",
        ]
        with open(self.base / "console.log", "ab") as console:
            self.proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT
            )
        deadline = clock + timeout
        while not self.answers():
            if self.proc.poll() is not None:
                raise MariaDBError(
                    f"mariadbd exited with code {self.proc.returncode} at start: {self._tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise MariaDBError(f"mariadbd did not answer within {timeout}s: {self._tail()}")
            time.sleep(0.1)
        seconds = time.monotonic() - clock
        self.start_seconds.append(seconds)
        return seconds

    def answers(self) -> bool:
        engine = sa.create_engine(self.url, pool_size=1, connect_args={"connect_timeout": 2})
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
            return True
        except sa.exc.OperationalError:
            return False
        finally:
            engine.dispose()

    def stop(self, timeout: float = 120.0) -> None:
        """A clean shutdown (SIGTERM), waited for."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """A crash (SIGKILL)."""
        self._signal(signal.SIGKILL, 60.0)

    def _signal(self, signum: int, timeout: float) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signum)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise MariaDBError(f"mariadbd did not stop within {timeout}s; killed") from None

    def _tail(self) -> str:
        try:
            return self.error_log.read_text(errors="replace")[-2000:]
        except FileNotFoundError:
            return "(no error log)"

    def remove(self) -> None:
        """Kill the server if it runs and delete its files."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def database_url(server: PrivateMariaDB, name: str) -> str:
    """Create database ``name`` on the server; its URL (for act's ``db.url``)."""
    engine = sa.create_engine(server.url, isolation_level="AUTOCOMMIT", pool_size=1)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
    finally:
        engine.dispose()
    return f"{server.url}{name}"
