"""The harness's pilot3 is the real one, and tests can call its code and its launcher."""

from __future__ import annotations

import subprocess

from tests.support.pilot3 import Pilot3


def test_the_installed_pilot_is_the_pinned_release(pilot3: Pilot3) -> None:
    assert (pilot3.src / "PILOTVERSION").read_text().strip() == pilot3.version
    found = pilot3.call(
        """
        import pilot, pilot.util.constants as c
        RESULT = [os.path.dirname(pilot.__file__), c.RELEASE, c.VERSION, c.REVISION, c.BUILD]
        """
    )
    assert found[0].startswith(str(pilot3.python.parent.parent))  # the venv's wheel, not a copy
    assert ".".join(str(part) for part in found[1:]) == pilot3.version


def test_a_snippet_gets_its_argument_and_a_failure_is_reported(pilot3: Pilot3) -> None:
    assert pilot3.call("RESULT = {'twice': ARG * 2}", 21) == {"twice": 42}
    try:
        pilot3.call("raise RuntimeError('boom from pilot3 side')")
    except AssertionError as error:
        assert "boom from pilot3 side" in str(error)
    else:
        raise AssertionError("a failing snippet passed")


def test_the_launcher_runs(pilot3: Pilot3) -> None:
    proc = subprocess.run(
        [str(pilot3.python), str(pilot3.launcher), "--help"],
        capture_output=True, text=True, timeout=60, check=False, cwd=pilot3.src,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "--resource-type" in proc.stdout
