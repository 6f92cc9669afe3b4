"""The back ends are checked against the engine's Backend protocol by mypy, not at run time.

make_backend loads a back end by name (importlib and getattr), which no type checker follows.
Each back end module therefore declares ``backend_factory: BackendFactory = TheBackend``: mypy
(make check) checks that the class, built with the engine's keywords, is a Backend. These tests
hold every registered back end to that declaration, and show that mypy does refuse a back end
with a method missing or of another signature.
"""

from __future__ import annotations

import importlib
import textwrap
from pathlib import Path

import mypy.api
import pytest

from act.engine.backend import BACKENDS
from tests.conftest import REPO
from tests.support import scripted_backend


@pytest.mark.parametrize(
    "target", [*BACKENDS.values(), scripted_backend.TARGET], ids=[*BACKENDS, scripted_backend.NAME]
)
def test_every_back_end_declares_the_factory_mypy_checks(target: str) -> None:
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    assert module.backend_factory is getattr(module, attribute)
    assert module.__annotations__["backend_factory"] == "BackendFactory"


# One back end of every method, then the same with a method missing and with one that returns
# something else. Only the declarations of the broken ones may fail.
_METHODS = """
    def __init__(self, *, settings: EngineConfig, db: Database | None, log: logging.Logger) -> None:
        pass

    def limits(self, ce: CE) -> Limits:
        return Limits()

    def submit(self, ce: CE, jobs: Sequence[SubmitRequest]) -> list[Submitted]:
        return []

    def find(self, ce: CE, tokens: Sequence[str]) -> dict[str, str]:
        return {}

    def fetch(self, ce: CE, ce_job_id: str, dest: Path, *, failed: bool) -> Fetched:
        return Fetched(ce_job_id)

    def kill(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        return {}

    def clean(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        return {}

    def close(self) -> None:
        pass
"""
_STATUS = """
    def status(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, JobStatus | None]:
        return {}
"""
_RESTART = """
    def restart(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        return {}
"""
_BAD_STATUS = """
    def status(self, ce: CE, ce_job_ids: Sequence[str]) -> list[JobStatus]:
        return []
"""
_HEADER = """\
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from act.common.db import Database
from act.engine.backend import (
    CE, BackendFactory, Fetched, JobStatus, Limits, Outcome, SubmitRequest, Submitted,
)
from act.engine.config import EngineConfig
"""


def _module() -> tuple[str, dict[str, int]]:
    """The module's text and the line of each declaration."""
    text = _HEADER
    lines = {}
    for name, body in (
        ("Complete", _METHODS + _STATUS + _RESTART),
        ("NoRestart", _METHODS + _STATUS),
        ("StatusAList", _METHODS + _BAD_STATUS + _RESTART),
    ):
        text += f"\n\nclass {name}:\n" + textwrap.indent(textwrap.dedent(body), "    ")
        text += f"\n\n{name.lower()}_factory: BackendFactory = {name}\n"
        lines[name] = text.count("\n")
    return text, lines


def test_mypy_refuses_a_back_end_that_breaks_the_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, lines = _module()
    path = tmp_path / "protocol_probe.py"
    path.write_text(text)
    # act's own configuration and cache: after make check (CI runs it first) only the probe is
    # checked, in about a second; with no cache, mypy first reads act's imports (about 30 s)
    monkeypatch.chdir(REPO)
    report, errors, status = mypy.api.run(
        ["--config-file", str(REPO / "pyproject.toml"), "--no-error-summary", str(path)]
    )
    assert errors == ""
    # mypy may replay the probe's errors from its cache, under the path it had then
    at = [line.split(":") for line in report.splitlines() if ": error:" in line]
    refused = {int(where[1]) for where in at if Path(where[0]).name == path.name}
    assert status == 1, report
    assert refused == {lines["NoRestart"], lines["StatusAList"]}, report
