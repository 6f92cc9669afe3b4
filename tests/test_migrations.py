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


def test_0007_renames_keep_every_value_and_go_back(empty_db_url: URL) -> None:
    """0007 renames ``ce_jobs.pandaid``, ``ce_jobs.ce_endpoint`` and ``ces.endpoint`` on a
    populated database: every value stays under its new name, the indexes and the primary key
    follow, and the downgrade restores the old names."""
    from alembic import command

    db = Database(empty_db_url)
    now = "2026-12-07 12:00:00"
    rows = [
        {"backend": "arc", "ce": f"arc{i % 3}", "pid": 6_000_000_000 + i, "now": now}
        for i in range(50)
    ]
    try:
        migrate.upgrade(db, "0006")
        db.run(
            lambda c: c.execute(
                sa.text(
                    "INSERT INTO ce_jobs (backend, ce_endpoint, pandaid, state, state_changed_at,"
                    " created_at, updated_at) VALUES (:backend, :ce, :pid, 'submitted', :now,"
                    " :now, :now)"
                ),
                rows,
            )
        )
        db.run(
            lambda c: c.execute(
                sa.text(
                    "INSERT INTO ces (endpoint, backend, updated_at) VALUES (:ce, 'arc', :now)"
                ),
                [{"ce": f"arc{i}", "now": now} for i in range(3)],
            )
        )
        migrate.upgrade(db)
        with db.read() as conn:
            got = conn.execute(
                sa.text("SELECT ce_name, panda_id FROM ce_jobs ORDER BY panda_id")
            ).all()
            indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("ce_jobs")}
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
        assert [tuple(r) for r in got] == [(r["ce"], r["pid"]) for r in rows]
        assert "ix_ce_jobs_ce_name_state_id" in indexes
        with db.read() as conn:
            names = conn.execute(sa.text("SELECT name FROM ces ORDER BY name")).scalars().all()
            key = sa.inspect(conn).get_pk_constraint("ces")["constrained_columns"]
        assert (names, key) == (["arc0", "arc1", "arc2"], ["name"])
        assert not {name for name in indexes if "ce_endpoint" in str(name)}

        with db.engine.begin() as conn:
            command.downgrade(migrate._config(conn), "0006")
        with db.read() as conn:
            back = conn.execute(
                sa.text("SELECT ce_endpoint, pandaid FROM ce_jobs ORDER BY pandaid")
            ).all()
            indexes = {ix["name"] for ix in sa.inspect(conn).get_indexes("ce_jobs")}
        assert [tuple(r) for r in back] == [(r["ce"], r["pid"]) for r in rows]
        assert "ix_ce_jobs_ce_endpoint_state_id" in indexes
        with db.read() as conn:
            assert conn.execute(
                sa.text("SELECT endpoint FROM ces ORDER BY endpoint")
            ).scalars().all() == [
                "arc0",
                "arc1",
                "arc2",
            ]
    finally:
        db.dispose()


def test_0008_adds_the_archive_and_keeps_every_row(empty_db_url: URL) -> None:
    """0008 adds ``archived_jobs`` on a populated 0007 database: every job row stays as it was,
    the archive starts empty with its unique panda_id, and the downgrade drops only it."""
    from alembic import command

    db = Database(empty_db_url)
    now = "2026-12-07 12:00:00"
    panda = [{"pid": 7_000_000_000 + i, "now": now} for i in range(40)]
    count = "SELECT COUNT(*) FROM {}"
    try:
        migrate.upgrade(db, "0007")
        db.run(
            lambda c: c.execute(
                sa.text(
                    "INSERT INTO panda_jobs (panda_id, queue, attempt, spec, spec_format, state,"
                    " state_changed_at, created_at, updated_at, report_failures, heartbeat_less,"
                    " validation_deferrals) VALUES (:pid, 'Q', 1, '{}', 'json', 'done', :now,"
                    " :now, :now, 0, false, 0)"
                ),
                panda,
            )
        )
        db.run(
            lambda c: c.execute(
                sa.text(
                    "INSERT INTO ce_jobs (backend, ce_name, panda_id, state, state_changed_at,"
                    " created_at, updated_at) VALUES ('arc', 'arc0', :pid, 'cleaned', :now,"
                    " :now, :now)"
                ),
                panda,
            )
        )
        migrate.upgrade(db)
        with db.read() as conn:
            got = conn.execute(
                sa.text("SELECT panda_id FROM panda_jobs ORDER BY panda_id")
            ).scalars()
            assert list(got) == [row["pid"] for row in panda]
            assert conn.execute(sa.text(count.format("ce_jobs"))).scalar() == len(panda)
            assert conn.execute(sa.text(count.format("archived_jobs"))).scalar() == 0
            unique = sa.inspect(conn).get_unique_constraints("archived_jobs")
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
        assert [u["column_names"] for u in unique] == [["panda_id"]]

        with db.engine.begin() as conn:
            command.downgrade(migrate._config(conn), "0007")
        with db.read() as conn:
            assert "archived_jobs" not in sa.inspect(conn).get_table_names()
            assert conn.execute(sa.text(count.format("panda_jobs"))).scalar() == len(panda)
            assert conn.execute(sa.text(count.format("ce_jobs"))).scalar() == len(panda)
    finally:
        db.dispose()
