"""actctl db usage on each backend: rows per act table and size on disk."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import URL

from act.common.db import Database
from act.common.schema import metadata
from act.common.states import Layer
from act.ctl.cli import cli
from tests.support.dbs import url_text
from tests.support.jobs import make_jobs
from tests.test_db_faults import sqlite_file

pytestmark = pytest.mark.usefixtures("isolated_config")


def actctl(url: URL, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db-url", url_text(url), *args])


def test_db_usage_counts_rows_and_sizes_each_table(db: Database, db_url: URL) -> None:
    db.run(lambda conn: make_jobs(conn, Layer.PANDA, "queued", 5))
    result = actctl(db_url, "db", "usage", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["database"] == db.safe_url and found["backend"] == db.backend
    tables = {t["table"]: t for t in found["tables"]}
    assert set(tables) == set(metadata.tables)
    assert tables["panda_jobs"]["rows"] == 5 and tables["ce_jobs"]["rows"] == 0
    assert tables["transitions"]["rows"] >= 5  # each job's creation is recorded
    assert all(isinstance(t["bytes"], int) and t["bytes"] > 0 for t in tables.values())
    assert found["total_bytes"] >= tables["panda_jobs"]["bytes"]
    if db.backend == "sqlite":
        assert found["files"]["file"] == sqlite_file(db_url).stat().st_size
        assert found["page_count"] > 0 and found["dbstat"] is True

    text = actctl(db_url, "db", "usage")
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == f"database {db.safe_url} ({db.backend})"
    assert any(line.split()[:2] == ["panda_jobs", "5"] for line in lines)
    assert lines[-1].startswith("total: ")
