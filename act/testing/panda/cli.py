"""``python -m act.testing.panda``: run the PanDA TEST DOUBLE on a port, with seeded jobs."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from act.testing.panda.server import PandaTestServer


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m act.testing.panda",
        description="A PanDA server TEST DOUBLE for demos and benchmarks (not PanDA).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=25080)
    parser.add_argument("--jobs", type=int, default=0, help="jobs to seed")
    parser.add_argument("--queue", default="TEST_QUEUE")
    parser.add_argument(
        "--multicore", type=float, default=0.3, help="fraction of 8-core jobs (default 0.3)"
    )
    parser.add_argument(
        "--tls", metavar="DIR", help="serve HTTPS with a throw-away CA written to DIR"
    )
    parser.add_argument(
        "--proxy", metavar="PATH", help="with --tls: also write a client proxy (0600) to PATH"
    )
    args = parser.parse_args(argv)
    if args.proxy and not args.tls:
        parser.error("--proxy needs --tls")
    server = PandaTestServer(
        tls=bool(args.tls),
        certs_dir=Path(args.tls) if args.tls else None,
        host=args.host,
        port=args.port,
    )
    n_multi = int(args.jobs * args.multicore)
    server.seed(args.jobs - n_multi, queue=args.queue)
    server.seed(n_multi, queue=args.queue, cores=8)
    server.record_requests = False
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"PanDA TEST DOUBLE serving {server.url} (queue {args.queue}, {args.jobs} jobs)")
    if server.ca is not None:
        print(f"CA certificate: {server.ca.ca_file}")
        if args.proxy:
            print(f"client proxy: {server.ca.proxy(Path(args.proxy))}")
    sys.stdout.flush()
    while not stop.wait(10):
        with server._lock:
            held = len(server.jobs)
            sent = sum(1 for j in server.jobs.values() if j.status != "activated")
            finals = sum(1 for j in server.jobs.values() if j.final_state)
        print(f"jobs {held}, handed out {sent}, final {finals}, updates {server.update_count()}")
        sys.stdout.flush()
    server.stop()
    return 0
