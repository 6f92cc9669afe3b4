"""actctl and retention, on every backend: `job` and `jobs --panda-id` find an archived job and
say so; `db prune --dry-run` counts what a pass would delete and changes nothing; `db prune`
runs the pass and records it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import URL

from act.common import exitcodes
from act.common.db import Database
from act.common.schema import operator_actions
from act.ctl.cli import cli
from tests.support.dbs import url_text
from tests.test_retention import archived, counts, populate

pytestmark = pytest.mark.usefixtures("isolated_config")


def actctl(url: URL, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--db-url", url_text(url), *args])


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def test_prune_dry_run_changes_nothing_and_prune_archives(
    db: Database, db_url: URL, tmp_path: Path
) -> None:
    made = populate(db, tmp_path)
    before = counts(db)
    text = ok(actctl(db_url, "db", "prune", "--dry-run"))
    assert counts(db) == before
    assert "dry run" in text
    lines = {line.split()[0]: line.split()[-1] for line in text.splitlines()[3:]}
    assert lines["panda_jobs"] == str(len(made.archived))
    assert lines["transitions"] != "0"

    assert actctl(db_url, "db", "prune").exit_code == exitcodes.USAGE  # no --reason
    assert counts(db) == before
    text = ok(actctl(db_url, "db", "prune", "--who", "tester", "--reason", "disk"))
    assert f"archived {len(made.archived)} job(s)" in text
    assert archived(db) == made.archived
    with db.read() as conn:
        action = conn.execute(sa.select(operator_actions)).mappings().one()
    assert (action["command"], action["who"], action["reason"]) == ("db prune", "tester", "disk")
    assert json.loads(action["details"])["panda_jobs"] == len(made.archived)
    again = ok(actctl(db_url, "db", "prune", "--dry-run"))
    assert {line.split()[0]: line.split()[-1] for line in again.splitlines()[3:]}[
        "panda_jobs"
    ] == "0"


def test_job_and_jobs_find_an_archived_job(db: Database, db_url: URL, tmp_path: Path) -> None:
    made = populate(db, tmp_path)
    ok(actctl(db_url, "db", "prune", "--reason", "test"))
    panda_id = made.archived[0]

    text = ok(actctl(db_url, "job", str(panda_id)))
    assert f"PanDA job {panda_id} is archived" in text
    assert "done" in text and "ce1" in text
    found = json.loads(ok(actctl(db_url, "job", str(panda_id), "--json")))
    assert found["archived"] is True and found["panda_id"] == panda_id
    assert found["state"] == "done" and found["ce_names"] == "ce1"

    assert f"PanDA job {panda_id} is archived" in ok(
        actctl(db_url, "jobs", "--panda-id", str(panda_id))
    )
    listed = json.loads(ok(actctl(db_url, "jobs", "--panda-id", str(panda_id), "--json")))
    assert [(job["panda_id"], job["archived"]) for job in listed] == [(panda_id, True)]

    kept = made.kept[0]
    assert "is archived" not in ok(actctl(db_url, "job", str(kept)))
    assert actctl(db_url, "job", "999999").exit_code == exitcodes.NOT_FOUND
    assert ok(actctl(db_url, "jobs", "--panda-id", "999999")).strip() == "(no jobs)"
