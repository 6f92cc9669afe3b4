"""actctl on a database that cannot be used, for real on each backend: one line naming the
database (password hidden) and the cause, exit 4, no traceback; ``db check``."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import URL, make_url

from act.common import exitcodes
from act.common.config import CommonSettings
from act.common.daemon import Context, DaemonSpec, run_daemon
from act.common.db import Database, normalise_url
from act.common.schema import queues
from act.common.timeutil import utcnow
from act.ctl.cli import cli
from act.service.settings import Settings
from tests.support.dbs import SERVERS, fresh_database, url_text
from tests.test_db_faults import corrupt, sqlite_file

pytestmark = pytest.mark.usefixtures("isolated_config")

PASSWORD = "Pw-" + secrets.token_hex(4)
#: Commands that read the database, each with its arguments.
READERS = [
    ["status"],
    ["jobs"],
    ["job", "1"],
    ["processes"],
    ["panda"],
    ["db", "usage"],
    ["ces"],
    ["storage"],
]


def actctl(url: URL | str, *args: str) -> Result:
    text = url if isinstance(url, str) else url_text(url)
    return CliRunner().invoke(cli, ["--db-url", text, *args])


def one_line_exit_4(result: Result) -> str:
    assert result.exit_code == exitcodes.DATABASE, (result.output, result.exception)
    assert "Traceback" not in result.output and "Background on this error" not in result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith("actctl: database ")
    return line


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
@pytest.mark.parametrize("command", [["status"], ["jobs"], ["db", "upgrade"]])
def test_a_database_that_does_not_exist(backend: str, command: list[str]) -> None:
    name = f"act_missing_{secrets.token_hex(4)}"
    url = make_url(SERVERS[backend]).set(database=name)
    if backend == "postgresql":  # the test server trusts local connections: any password
        url = url.set(password=PASSWORD)
    line = one_line_exit_4(actctl(url, *command))
    assert normalise_url(url).render_as_string(hide_password=True) in line
    assert PASSWORD not in line
    assert f"Unknown database '{name}'" in line or f'database "{name}" does not exist' in line


@pytest.mark.parametrize("command", READERS, ids=" ".join)
def test_a_corrupt_sqlite_file(tmp_path: Path, command: list[str]) -> None:
    with fresh_database("sqlite", tmp_path) as url:
        corrupt(sqlite_file(url), "panda_jobs")
        line = one_line_exit_4(actctl(url, *command))
        assert str(sqlite_file(url)) in line and "database disk image is malformed" in line


def test_a_dropped_table_is_named_by_every_reading_command(db: Database, db_url: URL) -> None:
    with db.transaction() as conn:
        conn.execute(sa.text("DROP TABLE storage_endpoints"))
    for command in READERS:
        line = one_line_exit_4(actctl(db_url, *command))
        assert ": table storage_endpoints: " in line, command


def test_db_check_runs_quick_check(tmp_path: Path) -> None:
    with fresh_database("sqlite", tmp_path) as url:
        result = actctl(url, "db", "check")
        assert result.exit_code == 0 and result.stdout.endswith(": ok\n")
        corrupt(sqlite_file(url), "ix_operator_actions_at")
        assert actctl(url, "status").exit_code == 0  # the index is not read
        line = one_line_exit_4(actctl(url, "db", "check"))
        assert ": quick_check: " in line and "Page " in line
        assert actctl(url, "db", "check", "--seconds", "0").exit_code == 0


def test_db_check_on_each_backend(db_url: URL) -> None:
    result = actctl(db_url, "db", "check")
    assert result.exit_code == 0, result.output


def test_processes_shows_the_exception_of_a_failed_cycle_not_sqlalchemys_link(
    db: Database, db_url: URL, tmp_path: Path
) -> None:
    """A statement's own error (the database is sound) keeps its traceback in the log; actctl
    shows its exception line, not the "Background on this error" link SQLAlchemy ends it with."""

    def duplicate(ctx: Context[CommonSettings]) -> None:
        with ctx.db.transaction() as conn:
            for _ in range(2):
                conn.execute(sa.insert(queues).values(name="Q1", updated_at=utcnow()))

    settings = Settings.model_validate(
        {"root": str(tmp_path), "db": {"url": url_text(db_url)}, "daemons": {"mover": {}}}
    )
    code = run_daemon(DaemonSpec(run_once=duplicate), settings, "mover", once=True, db=db)
    assert code == exitcodes.CYCLE_FAILED
    result = actctl(db_url, "processes", "--all", "--json")
    assert result.exit_code == 0, result.output
    (process,) = json.loads(result.stdout)
    assert process["last_error"].startswith("sqlalchemy.exc.IntegrityError: ")
    assert "Background on this error" not in process["last_error"]
