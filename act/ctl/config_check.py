"""``actctl config check``: validate a configuration without starting anything.

Beyond what every act process checks when it reads its configuration (keys, types, ranges,
daemon names and options, password files), this resolves what only a running act would find
out later: whether every file the configuration names exists with safe permissions
(:mod:`act.ctl.config_files`), the served queues as CRIC and the config describe them, which
engine CE each of a queue's CEs maps to, and whether every CE's back end is installed. A queue
none of whose CEs has an engine CE would never get a job submitted: that is an error here, not a
log line a day later.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import click

from act.common import exitcodes
from act.common.config import stop_timeout_warning
from act.ctl import config_files, output
from act.ctl.options import json_flag
from act.engine.backend import BACKENDS
from act.service.daemons import daemon_problems
from act.service.settings import Settings


@dataclass
class Checked:
    """What a configuration amounts to, and what is wrong with it."""

    source: str
    daemons: list[str] = field(default_factory=list)
    ces: dict[str, str] = field(default_factory=dict)  # engine CE -> back end
    queues: dict[str, list[str]] = field(default_factory=dict)  # queue -> engine CEs
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ok": not self.problems,
            "daemons": self.daemons,
            "ces": self.ces,
            "queues": self.queues,
            "problems": self.problems,
            "warnings": self.warnings,
        }


def check(settings: Settings, *, fetch: Callable[[str], bytes] | None = None) -> Checked:
    """Resolve ``settings`` as the daemons would; ``fetch`` reads ``queues.cric_url``."""
    from act.atlas.queues import QueueConfigError, load_queues
    from act.atlas.translate.build import match_ces

    found = Checked(source=settings.source)
    found.daemons = sorted(name for name, d in settings.daemons.items() if d.enabled)
    found.problems.extend(daemon_problems(settings))
    found.problems.extend(config_files.problems(settings))
    slow_stop = stop_timeout_warning(settings)
    if slow_stop:
        found.warnings.append(slow_stop)
    for name, ce in sorted(settings.engine.ces.items()):
        found.ces[name] = ce.backend
        problem = _backend_problem(ce.backend)
        if problem:
            found.problems.append(f"engine.ces.{name}.backend: {problem}")
    try:
        queues = load_queues(settings.queues, fetch=fetch, warnings=found.warnings)
    except QueueConfigError as error:
        found.problems.append(f"queues: {error}")
        return found
    except OSError as error:
        found.problems.append(f"queues: cannot read CRIC: {error}")
        return found
    for name, queue in sorted(queues.items()):
        matched = [engine_name for engine_name, _, _ in match_ces(queue, settings.engine.ces)]
        found.queues[name] = matched
        if not matched:
            endpoints = ", ".join(ce.endpoint for ce in queue.active_ces()) or "none active"
            found.problems.append(
                f"queues.serve.{name}: no engine CE for its CEs ({endpoints}); add them under "
                "engine.ces (by name, or with the same url and queue)"
            )
    if queues and not settings.daemons.get("panda_fetcher"):
        found.warnings.append("queues are served but no panda_fetcher daemon is configured")
    return found


def _backend_problem(backend: str) -> str | None:
    target = BACKENDS.get(backend)
    if target is None:
        return f"unknown back end {backend!r} (known: {', '.join(sorted(BACKENDS))})"
    module_name = target.partition(":")[0]
    try:
        importlib.import_module(module_name)
    except ImportError as error:
        return f"back end {backend!r} is not usable here: {error}"
    return None


def text(found: Checked) -> str:
    lines = [f"{found.source}: {'valid' if not found.problems else 'INVALID'}"]
    lines.append(f"daemons ({len(found.daemons)}): {', '.join(found.daemons) or 'none'}")
    rows = [(name, backend) for name, backend in found.ces.items()]
    if rows:
        lines.append(output.table(rows, ("engine CE", "back end")))
    qrows = [(name, ", ".join(ces) or "-") for name, ces in found.queues.items()]
    if qrows:
        lines.append(output.table(qrows, ("queue", "engine CEs")))
    lines.extend(f"warning: {w}" for w in found.warnings)
    lines.extend(f"error: {p}" for p in found.problems)
    return "\n".join(lines)


def register(cli: click.Group, pass_app: Callable[..., Any], failure: type[Exception]) -> None:
    """Add ``config check`` to actctl's top-level group."""

    @cli.group("config")
    def config_group() -> None:
        """The configuration act would run with."""

    @config_group.command("check")
    @json_flag("text")
    @pass_app
    def check_command(app: Any, as_json: bool) -> None:
        """Validate the configuration (keys, daemons, the files it names and their modes,
        queues from CRIC, CE mapping, back ends).

        Exits 0 when act could run with it, 3 otherwise; changes nothing, starts nothing.
        """
        found = check(app.settings())
        click.echo(output.to_json(found.to_json()) if as_json else text(found))
        if found.problems:
            raise click.exceptions.Exit(exitcodes.CONFIG)
