"""Shell completion for actctl, through click's own machinery.

``actctl completion bash|zsh|fish`` prints the script to source (it calls actctl back with
``_ACTCTL_COMPLETE=<shell>_complete`` for each completion). Subcommands, options and choices
complete by themselves; :func:`install` adds the names of the configured CEs to every parameter
called ``ce`` and those of the configured queues to every parameter called ``queue``, read from
the configuration (``--config`` if typed, else the usual places). Completion never fails
loudly: any problem gives no suggestions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

from act.service.settings import Settings, load_settings

PROG = "actctl"
COMPLETE_VAR = "_ACTCTL_COMPLETE"
SHELLS = ("bash", "zsh", "fish")

_Names = Callable[[Settings], list[str]]


def _settings(ctx: click.Context) -> Settings:
    root = ctx.find_root()
    return load_settings(root.params.get("config_path"))


def _completer(names: _Names) -> Callable[..., list[CompletionItem]]:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        try:
            return [
                CompletionItem(name)
                for name in sorted(names(_settings(ctx)))
                if name.startswith(incomplete)
            ]
        except Exception:  # a broken config must not break the shell
            return []

    return complete


def ce_names(settings: Settings) -> list[str]:
    return list(settings.engine.ces)


def queue_names(settings: Settings) -> list[str]:
    return list(settings.queues.serve)


#: Parameter name -> where its values come from.
COMPLETERS: dict[str, _Names] = {"ce": ce_names, "queue": queue_names}


def _commands(command: click.Command) -> Iterator[click.Command]:
    yield command
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _commands(sub)


def install(cli: click.Group) -> None:
    """Complete CE and queue names for every parameter named ``ce`` or ``queue`` that has no
    completion of its own. Idempotent; call it once every command is registered."""
    for command in _commands(cli):
        for param in command.params:
            names = COMPLETERS.get(param.name or "")
            if names is not None and param._custom_shell_complete is None:
                param._custom_shell_complete = _completer(names)


def script(cli: click.Group, shell: str) -> str:
    """The completion script of ``shell`` for actctl."""
    completion = get_completion_class(shell)
    if completion is None:
        raise click.UsageError(f"no completion for shell {shell!r}")
    return completion(cli, {}, PROG, COMPLETE_VAR).source()


def register(cli: click.Group) -> None:
    """Add ``completion`` to actctl's top-level group."""

    @cli.command("completion")
    @click.argument("shell", type=click.Choice(SHELLS))
    def completion_command(shell: str) -> None:
        """Print the shell completion script of SHELL.

        \b
        bash: eval "$(actctl completion bash)"   (e.g. in ~/.bashrc)
        zsh:  eval "$(actctl completion zsh)"    (e.g. in ~/.zshrc)
        fish: actctl completion fish > ~/.config/fish/completions/actctl.fish
        """
        click.echo(script(cli, shell))
