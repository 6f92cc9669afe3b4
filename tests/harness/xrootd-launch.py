#!/usr/bin/env python3
"""Run a program with listening sockets on 127.0.0.1 handed over by systemd socket activation.

    xrootd-launch.py PORT[,PORT...] PROGRAM [ARGS...]

xrootd 5.5 has no directive for the address it binds: left alone it listens on every interface.
It does adopt sockets passed the systemd way (``sd_listen_fds``: fds 3.. and ``LISTEN_FDS`` /
``LISTEN_PID``), so this launcher binds 127.0.0.1:PORT for each port, places the sockets on fds
3, 4, ... in the order given, and ``exec``s the program in its own process (the PID stays the
same, as ``LISTEN_PID`` requires). The test storage element then listens on loopback only.

The sockets are first moved to high fds: Python's own first socket may already be fd 3, and
``dup2`` onto itself would keep its close-on-exec flag. Exits 98 with a message when a port is
taken, before starting anything.
"""

from __future__ import annotations

import os
import socket
import sys

PARKING_FD = 100  # above anything this short-lived process has open


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    ports = [int(port) for port in argv[1].split(",")]
    sockets = []
    for port in ports:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError as error:
            print(f"xrootd-launch: cannot bind 127.0.0.1:{port}: {error}", file=sys.stderr)
            return 98
        sock.listen(255)
        sockets.append(sock)
    parked = []
    for index, sock in enumerate(sockets):
        os.dup2(sock.fileno(), PARKING_FD + index)
        parked.append(PARKING_FD + index)
    for sock in sockets:
        sock.close()
    for index, fd in enumerate(parked):
        os.dup2(fd, 3 + index, inheritable=True)
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(ports))
    os.environ["LISTEN_PID"] = str(os.getpid())
    os.execvp(argv[2], argv[2:])
    return 127  # not reached: execvp raises on failure


if __name__ == "__main__":
    sys.exit(main(sys.argv))
