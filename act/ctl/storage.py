"""actctl's storage commands: ``actctl storage`` lists the storage endpoints the validator knows,
``actctl storage down|up ENDPOINT`` switches one off or on (records who and why).

Each switch records who and why (:mod:`act.ctl.audit`). An endpoint switched down is not
contacted: jobs with output files there wait in ``tovalidate``
(``validate_after``, retried with back-off) instead of failing for the storage's fault; the
validator's ``give_up_after`` still applies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
import sqlalchemy as sa

from act.atlas import storage_endpoints
from act.atlas.storage.model import endpoint_of
from act.common import exitcodes
from act.ctl import audit, backlog_queries, output
from act.ctl.options import json_flag
from act.ctl.queries import Row

COLUMNS = ("endpoint", "state", "last_ok_at", "last_error_at", "last_error")


def records(conn: sa.Connection) -> list[Row]:
    found = storage_endpoints.rows(conn)
    waiting = backlog_queries.validations_put_off(conn)
    return [
        {**row, "state": "up" if row["enabled"] else "down", "jobs_put_off": waiting}
        for row in found
    ]


def text(found: list[Row]) -> str:
    if not found:
        return "(no storage endpoints known yet)"
    rows = [
        [
            r["endpoint"],
            r["state"],
            r["last_ok_at"],
            r["last_error_at"],
            output.one_line(r["last_error"], 60),
        ]
        for r in found
    ]
    lines = [output.table(rows, COLUMNS), *output.operator_notes(found, "endpoint")]
    lines += ["", f"jobs whose validation is put off: {found[0]['jobs_put_off']}"]
    return "\n".join(lines)


def register(cli: click.Group, pass_app: Callable[..., Any], failure: type[Exception]) -> None:
    """Add ``storage`` to actctl's top-level group."""

    @cli.group("storage", invoke_without_command=True)
    @json_flag("a table")
    @click.pass_context
    def storage_group(context: click.Context, as_json: bool) -> None:
        """Storage endpoints the validator checks outputs on; switch one down or up."""
        if context.invoked_subcommand is not None:
            return
        app = context.obj
        with app.checked().read() as conn:
            found = records(conn)
        click.echo(output.to_json(found) if as_json else text(found))

    def action(action_name: str, up: bool, summary: str) -> None:
        @storage_group.command(action_name, help=summary)
        @click.argument("endpoint")
        @click.option("--reason", required=True, help="Why (shown by `actctl storage`).")
        @click.option("--who", default=None, help="Who decides (default: the OS user).")
        @pass_app
        def command(app: Any, endpoint: str, reason: str, who: str | None) -> None:
            try:
                name = endpoint_of(endpoint)
            except ValueError as error:
                raise failure(f"{endpoint!r}: {error}", exitcodes.USAGE) from None
            why = audit.check_reason(reason)
            person = audit.person(who)

            def change(conn: sa.Connection) -> None:
                storage_endpoints.switch(conn, name, up=up, reason=why, by=person)
                audit.record(
                    conn, who=person, command=f"storage {action_name}", target=f"storage:{name}",
                    reason=why,
                )  # fmt: skip

            app.checked().run(change)
            click.echo(f"{name}: {summary.lower().rstrip('.')} (by {person}: {why})")

    action("down", False, "Down: not contacted, its jobs' validation put off.")
    action("up", True, "Up: checked again.")
