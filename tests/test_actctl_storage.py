"""actctl storage and actctl storage down|up, on every backend."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy.engine import URL

from act.atlas import storage_endpoints
from act.common import exitcodes
from act.common.db import Database
from act.ctl.cli import cli
from tests.support.dbs import url_text
from tests.support.procs import write_config

pytestmark = pytest.mark.usefixtures("isolated_config")


def actctl(url: URL, tmp_path: Path, *args: str) -> Result:
    config_file = write_config(tmp_path / "act.yaml", {"root": str(tmp_path)})
    return CliRunner().invoke(cli, ["--config", str(config_file), "--db-url", url_text(url), *args])


def test_down_and_up_switch_an_endpoint_and_the_listing_shows_who_and_why(
    db: Database, db_url: URL, tmp_path: Path
) -> None:
    assert "no storage endpoints known yet" in actctl(db_url, tmp_path, "storage").stdout
    db.run(lambda c: storage_endpoints.record(c, {"root://se.example.org:1094"}, {}))

    result = actctl(
        db_url, tmp_path, "storage", "down", "davs://dav.example.org/atlas/x",
        "--reason", "SE in downtime", "--who", "alice",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "https://dav.example.org:443: down" in result.stdout  # davs:// named as https
    with db.read() as conn:
        assert storage_endpoints.down(conn) == {"https://dav.example.org:443"}

    listing = actctl(db_url, tmp_path, "storage").stdout
    assert "https://dav.example.org:443" in listing and "root://se.example.org:1094" in listing
    assert "SE in downtime (by alice" in listing
    rows = json.loads(actctl(db_url, tmp_path, "storage", "--json").stdout)
    states = {row["endpoint"]: row["state"] for row in rows}
    assert states == {"https://dav.example.org:443": "down", "root://se.example.org:1094": "up"}

    up = actctl(db_url, tmp_path, "storage", "up", "https://dav.example.org", "--reason", "back")
    assert up.exit_code == 0, up.output
    with db.read() as conn:
        assert storage_endpoints.down(conn) == set()


def test_a_malformed_endpoint_is_a_usage_error_naming_it(
    db: Database, db_url: URL, tmp_path: Path
) -> None:
    result = actctl(db_url, tmp_path, "storage", "down", "not a url", "--reason", "x")
    assert result.exit_code == exitcodes.USAGE
    assert "not a url" in result.output
