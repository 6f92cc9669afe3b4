"""``actctl demo``: the whole pipeline on the embedded default, in one command.

1. A demo directory is (re)made: it holds a marker file (:data:`MARKER`), and only a directory with
   that marker (or an empty one) is ever wiped.
2. The PanDA TEST DOUBLE (:class:`act.testing.panda.PandaTestServer`) starts in this
   process, on a free loopback port, over HTTPS with a throw-away CA whose proxy is act's
   production credential; it holds ``--jobs`` jobs for the queue DEMO_QUEUE.
3. ``etc/act-demo.yaml`` is rendered to ``<dir>/act.yaml`` (placeholders filled in) and validated
   like any config; the SQLite schema is created (``actctl db upgrade``).
4. The real supervisor runs as a subprocess: ``python -m act.service.actd --config
   <dir>/act.yaml``, i.e. ``actd`` with its daemons, exactly as in production.
5. Progress (jobs per act state, and how many PanDA has the final report of:
   :mod:`act.demo.progress`) is shown until every job's final report was accepted by the test
   server and the job store holds every job in a final state, or ``--timeout`` passes (then the
   stuck jobs are named and the exit code is 1).
6. A summary (:mod:`act.demo.summary`), then actd gets SIGTERM (and its stop_timeout) and the
   test server stops. Ctrl-C at any time stops both too.

Where the template is found: ``etc/act-demo.yaml`` of the source tree (an editable install), else
``<sys.prefix>/share/act/etc/act-demo.yaml`` (installed there from the wheel by setup.cfg's
``data_files``), else the same under the user's data directory (``pip install --user``).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import act
from act.common import exitcodes, migrate
from act.common.config import ENV_CONFIG, ENV_DB_URL, ENV_ROOT
from act.common.db import Database
from act.demo.progress import Display, snapshot
from act.demo.summary import Outcome, job_rows, summary, write_record
from act.engine.backend import CE
from act.local import jobfiles as jf
from act.local.backend import LocalBackend
from act.service.settings import Settings, load_settings
from act.testing.panda import PandaTestServer, TestCA

QUEUE = "DEMO_QUEUE"
TEMPLATE = "act-demo.yaml"
MARKER = ".act-demo"
RECORD = "summary.json"
PLACEHOLDERS = ("@DEMO_DIR@", "@PANDA_URL@", "@DEMO_PILOT@")
#: A demo directory must be spelled with these (it goes into YAML and shell words unquoted).
SAFE_DIR = re.compile(r"[A-Za-z0-9_./+@:=,-]+")
TICK = 0.5


class DemoError(RuntimeError):
    """The demo cannot run (bad directory, missing template, actd failed...)."""


@dataclass(frozen=True)
class Options:
    jobs: int = 100
    directory: Path | None = None
    timeout: float = 300.0
    failures: float = 0.0
    keep: bool = False
    sleep: str = "0.5-3"


def default_dir() -> Path:
    """``$ACT_ROOT/demo``, else ``$XDG_STATE_HOME/act/demo`` (``~/.local/state/act/demo``)."""
    if os.environ.get(ENV_ROOT):
        return Path(os.environ[ENV_ROOT]) / "demo"
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(state) / "act" / "demo"


def template_path() -> Path:
    """etc/act-demo.yaml of the source tree, else the copy installed under share/act/etc."""
    installed = Path("share", "act", "etc", TEMPLATE)
    user_data = sysconfig.get_path("data", sysconfig.get_preferred_scheme("user"))
    candidates = [
        Path(act.__file__).resolve().parents[1] / "etc" / TEMPLATE,
        Path(sys.prefix) / installed,
        Path(user_data) / installed,  # pip install --user: ~/.local/share/act/etc
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise DemoError("demo config not found; looked at " + ", ".join(map(str, candidates)))


def render(template: str, values: dict[str, str]) -> str:
    """The template with every placeholder replaced; DemoError if one is left unfilled."""
    text = template
    for name, value in values.items():
        text = text.replace(name, value)
    left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
    if left:
        raise DemoError(f"placeholders without a value: {', '.join(left)}")
    return text


def prepare_dir(directory: Path) -> Path:
    """An empty demo directory with its marker; an old demo directory is wiped first. Refuses a
    non-empty directory that is not a demo directory, and paths that are not plain words."""
    directory = directory.expanduser().absolute()
    if not SAFE_DIR.fullmatch(str(directory)):
        raise DemoError(
            f"{directory}: use a directory path of letters, digits and ._/+@:=,- only "
            "(it is written into the config and the pilot's arguments)"
        )
    if directory.is_symlink() or (directory.exists() and not directory.is_dir()):
        raise DemoError(f"{directory} is not a directory")
    if directory.exists() and any(directory.iterdir()):
        if not (directory / MARKER).is_file():
            raise DemoError(
                f"{directory} is not empty and not a demo directory (no {MARKER} in it): "
                "refusing to wipe it; choose another --dir"
            )
        _refuse_if_running(directory)
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("made by actctl demo; wiped by the next run\n")
    for sub in ("panda", "bin", "storage", "weblogs", "log", "state"):
        (directory / sub).mkdir(mode=0o755, exist_ok=True)
    return directory


def _refuse_if_running(directory: Path) -> None:
    """DemoError if an actd still runs on this demo directory (it holds its lock)."""
    lock = directory / "state" / "run" / "actd.lock"
    if not lock.is_file():
        return
    with open(lock, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise DemoError(
                f"an actd (pid {holder}) still runs on {directory}: stop that demo first "
                "(Ctrl-C), or choose another --dir"
            ) from None


def pilot_module() -> Path:
    return Path(__file__).resolve().with_name("pilot.py")


def write_pilot_wrapper(directory: Path, failures: float, sleep: str) -> Path:
    """``<dir>/bin/demo-pilot``: runs the demo pilot with this Python (the local CE runs the
    queue's pilot_wrapper as a command with the pilot's arguments)."""
    wrapper = directory / "bin" / "demo-pilot"
    command = [sys.executable, "-I", "-S", str(pilot_module()), "--fail-fraction", str(failures)]
    command += ["--sleep", sleep]
    wrapper.write_text(
        "#!/bin/sh\n# act's demo pilot (act/demo/pilot.py), written by actctl demo\n"
        f'exec {shlex.join(command)} "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def write_config(directory: Path, panda_url: str, pilot: Path) -> tuple[Path, Settings]:
    """``<dir>/act.yaml`` from the template; validated as actd will (ConfigError if not)."""
    text = render(
        template_path().read_text(encoding="utf-8"),
        {"@DEMO_DIR@": str(directory), "@PANDA_URL@": panda_url, "@DEMO_PILOT@": str(pilot)},
    )
    path = directory / "act.yaml"
    path.write_text(text, encoding="utf-8")
    return path, load_settings(path)


def start_panda(directory: Path, jobs: int) -> tuple[PandaTestServer, list[int]]:
    """The PanDA TEST DOUBLE over HTTPS, its CA and act's proxy in <dir>/panda, seeded."""
    ca = TestCA(directory / "panda", name="act demo CA (throw-away)")
    ca.proxy(directory / "panda" / "proxy", cn="act-demo")
    server = PandaTestServer(tls=True, ca=ca)
    server.record_requests = False  # the per-job record (states, final reports) is kept
    ids = server.seed(jobs, queue=QUEUE)
    server.start()
    return server, ids


