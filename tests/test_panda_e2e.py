"""PanDA to a local CE and back, on every backend: panda_fetcher → translator → submitter → poller
→ ce_fetcher → app_status → validator → app_status → cleaner, with the PanDA TEST DOUBLE and real
local processes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from act.atlas import app_status, fetcher, translator, validator
from act.common.daemon import Context
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs
from act.engine import cleaner, poller, submitter
from act.engine import fetcher as ce_fetcher
from act.engine.runtime import pool
from act.service.daemons import resolve
from act.service.settings import Settings
from act.testing.panda import PandaTestServer
from tests.support.bridge import FINISHING_PILOT, as_read_by_the_pilot
from tests.support.follow import context
from tests.support.panda import settings_for
from tests.support.procs import wait_for

pytestmark = pytest.mark.slow

WRAPPER = FINISHING_PILOT  # a stand-in pilot: proves it got the job spec and its arguments


@pytest.fixture
def server() -> Iterator[PandaTestServer]:
    with PandaTestServer() as test_server:
        yield test_server


def make_settings(tmp_path: Path, server: PandaTestServer) -> Settings:
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(WRAPPER)
    wrapper.chmod(0o755)
    return Settings.model_validate(
        {
            "root": str(tmp_path / "root"),
            "panda": settings_for(server).model_dump(mode="json"),
            "queues": {
                "serve": {
                    "LOCALQ": {
                        "ces": [{"flavour": "arc", "endpoint": "local1"}],
                        "truepilot": True,
                        "pilot_wrapper": str(wrapper),
                        "jobs_per_cycle": 2,
                    }
                }
            },
            "engine": {
                "ces": {"local1": {"backend": "local", "options": {"slots": 2}, "min_spacing": 0}},
                "poll": {"submitted": 0.2, "running": 0.2, "finishing": 0.2},
            },
        }
    )


def daemon(db: Database, settings: Settings, name: str) -> Context[Any]:
    """Daemon ``name``'s context, of whichever package (Any, as resolve's DaemonSpec)."""
    ctx = context(db, settings, name)
    return dataclasses.replace(ctx, options=resolve(name).options.model_validate({}))


def test_panda_jobs_run_on_a_local_ce_and_come_back(
    db: Database, server: PandaTestServer, tmp_path: Path
) -> None:
    ids = server.seed(2, queue="LOCALQ")
    settings = make_settings(tmp_path, server)
    names = (
        "panda_fetcher", "translator", "submitter", "poller", "ce_fetcher", "app_status",
        "validator",
    )  # fmt: skip
    ctx = {name: daemon(db, settings, name) for name in (*names, "cleaner")}
    try:
        fetcher.run_once(ctx["panda_fetcher"])
        translator.run_once(ctx["translator"])
        submitter.run_once(ctx["submitter"])

        def over() -> bool:
            db.run(lambda c: c.execute(sa.update(ce_jobs).values(next_check_at=None)))
            poller.run_once(ctx["poller"])
            ce_fetcher.run_once(ctx["ce_fetcher"])
            app_status.run_once(ctx["app_status"])
            validator.run_once(ctx["validator"])  # truepilot: logs published, then done
            app_status.run_once(ctx["app_status"])
            with db.read() as conn:
                states = conn.execute(sa.select(panda_jobs.c.state)).scalars().all()
            return sorted(states) == ["done", "done"]

        wait_for(over, 60, "both PanDA jobs done")
        with db.read() as conn:
            rows = conn.execute(sa.select(ce_jobs).order_by(ce_jobs.c.panda_id)).all()
            specs = dict(conn.execute(sa.select(panda_jobs.c.panda_id, panda_jobs.c.spec)).all())
        assert [r.panda_id for r in rows] == ids
        for row in rows:
            assert row.state == "toclean"
            # the pilot read every field of the job spec as PanDA sent it
            read = json.loads((Path(row.output_dir) / "heartbeat.json").read_text())
            assert read == as_read_by_the_pilot(specs[row.panda_id])
            log_file = json.loads(specs[row.panda_id])["logFile"]
            assert "-q LOCALQ" in (Path(row.output_dir) / log_file).read_text()
        cleaner.run_once(ctx["cleaner"])
        with db.read() as conn:
            assert conn.execute(sa.select(ce_jobs.c.state)).scalars().all() == ["cleaned"] * 2
        assert not any(Path(row.output_dir).exists() for row in rows)  # local copies removed
    finally:
        for c in ctx.values():
            pool(c).close()


def test_the_panda_daemons_are_registered_by_name() -> None:
    for name, module in (
        ("panda_fetcher", fetcher),
        ("translator", translator),
        ("app_status", app_status),
    ):
        spec = resolve(name)
        assert spec is module.DAEMON and spec.doc
