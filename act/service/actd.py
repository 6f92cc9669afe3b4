"""``actd``: start act's daemons and keep them running (:mod:`act.common.supervisor`), on the
whole configuration (:mod:`act.service.settings`), each daemon started as
``python -m act.service.daemon NAME``."""

from __future__ import annotations

import argparse
import os
import sys

from act import __version__
from act.common import exitcodes
from act.common.config import ConfigError
from act.common.daemon import PROCESS_UMASK
from act.common.logs import setup as setup_logging
from act.common.sdnotify import Notifier
from act.common.supervisor import Supervisor
from act.service import daemon
from act.service.settings import load_settings


def main(argv: list[str] | None = None) -> int:
    """actd: start act's daemons and keep them running (see act.common.supervisor)."""
    parser = argparse.ArgumentParser(
        prog="actd",
        description="Start act's daemons and keep them running.",
        epilog="Exit codes: 0 stopped on request, 1 unexpected error, 2 usage, 3 invalid "
        "configuration, 4 database unreachable or schema not current, 5 already running.",
    )
    parser.add_argument("--config", help="config file (default: $ACT_CONFIG, /etc/act/act.yaml)")
    parser.add_argument("--version", action="version", version=f"actd {__version__}")
    args = parser.parse_args(argv)
    os.umask(PROCESS_UMASK)  # inherited by the daemons: nothing act makes is world-readable
    try:
        settings = load_settings(args.config)
    except ConfigError as error:
        print(f"actd: {error}", file=sys.stderr)
        return exitcodes.CONFIG
    setup_logging(settings.logging.level, settings.log_dir / "actd.log")
    supervisor = Supervisor(
        settings,
        args.config,
        Notifier(),
        load=load_settings,
        daemon_command=[sys.executable, "-m", daemon.MODULE],
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
