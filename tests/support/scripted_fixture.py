"""The ``script`` fixture: the scripted CE back end (a TEST DOUBLE) installed for one test.

A pytest plugin of tests/conftest.py, so every test module can ask for ``script``; kept apart
from tests/support/scripted_backend.py, which child processes import without pytest's machinery.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.scripted_backend import Script, install


@pytest.fixture
def script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Script:
    """The double registered as back end ``scripted``, its state in ``tmp_path/scripted.json``."""
    return install(monkeypatch, tmp_path / "scripted.json")
