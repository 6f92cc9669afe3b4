"""make_backend: a back end act knows by name but cannot load is a clear error, not a traceback."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from act.engine import backend as backend_module
from act.engine.backend import BackendNotAvailable, make_backend
from act.service.settings import Settings

LOG = logging.getLogger("act.test")


def test_a_backend_whose_module_is_missing_is_named_as_not_available(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A name act knows (engine.ces.*.backend) whose module is not in this installation.
    monkeypatch.setitem(backend_module.BACKENDS, "ghost", "act.ghost.backend:GhostBackend")
    with pytest.raises(BackendNotAvailable) as raised:
        make_backend("ghost", settings=Settings(root=str(tmp_path)), db=None, log=LOG)
    message = str(raised.value)
    assert "'ghost'" in message and "not available" in message
    assert "act.ghost.backend" in message
    assert isinstance(raised.value, LookupError)


def test_the_condor_backend_is_registered(tmp_path: Path) -> None:
    from act.condor.backend import CondorBackend

    made = make_backend("condor", settings=Settings(root=str(tmp_path)), db=None, log=LOG)
    assert isinstance(made, CondorBackend)


def test_a_missing_dependency_of_the_backend_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "needs_lib_backend.py").write_text(
        "import act_no_such_library_xyz\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(backend_module.BACKENDS, "needy", "needs_lib_backend:Backend")
    with pytest.raises(BackendNotAvailable, match=r"'needy'.*act_no_such_library_xyz"):
        make_backend("needy", settings=Settings(root=str(tmp_path)), db=None, log=LOG)


def test_a_module_without_the_named_class_is_not_available(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(backend_module.BACKENDS, "hollow", "act.condor:CondorBackend")
    with pytest.raises(BackendNotAvailable, match=r"'hollow'.*no CondorBackend"):
        make_backend("hollow", settings=Settings(root=str(tmp_path)), db=None, log=LOG)


def test_an_unknown_name_is_still_a_lookup_error(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match="unknown CE back end 'nope'"):
        make_backend("nope", settings=Settings(root=str(tmp_path)), db=None, log=LOG)
