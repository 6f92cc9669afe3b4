from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from act.common.db import Database
from tests.support.dbs import BACKENDS, BackendUnavailable, fresh_database

REPO = Path(__file__).resolve().parent.parent

# panda_server, panda_queue: the real PanDA server of tests/harness/panda-server
# script: the scripted CE back end (a test double), tests/support/scripted_fixture.py
# bridge_for: act's daemons round by round against the real PanDA server, tests/support/bridge.py
# xrootd_server: the real XRootD storage element of tests/harness/xrootd-server
# pilot3: the real PanDA pilot of tests/harness/ensure-pilot3
pytest_plugins = [
    "tests.support.panda_real",
    "tests.support.scripted_fixture",
    "tests.support.bridge",
    "tests.support.xrootd_real",
    "tests.support.pilot3",
]


def _fresh(backend: str, tmp_path: Path, migrated: bool) -> Iterator[URL]:
    try:
        with fresh_database(backend, tmp_path, migrated=migrated) as url:
            yield url
    except BackendUnavailable as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, tmp_path: Path) -> Iterator[URL]:
    """A fresh database with act's schema, on each backend in turn."""
    yield from _fresh(backend, tmp_path, True)


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path) -> Iterator[URL]:
    """A fresh database without any schema."""
    yield from _fresh(backend, tmp_path, False)


@pytest.fixture
def db(db_url: URL) -> Iterator[Database]:
    database = Database(db_url)
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    """A fresh SQLite database with act's schema, for tests that need one backend only."""
    with fresh_database("sqlite", tmp_path) as url:
        database = Database(url)
        yield database
        database.dispose()


@pytest.fixture
def isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No config but the test's own: no $ACT_CONFIG, $ACT_DB_URL or /etc/act/act.yaml, and the
    state root in the test's directory (actctl tests use it with ``usefixtures``)."""
    from act.common import config

    monkeypatch.setenv("ACT_ROOT", str(tmp_path))
    monkeypatch.delenv("ACT_CONFIG", raising=False)
    monkeypatch.delenv("ACT_DB_URL", raising=False)
    monkeypatch.setattr(config, "SYSTEM_CONFIG", tmp_path / "no-system-config.yaml")