def child_env() -> dict[str, str]:
    """actd's environment: this act importable first; nothing overriding the demo config."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_CONFIG, ENV_DB_URL, ENV_ROOT)}
    source = str(Path(act.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
    return env


def start_actd(config: Path, directory: Path) -> subprocess.Popen[bytes]:
    console = open(directory / "log" / "actd.console", "ab")  # noqa: SIM115 - handed to actd
    with console:
        return subprocess.Popen(
            [sys.executable, "-m", "act.service.actd", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=child_env(),
            start_new_session=True,  # Ctrl-C reaches us; we stop actd ourselves
        )


def stop_actd(proc: subprocess.Popen[bytes], settings: Settings) -> int | None:
    """SIGTERM, wait stop_timeout (+ a margin), then SIGKILL; actd's exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=settings.supervisor.stop_timeout + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def stop_local_jobs(settings: Settings) -> int:
    """Kill the local CE jobs still running once actd stopped (after a timeout or Ctrl-C): the
    demo leaves no process behind. How many were killed."""
    backend = LocalBackend(settings=settings, db=None, log=logging.getLogger("act.demo"))
    killed = 0
    for name, ce_settings in settings.engine.ces.items():
        if ce_settings.backend != "local":
            continue
        ce = CE(name, ce_settings)
        jobs = backend.workdir(ce) / jf.JOBS
        ids = sorted(p.name for p in jobs.iterdir()) if jobs.is_dir() else []
        running = [
            job_id
            for job_id in ids
            if jf.JOB_ID.fullmatch(job_id)
            and (jf.read_json(jobs / job_id / jf.STATE) or {}).get("state") not in jf.ENDED
        ]
        if running:
            backend.kill(ce, running)
            killed += len(running)
    return killed


