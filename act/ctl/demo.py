"""``actctl demo``: run the whole pipeline on the embedded default (:mod:`act.demo.run`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from act.common import exitcodes


def register(cli: click.Group, pass_app: Callable[..., Any], failure: type[Exception]) -> None:
    """Add ``demo`` to actctl's top-level group."""

    @cli.command("demo")
    @click.option(
        "--jobs", type=click.IntRange(1, 100_000), default=100, show_default=True,
        help="Jobs the PanDA test server is seeded with.",
    )  # fmt: skip
    @click.option(
        "--dir", "directory", type=click.Path(path_type=Path), default=None,
        help="Demo directory, wiped and made again (default: $ACT_ROOT/demo, else "
        "~/.local/state/act/demo). Only an empty or earlier demo directory is wiped.",
    )  # fmt: skip
    @click.option(
        "--timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
        help="Seconds to wait for every job's final report; then exit 1 naming the stuck jobs.",
    )  # fmt: skip
    @click.option(
        "--failures", type=click.FloatRange(0, 1), default=0.0, show_default=True,
        help="Share of jobs whose pilot fails on purpose (reported failed, code 1305).",
    )  # fmt: skip
    @click.option(
        "--sleep", default="0.5-3", show_default=True, metavar="MIN-MAX",
        help="Seconds each demo pilot 'runs' (a random time in this range).",
    )  # fmt: skip
    @click.option(
        "--keep", is_flag=True,
        help="After the summary, keep actd and the PanDA test server running until Ctrl-C.",
    )  # fmt: skip
    def demo(
        *,
        jobs: int,
        directory: Path | None,
        timeout: float,
        failures: float,
        sleep: str,
        keep: bool,
    ) -> None:
        """Run act end to end on this machine: the PanDA test server with jobs, SQLite, actd
        with every daemon, the local CE running a demo pilot, file:// storage and a web area,
        all under one directory (config: etc/act-demo.yaml). Shows progress, then a summary.

        The global --config and --db-url options do not apply: the demo writes its own config.
        """
        from act.demo import pilot
        from act.demo.run import DemoError, Options, run

        try:
            pilot.parse_sleep(sleep)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--sleep") from None
        options = Options(
            jobs=jobs,
            directory=directory,
            timeout=timeout,
            failures=failures,
            keep=keep,
            sleep=sleep,
        )
        try:
            code = run(options)
        except DemoError as error:
            raise failure(f"demo: {error}", exitcodes.FAILURE) from None
        if code:
            raise click.exceptions.Exit(code)
