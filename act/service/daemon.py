"""``act-daemon NAME``: run one daemon in the foreground (actd starts each daemon process so:
``python -m act.service.daemon NAME --snapshot FILE --log-file FILE``).

The loop it runs is :func:`act.common.daemon.run_daemon`; this command reads the whole
configuration (:mod:`act.service.settings`) and finds the daemon by name
(:mod:`act.service.daemons`). Exit codes: :mod:`act.common.exitcodes` (with ``--once``, the
outcome of the one cycle).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from act.common import exitcodes, logs
from act.common.config import ConfigError
from act.common.daemon import (
    ENV_SUPERVISOR_PID,
    PROCESS_UMASK,
    install_reopen_signal,
    run_daemon,
)
from act.common.logs import setup as setup_logging
from act.service.daemons import resolve
from act.service.settings import from_snapshot, load_settings

#: The module actd runs with ``python -m`` for each daemon process.
MODULE = "act.service.daemon"


def main(argv: list[str] | None = None) -> int:
    """``act-daemon NAME``: run one daemon in the foreground (actd starts daemons this way)."""
    parser = argparse.ArgumentParser(prog="act-daemon", description=main.__doc__)
    parser.add_argument("name", help="the daemon's name under `daemons:` in the config")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--config", help="config file (default: $ACT_CONFIG, /etc/act/act.yaml)")
    source.add_argument("--snapshot", help=argparse.SUPPRESS)  # validated settings from actd
    parser.add_argument(
        "--once",
        action="store_true",
        help="run one cycle, then stop; the exit code says whether it failed",
    )
    parser.add_argument("--log-file", type=Path, help="log here instead of stderr")
    args = parser.parse_args(argv)
    os.umask(PROCESS_UMASK)
    install_reopen_signal()

    try:
        if args.snapshot:
            settings = from_snapshot(Path(args.snapshot).read_text(encoding="utf-8"))
        else:
            settings = load_settings(args.config)
        if args.name not in settings.daemons:
            raise ConfigError(settings.source, [f"daemons.{args.name}: not configured"])
        spec = resolve(args.name, settings.daemons[args.name].entry)
    except (ConfigError, LookupError) as error:
        print(f"act-daemon: {error}", file=sys.stderr)
        return exitcodes.CONFIG
    setup_logging(settings.logging.level, args.log_file, stderr=args.log_file is None)
    logs.start_reopener()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    supervised = bool(os.environ.get(ENV_SUPERVISOR_PID))
    # Under actd, Ctrl-C in a terminal reaches the whole process group: the supervisor turns it
    # into an orderly SIGTERM for each child, so the children themselves ignore it.
    signal.signal(signal.SIGINT, signal.SIG_IGN if supervised else (lambda *_: stop.set()))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        return run_daemon(spec, settings, args.name, once=args.once, stop=stop)
    except Exception:
        logging.getLogger(f"act.{args.name}").exception("daemon failed")
        return exitcodes.FAILURE


if __name__ == "__main__":
    sys.exit(main())
