"""Every state is spelled once: in act/common/states.py (PandaJobState, CEJobState).

Elsewhere in act/ a state is named by its enum member, so a renamed or removed state breaks at
import or in mypy instead of silently matching nothing. This scan fails on any string constant
in act/ equal to a state name of either layer, outside the state module and the migrations
(which describe the database as it was). Prose and log text pass: a sentence is not a constant
equal to a bare state name. The allow-list is for other vocabularies that share a word with act's
states; each entry says whose words they are.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from pathlib import Path

from act.atlas.panda_status import PandaCommand, PandaEventStatus, PandaServerStatus
from act.common.states import STATES, CEJobState, PandaJobState
from act.engine.backend import CEReportedState
from tests.support.procs import REPO

#: The state module itself; the migrations are a record of the past, not code to keep in step.
EXEMPT = ("act/common/states.py", "act/common/migrations/")

#: path -> (words allowed there, why). Keep it small: each entry is another vocabulary than act's.
ALLOWED: dict[str, tuple[frozenset[str], str]] = {
    "act/atlas/panda_status.py": (
        frozenset({"running", "transferring", "finished", "failed", "cancelled", "tobekilled"}),
        "the PanDA server's job statuses and commands, some spelled like act's states",
    ),
    "act/local/jobfiles.py": (
        frozenset({"queued", "running", "finishing", "finished", "failed", "lost"}),
        "the local CE's own job states in its job directories (standard library only; 'lost' is "
        "the state file's flag for a job the site lost); act.local.backend maps them to "
        "CEReportedState",
    ),
    "act/condor/ads.py": (
        frozenset({"running"}),
        "HTCondor's JobStatus names, kept as the job's raw CE state for operators",
    ),
    "act/arc/backend.py": (
        frozenset({"failed"}),
        "the name of A-REX's diagnose file of a failed job",
    ),
    "act/demo/pilot.py": (
        frozenset({"finished", "failed"}),
        "the demo pilot (standard library only) reports PanDA job statuses as a pilot does",
    ),
}


def state_names() -> frozenset[str]:
    return frozenset(str(state) for layer in STATES.values() for state in layer)


def bare_states(root: Path, names: frozenset[str]) -> Iterator[tuple[str, int, str]]:
    """(path relative to ``root``, line, word) of every string constant in root/act equal to one
    of ``names``, outside the exempt files."""
    for path in sorted((root / "act").rglob("*.py")):
        relative = path.relative_to(root).as_posix()
        if relative.startswith(EXEMPT):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=relative)
        yield from sorted(
            (relative, node.lineno, node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in names
        )


def test_the_vocabulary_is_the_two_enums() -> None:
    assert state_names() == {s.value for s in PandaJobState} | {s.value for s in CEJobState}


def test_members_read_and_write_as_their_values() -> None:
    """What drivers, JSON, log lines and metric labels see of a member is its database value."""
    for enum in (PandaJobState, CEJobState, PandaServerStatus, PandaCommand, PandaEventStatus):
        for member in enum:
            value = member.value
            assert member == value and hash(member) == hash(value)
            assert (str(member), f"{member}", f"{member:>1}") == (value, value, value)
            assert json.dumps({member: member}) == json.dumps({value: value})


def test_reported_states_are_ce_job_states() -> None:
    """The poller moves a CE job to the state its back end reports (or, on failure, decides)."""
    assert {s.value for s in CEReportedState} <= {s.value for s in CEJobState}


def test_no_state_literal_outside_the_state_module() -> None:
    found = list(bare_states(REPO, state_names()))
    stray = [
        f"{path}:{line}: {word!r}"
        for path, line, word in found
        if word not in ALLOWED.get(path, (frozenset(),))[0]
    ]
    assert not stray, (
        "state names spelled outside act/common/states.py: use PandaJobState/CEJobState members "
        "(or, for another vocabulary, its own enum):\n" + "\n".join(stray)
    )
    used = {(path, word) for path, _, word in found}
    stale = sorted(
        f"{path}: {word!r}"
        for path, (words, _) in ALLOWED.items()
        for word in words
        if (path, word) not in used
    )
    assert not stale, "allow-list entries no longer needed:\n" + "\n".join(stale)


def test_the_scan_catches_a_planted_literal(tmp_path: Path) -> None:
    (tmp_path / "act" / "common" / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "act" / "common" / "states.py").write_text('RUNNING = "running"\n')
    (tmp_path / "act" / "common" / "migrations" / "versions" / "0001.py").write_text(
        'STATE = "tosubmit"\n'
    )
    (tmp_path / "act" / "daemon.py").write_text(
        '"""Moves jobs to tobekilled when asked."""\n'
        "\n"
        "def stop(job):\n"
        '    log("job %s failed", job)  # prose passes\n'
        '    if job.state == "tobekilled":\n'
        "        return True\n"
        '    return {"queued": 1}\n'
    )
    found = list(bare_states(tmp_path, state_names()))
    assert found == [("act/daemon.py", 5, "tobekilled"), ("act/daemon.py", 7, "queued")]
