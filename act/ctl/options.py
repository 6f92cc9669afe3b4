"""Options several actctl commands share, declared once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def json_flag(instead_of: str = "tables") -> Callable[[F], F]:
    """``--json`` (the parameter ``as_json``): print JSON instead of ``instead_of``."""
    return click.option(
        "--json", "as_json", is_flag=True, help=f"Print JSON instead of {instead_of}."
    )


#: ``--json`` for a command that prints tables.
json_option = json_flag()


def limit_option(what: str, default: int = 50) -> Callable[[F], F]:
    """``--limit N``: show at most N ``what`` (0: all)."""
    return click.option(
        "--limit",
        type=click.IntRange(min=0),
        default=default,
        show_default=True,
        help=f"Show at most this many {what} (0: all).",
    )
