"""act's daemons on one database, driven round by round against the real PanDA server of
tests/harness/panda-server (``bridge_for`` fixture), and the stand-in pilots they run on the local
CE back end."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from act.atlas.panda_settings import PandaServerSettings
from act.common.daemon import Context
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs
from act.common.states import Actor, Layer
from act.common.transitions import transition
from act.engine.runtime import pool
from act.service.daemons import resolve
from act.service.settings import Settings
from tests.support.follow import context
from tests.support.panda_real import PandaServer

NODE = "act-integration.test"
LOCAL_CE = "local1"


def panda_settings(server: PandaServer, **values: Any) -> PandaServerSettings:
    """act's ``panda:`` section for the real server: its CA, the pilot proxy as production."""
    data: dict[str, Any] = {
        "url": server.url,
        "ca": str(server.ca),
        "backoff": 0.0,
        "retries": 0,
        "roles": {"production": {"proxy": str(server.pilot_proxy)}},
    }
    data.update(values)
    return PandaServerSettings.model_validate(data)


def api_log_updates(server: PandaServer, panda_id: int) -> list[str]:
    """The state of every update of ``panda_id`` the server received, in order, from its own
    record of the calls (``panda-api_pilot.log``: one line per job of a bulk call)."""
    log = server.home / "log" / "panda-api_pilot.log"
    return re.findall(rf"update_job\({panda_id}, (\w+),", log.read_text())


#: A stand-in pilot (a TEST DOUBLE, not pilot3): reads ``pandaJobData.out`` as pilot3 reads it
#: (``parse_qsl`` of the legacy getJob form; the Harvester layout ``{PandaID: job}`` when the file
#: is JSON: tests/test_jobfile.py holds act's files against pilot3's own reader), leaves the job it
#: read as its heartbeat and its arguments as the log file.
FINISHING_PILOT = f"""#!{sys.executable} -I
import json, sys, urllib.parse
text = open("pandaJobData.out", encoding="utf-8").read()
if text.lstrip().startswith("{{"):
    (job,) = json.loads(text).values()
else:
    job = dict(urllib.parse.parse_qsl(text, keep_blank_values=True))
with open("heartbeat.json", "w", encoding="utf-8") as out:
    json.dump(job, out)
with open(job["logFile"], "w", encoding="utf-8") as out:
    out.write(" ".join(sys.argv[1:]) + "\\n")
"""


def as_read_by_the_pilot(spec_text: str) -> dict[str, str]:
    """A stored /api/v1 JSON spec as the pilot reads it from act's job file (normal mode): every
    value as the legacy getJob reply carries it."""
    spec = json.loads(spec_text)
    return {key: value if isinstance(value, str) else str(value) for key, value in spec.items()}


SLEEPING_PILOT = "#!/bin/sh\nexec sleep 300\n"


def bridge_config(
    tmp_path: Path,
    server: PandaServer,
    queue: str,
    *,
    pilot: str = FINISHING_PILOT,
    truepilot: bool = False,
) -> dict[str, Any]:
    """act's configuration serving ``queue`` of the real server with one local CE (native
    jobs unless ``truepilot``)."""
    wrapper = tmp_path / "pilot.sh"
    wrapper.write_text(pilot)
    wrapper.chmod(0o755)
    return {
        "root": str(tmp_path / "root"),
        "panda": panda_settings(server).model_dump(mode="json", exclude_defaults=True),
        "queues": {
            "serve": {
                queue: {
                    "ces": [{"flavour": "arc", "endpoint": LOCAL_CE}],
                    "pilot_wrapper": str(wrapper),
                    "truepilot": truepilot,
                    "jobs_per_cycle": 10,
                }
            }
        },
        "engine": {
            "ces": {LOCAL_CE: {"backend": "local", "options": {"slots": 2}, "min_spacing": 0}},
            "poll": {"submitted": 0.2, "running": 0.2, "finishing": 0.2, "cancelling": 0.2},
        },
    }


class Bridge:
    """act's daemons on one database, each called once per ``run(name)`` as ``--once`` would."""

    def __init__(self, db: Database, config: dict[str, Any]) -> None:
        self.db = db
        self.settings = Settings.model_validate(config)
        #: Contexts by daemon name, for whichever package's daemon has the name: typed as
        #: act.service.daemons.resolve types the DaemonSpec it finds by name (Any).
        self.contexts: dict[str, Context[Any]] = {}
        #: Daemon options by daemon name, as under ``daemons.<name>.options``.
        self.options: dict[str, dict[str, Any]] = {"panda_fetcher": {"node": NODE}}

    def ctx(self, name: str) -> Context[Any]:
        if name not in self.contexts:
            options = self.options.get(name, {})
            base = context(self.db, self.settings, name)
            self.contexts[name] = dataclasses.replace(
                base, options=resolve(name).options.model_validate(options)
            )
        return self.contexts[name]

    def run(self, *names: str) -> None:
        for name in names:
            resolve(name).run_once(self.ctx(name))

    def follow_ce(self, *, validate: bool = True) -> None:
        """One round of the engine daemons, every CE job due for a poll now, then app_status
        (and, with ``validate``, the validator and app_status again for its decisions)."""
        self.db.run(lambda c: c.execute(sa.update(ce_jobs).values(next_check_at=None)))
        self.run("poller", "ce_fetcher", "canceller", "app_status")
        if validate:
            self.run("validator", "app_status")

    def close(self) -> None:
        for ctx in self.contexts.values():
            pool(ctx).close()

    def job(self, panda_id: int) -> Any:
        with self.db.read() as conn:
            return conn.execute(
                sa.select(panda_jobs).where(panda_jobs.c.panda_id == panda_id)
            ).one()

    def ce_states(self, panda_id: int) -> list[str]:
        with self.db.read() as conn:
            return list(
                conn.execute(
                    sa.select(ce_jobs.c.state)
                    .where(ce_jobs.c.panda_id == panda_id)
                    .order_by(ce_jobs.c.id)
                ).scalars()
            )

    def move(self, panda_id: int, to_state: str, actor: Actor, values: dict[str, Any]) -> None:
        """What another daemon (validator, translator...) would do: one PanDA-layer edge."""
        job = self.job(panda_id)
        moved = self.db.run(
            lambda conn: transition(
                conn, Layer.PANDA, [job.id], job.state, to_state, actor=actor, values=values
            )
        )
        assert moved == [job.id]


@pytest.fixture
def bridge_for(db: Database) -> Iterator[Any]:
    made: list[Bridge] = []

    def make(config: dict[str, Any]) -> Bridge:
        made.append(Bridge(db, config))
        return made[-1]

    yield make
    for bridge in made:
        bridge.close()
