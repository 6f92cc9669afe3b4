"""Every actctl command that lists something has --json, and its output is valid JSON.

The first test walks the click command tree, so a listing command added later without --json
fails here. A command with a ``--reason`` option changes something (the operator says why) and
is not a listing; the few other commands that list nothing are named in NOT_LISTINGS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import URL, Connection

from act.atlas import storage_endpoints
from act.common import liveness
from act.common.db import Database
from act.ctl.cli import cli
from act.testing.panda import make_job_spec
from tests.support.dbs import url_text
from tests.support.procs import write_config
from tests.test_actctl import _scenario

Path_ = tuple[str, ...]
ARC_URL = "https://arc1.example.org/arex"

#: Commands that list nothing: they change or check the schema, print a script or a version.
NOT_LISTINGS: set[Path_] = {
    ("db", "upgrade"),
    ("db", "current"),
    ("db", "check"),
    ("completion",),
    ("demo",),
}

#: How each listing command is run against the seeded store.
LISTINGS: dict[Path_, list[str]] = {
    ("status",): ["status"],
    ("jobs",): ["jobs"],
    ("job",): ["job", "1003"],
    ("processes",): ["processes", "--all"],
    ("states",): ["states"],
    ("panda",): ["panda"],
    ("ces",): ["ces"],
    ("storage",): ["storage"],
    ("report",): ["report"],
    ("queues",): ["queues"],
    ("history",): ["history"],
    ("config", "check"): ["config", "check"],
    ("db", "usage"): ["db", "usage"],
    ("translate",): ["translate", "SPEC"],  # SPEC: a job spec file the test writes
}


pytestmark = pytest.mark.usefixtures("isolated_config")


def commands(group: click.Group, prefix: Path_ = ()) -> Iterator[tuple[Path_, click.Command]]:
    """Every command that can be run: leaves, and groups that do something without one."""
    for name, command in sorted(group.commands.items()):
        path = (*prefix, name)
        if isinstance(command, click.Group):
            if command.invoke_without_command:
                yield path, command
            yield from commands(command, path)
        else:
            yield path, command


def has_json(command: click.Command) -> bool:
    return any(isinstance(p, click.Option) and "--json" in p.opts for p in command.params)


def changes_something(command: click.Command) -> bool:
    return any(p.name == "reason" for p in command.params)


def listings() -> set[Path_]:
    return {
        path
        for path, command in commands(cli)
        if not changes_something(command) and path not in NOT_LISTINGS
    }


def test_every_listing_command_has_json() -> None:
    found = dict(commands(cli))
    assert ("ce", "open") in found and ("storage",) in found  # the walk reaches both kinds
    missing = sorted(" ".join(path) for path in listings() if not has_json(found[path]))
    assert missing == [], f"listing commands without --json: {missing}"


def test_every_listing_is_exercised_below() -> None:
    assert set(LISTINGS) == listings(), "add the new listing command to LISTINGS"


def _seed(conn: Connection) -> None:
    _scenario(conn)
    liveness.register(conn, "janitor", "host:1", "host", 1)
    storage_endpoints.switch(conn, "root://se.example.org:1094", up=False, reason="x", by="me")


def test_every_listing_prints_json(db: Database, db_url: URL, tmp_path: Path) -> None:
    db.run(_seed)
    settings = write_config(
        tmp_path / "act.yaml",
        {
            "root": str(tmp_path),
            "engine": {"ces": {"arc1": {"backend": "arc", "url": ARC_URL}}},
            # A complete config, or `config check` exits 3 (its JSON lists the problems).
            "queues": {"serve": {"Q1": {"ces": [{"flavour": "arc", "endpoint": ARC_URL}]}}},
        },
    )
    drain = ["--config", str(settings), "--db-url", url_text(db_url), "ce", "drain", "arc1"]
    changed = CliRunner().invoke(cli, [*drain, "--reason", "for the history"])
    assert changed.exit_code == 0, changed.output
    spec = tmp_path / "job.json"
    spec.write_text(json.dumps(make_job_spec(77)))
    for path, listed in LISTINGS.items():
        argv = [str(spec) if arg == "SPEC" else arg for arg in listed]
        args = ["--config", str(settings), "--db-url", url_text(db_url), *argv, "--json"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, (path, result.output, result.exception)
        data = json.loads(result.stdout)
        assert isinstance(data, dict | list) and data, (path, data)
