"""The layer contract of ``pyproject.toml`` ([tool.importlinter]), as ``make check`` runs it.

The tree must keep it, and the contract must be able to fail: an upward import and an import
cycle, each added to a copy of the package, break it with a message naming the import.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the package ``act`` found first under ``root`` (PYTHONPATH comes before
    the editable install's finder), with the contract of ``root/pyproject.toml``."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "act", tmp_path / "act", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _add_line(module: Path, line: str) -> None:
    text = module.read_text(encoding="utf-8")
    marker = "from __future__ import annotations\n"
    assert marker in text
    module.write_text(text.replace(marker, f"{marker}\n{line}\n", 1), encoding="utf-8")


def test_the_tree_keeps_the_layer_contract() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_the_copy_is_what_is_checked(tmp_path: Path) -> None:
    """The copy analysed is the copy, not the installed package: a module only it has is seen."""
    root = _copy(tmp_path)
    (root / "act" / "common" / "only_in_the_copy.py").write_text(
        "from act.atlas import queues  # noqa: F401\n", encoding="utf-8"
    )
    result = _lint(root)
    assert "act.common.only_in_the_copy -> act.atlas.queues" in result.stdout, result.stdout


def test_an_upward_import_breaks_it(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _add_line(root / "act" / "common" / "states.py", "import act.engine.settings  # noqa: F401")
    result = _lint(root)
    assert result.returncode != 0
    assert "act's layers, top to bottom BROKEN" in result.stdout, result.stdout
    assert "act.common is not allowed to import act.engine" in result.stdout
    assert "act.common.states -> act.engine.settings" in result.stdout


def test_a_back_end_importing_another_breaks_it(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    _add_line(root / "act" / "arc" / "xrsl.py", "import act.condor.submission  # noqa: F401")
    result = _lint(root)
    assert result.returncode != 0
    assert "act.arc is not allowed to import act.condor" in result.stdout, result.stdout


def test_an_import_cycle_inside_a_package_breaks_it(tmp_path: Path) -> None:
    """act.common.daemon imports act.common.db; db importing daemon back (even for types only)
    is a cycle between two modules of one layer, which the layers contract cannot see."""
    root = _copy(tmp_path)
    _add_line(
        root / "act" / "common" / "db.py",
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    import act.common.daemon",
    )
    result = _lint(root)
    assert result.returncode != 0
    assert "act's layers, top to bottom KEPT" in result.stdout, result.stdout
    assert "no import cycles, between the modules of any package BROKEN" in result.stdout
    assert "No cycles are allowed in act.common." in result.stdout
