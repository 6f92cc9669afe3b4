"""actctl: the operator's command line.

Built with click (subcommands, typed options and usage errors for free) and tabulate (the tables).
Commands read the configuration and open the database only when they need them, so ``actctl
states`` works without either. Expected problems end in a one-line message on stderr and an exit
code from :mod:`act.common.exitcodes`, never in a traceback; database URLs are only ever shown
without their password.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import click
import sqlalchemy as sa

from act.common import exitcodes, integrity, job_counts, liveness, migrate
from act.common.config import ConfigError
from act.common.db import Database, DatabaseError, is_unavailable, short_error
from act.common.states import STATES, Layer
from act.common.timeutil import utcnow
from act.ctl import links, output, queries
from act.ctl.options import json_option, limit_option
from act.service.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

EPILOG = f"""\b
Exit codes:
  {exitcodes.OK}  success
  {exitcodes.FAILURE}  unexpected error (with a traceback)
  {exitcodes.USAGE}  wrong command-line usage
  {exitcodes.CONFIG}  invalid configuration
  {exitcodes.DATABASE}  database unreachable or unusable, or its schema does not match this act
  {exitcodes.NOT_FOUND}  the job asked for does not exist
"""


class Failure(Exception):
    """An expected problem: ``message`` goes to stderr and actctl exits with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class App:
    """The global options, and the settings and database opened from them on first use."""

    config: str | None = None
    db_url: str | None = None
    _settings: Settings | None = None
    _db: Database | None = None

    def settings(self) -> Settings:
        """The configuration, with ``--db-url`` in place of ``db.url`` when given."""
        if self._settings is None:
            settings = load_settings(self.config)
            if self.db_url is not None:
                db = settings.db.model_copy(update={"url": self.db_url})
                settings = settings.model_copy(update={"db": db})
            self._settings = settings
        return self._settings

    def database(self) -> Database:
        if self._db is None:
            settings = self.settings()
            source = "--db-url" if self.db_url is not None else settings.source
            try:
                self._db = Database(
                    settings.db_url(),
                    pool_size=1,
                    connect_timeout=settings.db.connect_timeout,
                    busy_timeout=settings.db.busy_timeout,
                    echo=settings.db.echo,
                )
            except (sa.exc.ArgumentError, DatabaseError, ImportError) as error:
                raise ConfigError(source, [f"db.url: {error}"]) from None
        return self._db

    def checked(self) -> Database:
        """The database, after checking that its schema is the one this act needs and that
        each of its tables reads (SQLite's quick_check is left to ``actctl db check``: its cost
        grows with the file, and a damaged page a command reads fails it with exit 4 anyway)."""
        database = self.database()
        migrate.check(database)
        problem = integrity.probe(database, quick_check_seconds=0)
        if problem:
            raise Failure(problem, exitcodes.DATABASE)
        return database

    def close(self) -> None:
        if self._db is not None:
            self._db.dispose()


def _failure(error: Exception, app: App | None) -> Failure | None:
    """The message and exit code for an expected error; None for anything else."""
    if isinstance(error, Failure):
        return error
    if isinstance(error, ConfigError):
        return Failure(str(error), exitcodes.CONFIG)
    if isinstance(error, migrate.SchemaError):
        return Failure(str(error), exitcodes.DATABASE)
    database = app._db if app is not None else None
    if is_unavailable(error):
        where = database.safe_url if database is not None else "(unknown)"
        detail = short_error(error)
        password = database.url.password if database is not None else None
        if password:
            detail = detail.replace(str(password), "***")
        return Failure(f"database {where} is unavailable: {detail}", exitcodes.DATABASE)
    # The database answered but failed: unusable (corrupt, a table or the database itself
    # missing), or else a statement's own error (a bug: its traceback is kept).
    problem = integrity.diagnose(database, error) if database is not None else None
    return Failure(problem, exitcodes.DATABASE) if problem is not None else None


