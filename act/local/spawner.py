"""The local CE's spawner: one long-lived process per CE work directory that forks job runners.

Starting a job used to cost one Python start (``python -m act.local.runner JOBDIR``, ~30-50 ms of
CPU); forking an already started Python process costs ~1 ms. The spawner is the CE's service
process, as A-REX is an ARC CE's: ``python -S -m act.local.spawner WORKDIR`` detaches itself (new
session, not a child of the daemon that started it), holds ``WORKDIR/spawner.lock`` for its life
(one spawner per work directory) and listens on ``WORKDIR/spawner.sock``. A submitter connects,
sends the job directory's path (one line) and reads one byte: ``1`` once the runner forked for it
has recorded itself in ``state.json`` (exactly what :func:`act.local.runner.detach` waits for).

Each runner is forked into a session of its own (:func:`act.local.runner.become_runner`): it does
not depend on the spawner any more than on the submitter. Killing the spawner (or the submitter)
stops no job; the next submission starts a new spawner. The spawner exits by itself once idle for
:data:`IDLE_EXIT` seconds, when its socket was removed or replaced (its work directory is gone, or
another spawner took over), and on SIGTERM; so an upgraded act is picked up within a minute.

Only peers of the spawner's own user are served (``SO_PEERCRED``), and only job directories
directly under ``WORKDIR/jobs`` with a valid job id. Standard library only, like the runner.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from act.local import jobfiles as jf
from act.local.runner import become_runner

SOCKET = "spawner.sock"
LOCK = "spawner.lock"
#: Seconds without a request after which the spawner exits (the next submission starts one).
IDLE_EXIT = 30.0
#: Seconds a connection may take to send its request.
REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 4096


#: Longest socket path bind() and connect() take (sun_path is 108 bytes with its NUL).
MAX_ADDRESS = 100


class SpawnerError(OSError):
    """No spawner could be reached or started."""


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """An address for the socket file ``path``: the path itself, or when it is too long for a
    socket address (deep work directories, e.g. pytest's), the same file reached through an
    ``O_PATH`` descriptor of its directory (``/proc/self/fd/N/<name>``)."""
    text = str(path)
    if len(text.encode()) <= MAX_ADDRESS:
        yield text
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


# -- the server -------------------------------------------------------------------------------


def _peer_uid(conn: socket.socket) -> int:
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


def _reap() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def _read_request(conn: socket.socket) -> bytes:
    conn.settimeout(REQUEST_TIMEOUT)
    data = b""
    while not data.endswith(b"\n") and len(data) <= MAX_REQUEST:
        chunk = conn.recv(MAX_REQUEST)
        if not chunk:
            break
        data += chunk
    return data


def _same_file(path: Path, inode: tuple[int, int]) -> bool:
    try:
        found = path.stat()
    except OSError:
        return False
    return (found.st_dev, found.st_ino) == inode


def _answer(conn: socket.socket, jobs: Path, keep: Sequence[int]) -> None:
    """Serve one connection: fork a runner for the job directory it names (the runner closes the
    spawner's own descriptors ``keep``: the lock must die with the spawner, not its jobs)."""
    try:
        if _peer_uid(conn) != os.getuid():
            return
        request = _read_request(conn)
    except OSError:
        return
    jobdir = Path(request.decode("utf-8", "replace").strip())
    if jobdir.parent != jobs or not jf.JOB_ID.fullmatch(jobdir.name) or not jobdir.is_dir():
        return  # closing the connection without "1": the submitter sees a failure
    pid = os.fork()
    if pid == 0:
        for fd in keep:
            os.close(fd)
        conn.settimeout(None)
        become_runner(jobdir, lambda: _say_ready(conn))


def _say_ready(conn: socket.socket) -> None:
    """Tell the submitter the runner has recorded itself. A submitter killed meanwhile does not
    hear it: the job runs all the same (the CE has it; the submitter's successor finds it)."""
    with contextlib.suppress(OSError):
        conn.sendall(b"1")
    conn.close()


def serve(workdir: Path, listener: socket.socket, lock: int, ready: int | None = None) -> None:
    """The spawner's loop (``listener`` is bound to ``WORKDIR/spawner.sock``, ``lock`` holds
    ``WORKDIR/spawner.lock``)."""
    jobs = workdir / jf.JOBS
    path = workdir / SOCKET
    me = path.stat()
    inode = (me.st_dev, me.st_ino)
    keep = (listener.fileno(), lock)
    stop = False

    def on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    if ready is not None:
        os.write(ready, b"1")
        os.close(ready)
    listener.settimeout(1.0)
    last = time.monotonic()
    while not stop:
        _reap()
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            if time.monotonic() - last > IDLE_EXIT or not _same_file(path, inode):
                break
            continue
        except InterruptedError:
            continue
        last = time.monotonic()
        with conn:
            _answer(conn, jobs, keep)
    # Leaving: no new connections, then serve the ones already queued (a client that connected
    # just now gets its runner; the next one finds no socket and starts a new spawner).
    with contextlib.suppress(OSError):
        if _same_file(path, inode):
            path.unlink()
    listener.setblocking(False)
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            break
        with conn:
            conn.setblocking(True)
            _answer(conn, jobs, keep)
    listener.close()
    _reap()


def daemonize(workdir: Path) -> int:
    """``python -m act.local.spawner WORKDIR``: start a detached spawner; 0 once one listens
    (this one, or one already running), 1 if it could not start."""
    workdir = workdir.absolute()
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = os.open(workdir / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return 0  # a spawner runs (or is starting): the client waits for its socket
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = workdir / f".{SOCKET}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    with _address(temporary) as address:
        listener.bind(address)
    listener.listen(256)
    os.replace(temporary, workdir / SOCKET)  # a stale socket of a dead spawner is replaced
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        listener.close()
        os.close(lock)
        with os.fdopen(read_end, "rb") as pipe:
            return 0 if pipe.read(1) == b"1" else 1
    os.close(read_end)
    try:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.chdir(workdir)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        serve(workdir, listener, lock, write_end)
    except BaseException:
        os._exit(1)
    os._exit(0)


# -- the client (the back end) ------------------------------------------------------------------


def connect(workdir: Path, timeout: float) -> socket.socket:
    """A connection to the work directory's spawner (OSError if none listens)."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        with _address(workdir / SOCKET) as address:
            conn.connect(address)
    except OSError:
        conn.close()
        raise
    return conn


def start(workdir: Path, env: dict[str, str], timeout: float) -> None:
    """Start a spawner for ``workdir`` (SpawnerError if none could be started)."""
    try:
        done = subprocess.run(
            [sys.executable, "-S", "-m", "act.local.spawner", str(workdir)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            close_fds=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise SpawnerError(f"cannot start the local CE's spawner: {error}") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip()[-500:]
        raise SpawnerError(
            f"the local CE's spawner did not start (exit {done.returncode}): {detail}"
        )


def request(workdir: Path, jobdir: Path, env: dict[str, str], timeout: float) -> socket.socket:
    """Ask the spawner to start the runner of ``jobdir`` (starting a spawner if none listens);
    read the answer with :func:`started`."""
    deadline = time.monotonic() + timeout
    next_start = 0.0
    while True:
        try:
            conn = connect(workdir, timeout)
            break
        except OSError as error:
            now = time.monotonic()
            if now > deadline:
                raise SpawnerError(f"cannot reach the local CE's spawner: {error}") from None
            # None listens (or one is leaving): start one. If another holds the lock (starting,
            # or leaving), this returns at once and the next try finds the socket, or starts one.
            if now >= next_start:
                start(workdir, env, max(1.0, deadline - now))
                next_start = now + 0.5
            else:
                time.sleep(0.05)
    try:
        conn.sendall(str(jobdir.absolute()).encode("utf-8") + b"\n")
    except OSError:
        conn.close()
        raise
    return conn


def started(conn: socket.socket, timeout: float) -> bool:
    """Whether the runner asked for on ``conn`` has recorded itself (closes ``conn``)."""
    with conn:
        conn.settimeout(timeout)
        try:
            return conn.recv(1) == b"1"
        except OSError:
            return False


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1:
        print("usage: python -m act.local.spawner WORKDIR", file=sys.stderr)
        return 2
    return daemonize(Path(args[0]))


if __name__ == "__main__":
    sys.exit(main())
