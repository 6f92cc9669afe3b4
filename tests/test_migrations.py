"""Migrations build exactly the schema the code describes, and stale schemas are refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL

from act.common import migrate
from act.common.db import Database
from act.common.schema import metadata


def test_upgrade_creates_the_schema_of_the_code(empty_db_url: URL) -> None:
    db = Database(empty_db_url)
    try:
        assert migrate.current_revision(db) is None
        before, after = migrate.upgrade(db)
        assert (before, after) == (None, migrate.head_revision())
        assert migrate.check(db) == migrate.head_revision()
        with db.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            differences = compare_metadata(context, metadata)
        assert differences == []
        assert migrate.upgrade(db) == (after, after)  # idempotent
    finally:
        db.dispose()


def test_a_database_without_schema_is_refused_with_the_command_to_run(empty_db_url: URL) -> None:
    db = Database(empty_db_url)
    try:
        with pytest.raises(migrate.SchemaError, match=r"no act schema: run `actctl db upgrade`"):
            migrate.check(db)
    finally:
        db.dispose()


def test_an_older_schema_is_refused_with_the_command_to_run(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    found = migrate.head_revision()
    monkeypatch.setattr(migrate, "HEAD", "9999_future")
    with pytest.raises(migrate.SchemaError) as error:
        migrate.check(db)
    assert f"is at schema {found}, this act needs 9999_future: run `actctl db upgrade`" in str(
        error.value
    )


def test_a_newer_schema_is_refused(db: Database) -> None:
    db.run(lambda c: c.execute(sa.text("UPDATE alembic_version SET version_num = 'zz99'")))
    with pytest.raises(migrate.SchemaError, match="upgraded by a newer act"):
        migrate.check(db)


def test_the_message_never_shows_the_password() -> None:
    db = Database("postgresql://act:hunter2@127.0.0.1:1/act", connect_timeout=1)
    assert "hunter2" not in db.safe_url and "***" in db.safe_url


def test_the_head_the_start_up_check_expects_is_the_newest_migration() -> None:
    assert migrate.head_revision() == migrate.HEAD


def test_a_daemon_start_up_check_does_not_import_alembic(tmp_path: Path) -> None:
    """The check every daemon makes at start reads the version row without Alembic (0.45 s of
    CPU per process)."""
    db_url = f"sqlite:///{tmp_path / 'act.db'}"
    code = (
        "import sys\n"
        "from act.common.db import Database\n"
        "from act.common import migrate\n"
        f"db = Database({db_url!r})\n"
        "assert 'alembic' not in sys.modules\n"
        "print(migrate.readiness_problem(db))\n"
        "assert 'alembic' not in sys.modules, 'alembic imported by the check'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "has no act schema" in result.stdout