class ActGroup(click.Group):
    """The top-level group: turns expected errors of any subcommand into a message and a code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as error:
            failure = _failure(error, ctx.obj if isinstance(ctx.obj, App) else None)
            if failure is None:
                raise
            click.echo(f"actctl: {failure.message}", err=True)
            raise click.exceptions.Exit(failure.code) from None


pass_app = click.make_pass_decorator(App)


@click.group(
    cls=ActGroup,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--config",
    "config_path",
    metavar="PATH",
    help="Config file (default: $ACT_CONFIG, else /etc/act/act.yaml, else built-in defaults).",
)
@click.option("--db-url", metavar="URL", help="Database URL; overrides db.url of the config.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, db_url: str | None) -> None:
    """Inspect and steer act: its database, jobs, daemons and state machine."""
    app = App(config_path, db_url)
    ctx.obj = app
    ctx.call_on_close(app.close)


@cli.group()
def db() -> None:
    """The database schema."""


@db.command()
@pass_app
def upgrade(app: App) -> None:
    """Create the schema, or bring it up to the version this act needs."""
    database = app.database()
    before, after = migrate.upgrade(database)
    click.echo(f"database {database.safe_url}: schema {before or 'none'} -> {after}")


@db.command()
@pass_app
def current(app: App) -> None:
    """Show the database's schema version and the one this act needs (exit 4 if they differ)."""
    database = app.database()
    click.echo(f"database {database.safe_url}")
    click.echo(f"current: {migrate.current_revision(database) or 'none'}")
    click.echo(f"head:    {migrate.head_revision()}")
    migrate.check(database)  # on a mismatch: what is wrong and what to run, exit 4


@db.command("check")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="How long SQLite's quick_check may run before it is cut short (0: not at all).",
)
@pass_app
def db_check(app: App, seconds: float) -> None:
    """Check the schema version and that the database is usable (exit 4 if not).

    Each act table is read; on SQLite, PRAGMA quick_check reads every page of the file (about
    1 s per 230 MB), cut short after --seconds.
    """
    database = app.database()
    migrate.check(database)
    problem = integrity.probe(database, quick_check_seconds=seconds)
    if problem:
        raise Failure(problem, exitcodes.DATABASE)
    click.echo(f"database {database.safe_url}: ok")


from act.ctl import db_usage as _db_usage  # noqa: E402

_db_usage.register(db, pass_app)

from act.ctl import archive as _archive  # noqa: E402

_archive.register(db, pass_app)


@cli.command()
@json_option
@pass_app
def status(app: App, as_json: bool) -> None:
    """Job counts per state: PanDA jobs per queue, CE jobs per CE."""
    with app.checked().read() as conn:
        panda, ce = job_counts.panda_counts(conn), job_counts.ce_counts(conn)
    if as_json:
        click.echo(output.to_json(output.status_json(panda, ce)))
    else:
        click.echo(output.status_text(panda, ce))


@cli.command()
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice([str(state) for state in STATES[Layer.PANDA]]),
    help="Only jobs in this PanDA state (repeat for several).",
)
@click.option("--queue", help="Only jobs of this PanDA queue.")
@click.option("--ce", help="Only jobs whose newest CE job is on this CE (its name under ces:).")
@click.option(
    "--panda-id", "--pandaid", "panda_id", type=int, help="Only the job with this PanDA id."
)
@limit_option("jobs")
@json_option
@pass_app
def jobs(
    app: App,
    *,
    states: tuple[str, ...],
    queue: str | None,
    ce: str | None,
    panda_id: int | None,
    limit: int,
    as_json: bool,
) -> None:
    """PanDA jobs, newest first, with their newest CE job.

    With --panda-id, a job retention archived is shown as archived, with its archive row (in
    JSON: that row with "archived": true).
    """
    wanted = queries.JobFilter(states, queue, ce, panda_id, limit)
    with app.checked().read() as conn:
        rows = queries.list_jobs(conn, wanted)
        archived = _archive.archived_job(conn, panda_id) if panda_id and not rows else None
    if archived is not None:
        if as_json:
            click.echo(output.to_json([_archive.archived_json(archived)]))
        else:
            click.echo(_archive.archived_text(archived))
        return
    click.echo(output.to_json(rows) if as_json else output.jobs_text(rows))


