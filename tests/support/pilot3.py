"""The real PanDA pilot (PyPI ``panda-pilot``, pilot3) for tests: ``tests/harness/ensure-pilot3``.

The pilot lives in a venv of its own (it is not a dependency of act). Tests reach it in two ways:

* :meth:`Pilot3.call` runs a snippet of Python in the pilot's interpreter, with pilot3's package
  importable, ``ARG`` bound to a JSON value from the test and ``PILOT_HOME`` set to a scratch
  directory; the snippet sets ``RESULT`` (any JSON value), which comes back to the test. So a
  test calls pilot3's own readers and writers (``get_job_definition_from_file``, ``JobData``,
  ``write_heartbeat_to_file``, ...) on the files act writes, instead of a copy of them;
* :attr:`Pilot3.launcher` is ``pilot.py`` from the same version's sdist, to run as a CE would.

The ``pilot3`` session fixture installs the pilot when it is missing (pip only, no root) and
fails, never skips, when it cannot; ``pilot3_release(version)`` gives another PyPI release, side
by side (``ensure-pilot3`` with ``ACT_PILOT3_VERSION``), e.g. :data:`OLDER_RELEASE`.
:func:`read_job_files` reads job files with pilot3's own reader, as the pilot would.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import textwrap
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
HARNESS = REPO / "tests" / "harness" / "ensure-pilot3"
#: An older PyPI release the job-file tests also read with (3.5's reader has no ``pod``).
OLDER_RELEASE = "3.5.1.4"

_PRELUDE = """\
import json, os, sys
ARG = json.loads(sys.stdin.read())
RESULT = None
"""
_EPILOGUE = """
sys.stdout.flush()
os.write(_RESULT_FD, json.dumps(RESULT, default=str).encode())
"""


class Pilot3Unavailable(RuntimeError):
    pass


@dataclass(frozen=True)
class Pilot3:
    """One installed pilot3 (from ``ensure-pilot3 env``)."""

    python: Path  # the venv's interpreter: `import pilot` works there
    src: Path  # the unpacked sdist: pilot.py, pilot/, PILOTVERSION
    version: str

    @property
    def launcher(self) -> Path:
        return self.src / "pilot.py"

    def call(
        self,
        code: str,
        arg: Any = None,
        *,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
        timeout: float = 120,
    ) -> Any:
        """Run ``code`` in the pilot's interpreter (see the module docstring); its ``RESULT``.

        ``cwd`` (default a new temporary directory) is also ``PILOT_HOME``. A snippet that
        raises fails the test with the pilot side's traceback.
        """
        with tempfile.TemporaryDirectory(prefix="act-pilot3-") as scratch:
            home = cwd or Path(scratch)
            read_fd, write_fd = os.pipe()
            script = _PRELUDE + f"_RESULT_FD = {write_fd}\n" + textwrap.dedent(code) + _EPILOGUE
            environment = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(home),
                "PILOT_HOME": str(home),
                "LC_ALL": "C.UTF-8",
                **(env or {}),
            }
            try:
                proc = subprocess.Popen(
                    [str(self.python), "-c", script],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    cwd=home,
                    env=environment,
                    pass_fds=(write_fd,),
                )
            finally:
                os.close(write_fd)
            # the result is read while the snippet runs: one larger than the pipe's buffer
            # (64 KiB) would block the snippet's write, and communicate() would wait forever
            with os.fdopen(read_fd, "rb") as result_pipe, ThreadPoolExecutor(1) as reader:
                pending = reader.submit(result_pipe.read)
                out, err = proc.communicate(json.dumps(arg).encode(), timeout=timeout)
                result = pending.result()
            if proc.returncode != 0 or not result:
                raise AssertionError(
                    f"pilot3 snippet failed (exit {proc.returncode}):\n"
                    f"{err.decode(errors='replace')[-4000:]}\n{out.decode(errors='replace')[-2000:]}"
                )
            return json.loads(result)


def find_pilot3(*, install: bool = True, version: str | None = None) -> Pilot3:
    """The installed pilot3 (the harness's default release, or ``version``); installs it first
    when ``install`` (pip only)."""
    command = [str(HARNESS)] if install else [str(HARNESS), "env"]
    environment = dict(os.environ)
    if version is not None:
        environment["ACT_PILOT3_VERSION"] = version
    proc = subprocess.run(
        command, capture_output=True, text=True, timeout=900, check=False, env=environment
    )
    if proc.returncode != 0:
        raise Pilot3Unavailable(
            f"{' '.join(command)} failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    values: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        values[key] = value.strip("'\"")
    return Pilot3(
        python=Path(values["ACT_PILOT3_PYTHON"]),
        src=Path(values["ACT_PILOT3_SRC"]),
        version=values["ACT_PILOT3_VERSION"],
    )


@pytest.fixture(scope="session")
def pilot3() -> Pilot3:
    """The real pilot3 (installed on first use); fails the test, never skips, if it cannot be."""
    try:
        return find_pilot3()
    except Pilot3Unavailable as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def pilot3_release(pilot3: Pilot3) -> Callable[[str], Pilot3]:
    """``pilot3_release("3.5.1.4")``: that PyPI release of pilot3, installed beside the default
    one on first use (fails the test, never skips, if it cannot be)."""
    found = {pilot3.version: pilot3}

    def release(version: str) -> Pilot3:
        if version not in found:
            try:
                found[version] = find_pilot3(version=version)
            except Pilot3Unavailable as error:
                pytest.fail(str(error), pytrace=False)
        return found[version]

    return release


#: Runs in pilot3's interpreter: each ARG item's bytes written as ``pandaJobData.out`` in the
#: pilot's launch directory, read by ``get_job_definition_from_file`` (the pilot's reader, in
#: Harvester mode or not; 3.5 takes no ``pod``), then ``JobData(...)`` and ``job.init(None)`` (no
#: CRIC: the files are built from the job alone) as the pilot builds its job.
_READ_JOB_FILES = """
import base64, inspect, logging
logging.basicConfig(level=logging.ERROR)
from pilot.control.job import get_job_definition_from_file
from pilot.info.jobdata import JobData

FILE_KEYS = ("lfn", "scope", "guid", "filesize", "checksum", "ddmendpoint", "dataset")
JOB_KEYS = ("jobid", "taskid", "attemptnr", "transformation", "jobparams", "corecount",
            "maxcpucount", "maxwalltime", "is_eventservice", "swrelease", "jobsetid",
            "produserid", "platform", "processingtype", "jobdefinitionid")
home = os.environ["PILOT_HOME"]
reader = inspect.signature(get_job_definition_from_file).parameters
RESULT = []
for item in ARG:
    path = os.path.join(home, "pandaJobData.out")
    with open(path, "wb") as out:
        out.write(base64.b64decode(item["data"]))
    flags = (item["harvester"], False) if "pod" in reader else (item["harvester"],)
    raw = get_job_definition_from_file(path, *flags)
    found = {"raw": dict(raw) if isinstance(raw, dict) else raw}
    if raw:
        job = JobData(dict(raw))
        found.update({key: getattr(job, key, None) for key in JOB_KEYS})
        try:
            job.init(None)
        except Exception as error:  # the pilot's own verdict on the job, reported to the test
            found["init_error"] = f"{type(error).__name__}: {error}"
        else:
            for name, files in (("in", job.indata), ("out", job.outdata), ("log", job.logdata)):
                found[name] = [{key: getattr(f, key, None) for key in FILE_KEYS} for f in files]
    RESULT.append(found)
"""


def read_job_files(
    pilot: Pilot3, files: Sequence[tuple[bytes, bool]], *, pilot_user: str = "ATLAS"
) -> list[dict[str, Any]]:
    """What pilot3 reads from each ``(file bytes, harvester mode)``: ``raw`` (the dict of
    ``get_job_definition_from_file``), the ``JobData`` fields (``jobid``, ``taskid``,
    ``attemptnr``, ``transformation``, ``jobparams``, ``corecount``, ``maxcpucount``,
    ``maxwalltime`` (None before 3.7), ...) and its ``in``/``out``/``log`` files (``lfn``,
    ``scope``, ``guid``, ``filesize``, ``checksum``, ``ddmendpoint``, ``dataset``), or
    ``init_error`` when pilot3's ``job.init`` refuses the job."""
    items = [
        {"data": base64.b64encode(data).decode(), "harvester": harvester}
        for data, harvester in files
    ]
    found: list[dict[str, Any]] = pilot.call(
        _READ_JOB_FILES, items, env={"PILOT_USER": pilot_user}, timeout=300
    )
    return found


_IS_HARVESTER_MODE = """
import argparse, importlib.util, sys
# pilot.py's own parser, tolerating the pilot wrapper's options (--piloturl, --mute, ...).
argparse.ArgumentParser.parse_args = (
    lambda self, args=None, namespace=None: self.parse_known_args(args, namespace)[0]
)
spec = importlib.util.spec_from_file_location("pilot_launcher", ARG["launcher"])
launcher = importlib.util.module_from_spec(spec)
spec.loader.exec_module(launcher)
from pilot.util.harvester import is_harvester_mode
RESULT = []
for arguments, environment in ARG["runs"]:
    for name in ("HARVESTER_ID", "HARVESTER_WORKER_ID"):
        os.environ.pop(name, None)
    os.environ.update(environment)
    sys.argv = ["pilot.py", *arguments]
    RESULT.append(is_harvester_mode(launcher.get_args()))
"""


def is_harvester_mode(
    pilot: Pilot3, runs: Sequence[tuple[Sequence[str], dict[str, str]]]
) -> list[bool]:
    """pilot3's own ``is_harvester_mode`` for each (arguments, environment): the arguments parsed
    by ``pilot.py``'s own parser (``get_args``), options it does not know (the pilot wrapper's)
    left aside."""
    found: list[bool] = pilot.call(
        _IS_HARVESTER_MODE,
        {"launcher": str(pilot.launcher), "runs": [[list(a), e] for a, e in runs]},
    )
    return found