# -- the command -------------------------------------------------------------------------------


def run(
    options: Options, out: IO[str] | None = None, *, clock: Callable[[], float] = time.monotonic
) -> int:
    """Run the demo; the exit code (0: every job reported, 1: timeout or actd failed)."""
    out = out if out is not None else sys.stdout
    directory = prepare_dir(options.directory or default_dir())
    server: PandaTestServer | None = None
    proc: subprocess.Popen[bytes] | None = None
    settings: Settings | None = None
    db: Database | None = None
    display = Display(out)
    try:
        server, ids = start_panda(directory, options.jobs)
        pilot = write_pilot_wrapper(directory, options.failures, options.sleep)
        config, settings = write_config(directory, server.url, pilot)
        db = Database(settings.db_url(), pool_size=1, busy_timeout=settings.db.busy_timeout)
        migrate.upgrade(db)
        print(f"act demo in {directory}", file=out)
        print(f"PanDA TEST DOUBLE at {server.url}: {len(ids)} jobs for {QUEUE}", file=out)
        print(f"starting actd --config {config}", file=out, flush=True)
        expected_daemons = sum(d.instances for d in settings.daemons.values() if d.enabled)
        start = clock()
        proc = start_actd(config, directory)
        ok = False
        while True:
            elapsed = clock() - start
            now = snapshot(db, server, ids, expected_daemons)
            if now.finished():
                display.show(now.line(elapsed), elapsed, force=True)
                ok = True
                break
            if proc.poll() is not None:
                display.end()
                raise DemoError(
                    f"actd exited with code {proc.returncode}; see {settings.log_dir}/actd.log "
                    f"and {directory / 'log' / 'actd.console'}"
                )
            if elapsed > options.timeout:
                display.show(now.line(elapsed), elapsed, force=True)
                break
            display.show(now.line(elapsed), elapsed)
            time.sleep(TICK)
        wall = clock() - start
        display.end()
        outcome = Outcome(ok, wall, ids)
        print("", file=out)
        rows = job_rows(db)
        write_record(directory / RECORD, outcome, rows, server)
        print(
            summary(
                outcome, rows, settings=settings, directory=directory, config=config, server=server
            ),
            file=out,
        )
        if options.keep:
            print(
                "\n--keep: actd and the PanDA test server keep running; Ctrl-C stops both",
                file=out,
                flush=True,
            )
            with contextlib.suppress(KeyboardInterrupt):
                while proc.poll() is None:
                    time.sleep(1)
        return exitcodes.OK if ok else exitcodes.FAILURE
    except KeyboardInterrupt:
        display.end()
        print("interrupted: stopping actd and the PanDA test server", file=out, flush=True)
        return 130
    finally:
        previous = None
        with contextlib.suppress(ValueError):  # not the main thread: no signal handling
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a 2nd Ctrl-C: stop anyway
        if db is not None:
            db.dispose()
        if proc is not None and settings is not None:
            code = stop_actd(proc, settings)
            if code not in (0, None):
                print(f"actd exited with code {code}", file=out)
        if settings is not None:
            killed = stop_local_jobs(settings)
            if killed:
                print(f"killed {killed} demo job(s) still running on the local CE", file=out)
        if server is not None:
            server.stop()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
