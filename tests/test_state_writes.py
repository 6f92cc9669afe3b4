"""Only act/common/transitions.py writes a state column: checked over the whole package."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ACT = Path(__file__).resolve().parent.parent / "act"
ALLOWED = {ACT / "common" / "transitions.py"}
STATE_COLUMNS = {"state", "state_changed_at"}
RAW_WRITE = re.compile(r"\b(UPDATE|INSERT)\b.*\bstate\b", re.IGNORECASE | re.DOTALL)


def _writes_state(node: ast.Call) -> bool:
    if not (isinstance(node.func, ast.Attribute) and node.func.attr in {"values", "update"}):
        return False
    keys = {kw.arg for kw in node.keywords}
    for arg in node.args:
        if isinstance(arg, ast.Dict):
            keys |= {
                k.value
                for k in arg.keys
                if isinstance(k, ast.Constant) and isinstance(k.value, str)
            }
    return bool(keys & STATE_COLUMNS)


def offenders(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if path in ALLOWED or "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _writes_state(node):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno}")
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and RAW_WRITE.search(node.value)
            ):
                found.append(f"{path.relative_to(root.parent)}:{node.lineno} (raw SQL)")
    return found


def test_no_module_but_transitions_writes_a_state_column() -> None:
    assert offenders(ACT) == []


def test_the_check_catches_a_state_write(tmp_path: Path) -> None:
    package = tmp_path / "act"
    package.mkdir()
    (package / "sneaky.py").write_text(
        "def f(t, conn):\n"
        "    conn.execute(t.update().values(state='running'))\n"
        "    conn.execute(t.update().values({'state_changed_at': 1}))\n"
        "    conn.exec_driver_sql('UPDATE ce_jobs SET state = %s')\n"
        "    conn.execute(t.update().values(error_text='fine'))\n"
    )
    assert offenders(package) == ["act/sneaky.py:2", "act/sneaky.py:3", "act/sneaky.py:4 (raw SQL)"]