@cli.command()
@click.argument("panda_id", type=int)
@click.option("--full", is_flag=True, help=f"Show specs longer than {output.TRUNCATE} characters.")
@json_option
@pass_app
def job(app: App, panda_id: int, full: bool, as_json: bool) -> None:
    """One PanDA job in full, with its CE jobs, links and history.

    Shows every column of the PanDA job (the spec last), every CE job made for it, where to look
    at it (the PanDA monitor, log_url, the published logs in the web area, the CE's own URLs or
    directories), and the transitions of the PanDA job and of its CE jobs merged in time order.
    A job retention archived is shown as archived, with its archive row (in JSON: that row with
    "archived": true).
    """
    with app.checked().read() as conn:
        detail = queries.job_detail(conn, panda_id)
        archived = _archive.archived_job(conn, panda_id) if detail is None else None
    if archived is not None:
        if as_json:
            click.echo(output.to_json(_archive.archived_json(archived)))
        else:
            click.echo(_archive.archived_text(archived))
        return
    if detail is None:
        raise Failure(f"no PanDA job {panda_id}", exitcodes.NOT_FOUND)
    found = links.job_links(app.settings(), detail)
    if as_json:
        click.echo(output.to_json(output.job_json(detail, found)))
    else:
        click.echo(output.job_text(detail, full=full, links=links.links_text(found)))


@cli.command()
@click.option("--all", "show_all", is_flag=True, help="Also show processes that have stopped.")
@json_option
@pass_app
def processes(app: App, show_all: bool, as_json: bool) -> None:
    """Daemon processes: live, dead or stopped.

    A process is dead when its last heartbeat is older than liveness.dead_after seconds and it
    has not stopped; stopped processes are only shown with --all.
    """
    with app.checked().read() as conn:
        rows = liveness.process_rows(conn, include_stopped=show_all)
    dead_after = app.settings().liveness.dead_after
    records = output.process_records(rows, dead_after=dead_after, now=utcnow())
    click.echo(output.to_json(records) if as_json else output.processes_text(records))


@cli.command()
@click.option(
    "--layer", type=click.Choice([layer.value for layer in Layer]), help="Only one layer."
)
@click.option("--markdown", is_flag=True, help="GitHub markdown tables (as in the README).")
@json_option
def states(layer: str | None, markdown: bool, as_json: bool) -> None:
    """The state machine: each layer's states and allowed transitions."""
    if markdown and as_json:
        raise click.UsageError("--markdown and --json exclude each other")
    layers = list(Layer) if layer is None else [Layer(layer)]
    if as_json:
        click.echo(output.to_json(output.states_json(layers)))
    else:
        click.echo(output.states_text(layers, markdown=markdown))


@cli.command()
@json_option
@pass_app
def panda(app: App, as_json: bool) -> None:
    """PanDA reporting: backlog and heartbeat lag, what PanDA was told, credentials.

    The heartbeat lag is how late the most overdue report is (PanDA declares a job lost after
    hours without one). Credential lifetimes are those of the roles under panda.roles.
    """
    from act.ctl import panda as reporting

    with app.checked().read() as conn:
        found = reporting.backlog(conn)
    credentials = reporting.credential_rows(app.settings().panda)
    if as_json:
        click.echo(output.to_json(reporting.to_json(found, credentials)))
    else:
        click.echo(reporting.to_text(found, credentials))


from act.ctl import ces as _ces  # noqa: E402  (needs the definitions above)

_ces.register(cli, pass_app, Failure)

from act.ctl import storage as _storage  # noqa: E402

_storage.register(cli, pass_app, Failure)

from act.ctl import config_check as _config_check  # noqa: E402

_config_check.register(cli, pass_app, Failure)
from act.ctl import audit as _audit  # noqa: E402
from act.ctl import jobchange as _jobchange  # noqa: E402
from act.ctl import queues as _queues  # noqa: E402

_audit.register(cli, pass_app, Failure)
_jobchange.register(cli, pass_app, Failure)
_queues.register(cli, pass_app, Failure)

from act.ctl import demo as _demo  # noqa: E402

_demo.register(cli, pass_app, Failure)

from act.ctl import report as _report  # noqa: E402

_report.register(cli, pass_app)

from act.ctl import translate as _translate  # noqa: E402

_translate.register(cli, pass_app, Failure)

from act.ctl import completion as _completion  # noqa: E402

_completion.register(cli)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``actctl`` console script; returns the exit code."""
    # Here, not at import: every command must be registered before CE and queue names are
    # attached to their parameters (a shell completion request is answered inside cli.main).
    _completion.install(cli)
    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="actctl",
            standalone_mode=False,
        )
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except click.Abort:
        click.echo("Aborted!", err=True)
        return exitcodes.FAILURE
    return code if isinstance(code, int) else exitcodes.OK


if __name__ == "__main__":
    sys.exit(main())
