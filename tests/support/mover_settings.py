"""The settings of a test act with one daemon, the ``mover`` test worker
(tests.support.workers.MOVER), on the database at ``url``: what the daemon-loop and the
database-fault tests run."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import URL

from act.service.settings import Settings


def mover_settings(url: URL, tmp_path: Path, **daemon: object) -> Settings:
    return Settings.model_validate(
        {
            "root": str(tmp_path),
            "db": {"url": url.render_as_string(hide_password=False)},
            "liveness": {"heartbeat_interval": 0.05, "dead_after": 1.0},
            "daemons": {"mover": {"entry": "tests.support.workers:MOVER", **daemon}},
        }
    )
