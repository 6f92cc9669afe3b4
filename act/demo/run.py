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
5. Progress (jobs per act state, and how many PanDA has the final report of) is shown until every
   job's final report was accepted by the test server and the job store holds every job in a
   final state, or ``--timeout`` passes (then the stuck jobs are named and the exit code is 1).
6. A summary, then actd gets SIGTERM (and its stop_timeout) and the test server stops. Ctrl-C at
   any time stops both too.

Where the template is found: ``etc/act-demo.yaml`` of the source tree (an editable install), else
``<sys.prefix>/share/act/etc/act-demo.yaml`` (installed there from the wheel by setup.cfg's
``data_files``), else the same under the user's data directory (``pip install --user``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from tabulate import tabulate

import act
from act.common import exitcodes, migrate
from act.common.config import ENV_CONFIG, ENV_DB_URL, ENV_ROOT
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs, processes
from act.common.states import P_FINAL, STATES, Layer, in_table_order
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
FINAL_STATES = tuple(str(state) for state in in_table_order(Layer.PANDA, P_FINAL))
#: act's PanDA-layer states in pipeline order (for the progress line).
PANDA_ORDER = tuple(str(state) for state in STATES[Layer.PANDA])
#: A demo directory must be spelled with these (it goes into YAML and shell words unquoted).
SAFE_DIR = re.compile(r"[A-Za-z0-9_./+@:=,-]+")
TICK = 0.5
PLAIN_EVERY = 5.0


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


@dataclass
class Outcome:
    """What a run ended with (for the summary and the tests)."""

    ok: bool
    wall: float
    pandaids: list[int]


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


# -- progress ----------------------------------------------------------------------------------


@dataclass
class Snapshot:
    panda: Counter[str]
    ce: Counter[str]
    reported: int
    jobs: int
    daemons_up: int = 0
    daemons: int = 0

    def finished(self) -> bool:
        in_final = sum(self.panda[state] for state in FINAL_STATES)
        return self.reported >= self.jobs and in_final >= self.jobs

    def line(self, elapsed: float) -> str:
        act_part = " ".join(f"{s} {self.panda[s]}" for s in PANDA_ORDER if self.panda[s])
        ce_part = " ".join(f"{s} {n}" for s, n in sorted(self.ce.items()))
        starting = (
            f"daemons up {self.daemons_up}/{self.daemons} | "
            if self.daemons_up < self.daemons
            else ""
        )
        return (
            f"[{elapsed:5.1f}s] {starting}reported to PanDA: {self.reported}/{self.jobs} | "
            f"act: {act_part or '-'} | CE: {ce_part or '-'}"
        )


def _counts(conn: sa.Connection, column: sa.Column[Any]) -> Counter[str]:
    rows = conn.execute(sa.select(column, sa.func.count()).group_by(column)).all()
    return Counter({str(state): int(count) for state, count in rows})


def snapshot(
    db: Database, server: PandaTestServer, ids: Sequence[int], daemons: int = 0
) -> Snapshot:
    """Jobs per state in the job store, final reports at the test server, daemons running (a
    liveness row, not stopped)."""
    with db.read() as conn:
        panda = _counts(conn, panda_jobs.c.state)
        ce = _counts(conn, ce_jobs.c.state)
        up = conn.execute(
            sa.select(sa.func.count()).where(processes.c.stopped_at.is_(None))
        ).scalar_one()
    reported = sum(1 for pandaid in ids if server.final_state(pandaid) is not None)
    return Snapshot(panda, ce, reported, len(ids), int(up), daemons)


class Display:
    """One progress line: redrawn in place on a terminal, printed every few seconds otherwise."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last_plain = -PLAIN_EVERY
        self.drawn = False

    def show(self, text: str, elapsed: float, *, force: bool = False) -> None:
        if self.tty:
            width = shutil.get_terminal_size((120, 20)).columns - 1
            self.stream.write("\r\x1b[K" + text[:width])
            self.drawn = True
        elif force or elapsed - self.last_plain >= PLAIN_EVERY:
            self.stream.write(text + "\n")
            self.last_plain = elapsed
        self.stream.flush()

    def end(self) -> None:
        if self.tty and self.drawn:
            self.stream.write("\n")
            self.stream.flush()
            self.drawn = False


# -- summary -----------------------------------------------------------------------------------


def job_rows(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(
            conn.execute(
                sa.select(
                    panda_jobs.c.panda_id,
                    panda_jobs.c.state,
                    panda_jobs.c.log_url,
                    panda_jobs.c.error_code,
                    panda_jobs.c.error_text,
                ).order_by(panda_jobs.c.panda_id)
            )
        )


def url_path(url: str | None) -> Path | None:
    if not url or not url.startswith("file://"):
        return None
    return Path(unquote(urlsplit(url).path))


def _told(server: PandaTestServer, pandaid: int) -> str:
    return server.final_state(pandaid) or "no final report"


def summary(
    outcome: Outcome,
    rows: Sequence[Any],
    *,
    settings: Settings,
    directory: Path,
    config: Path,
    server: PandaTestServer,
) -> str:
    lines: list[str] = []
    by_state: dict[str, list[Any]] = {}
    for row in rows:
        by_state.setdefault(row.state, []).append(row)
    table = []
    for state in sorted(by_state, key=lambda s: PANDA_ORDER.index(s) if s in PANDA_ORDER else 99):
        told = Counter(_told(server, r.panda_id) for r in by_state[state])
        codes = Counter(r.error_code for r in by_state[state] if r.error_code)
        told_text = ", ".join(f"{k} {n}" for k, n in sorted(told.items()))
        code_text = ", ".join(f"{k} x{n}" for k, n in sorted(codes.items())) or "-"
        table.append([state, len(by_state[state]), told_text, code_text])
    missing = len(outcome.pandaids) - len(rows)
    if missing > 0:
        table.append(["(not fetched)", missing, "-", "-"])
    rate = len(outcome.pandaids) / outcome.wall * 60 if outcome.wall > 0 else 0.0
    verdict = "all jobs reported" if outcome.ok else "NOT all jobs reported (timeout)"
    lines.append(
        f"act demo: {len(outcome.pandaids)} jobs, {verdict} in {outcome.wall:.1f} s "
        f"({rate:.0f} jobs/min)"
    )
    lines.append("")
    lines.append(
        tabulate(
            table,
            headers=["act state", "jobs", "PanDA test server recorded", "error codes"],
            tablefmt="simple",
        )
    )
    web = Path(settings.weblogs.dir or Path(settings.root) / "weblogs")
    lines += ["", f"web area (pilot logs, as the PanDA monitor links them): {web}"]
    examples = [r for r in rows if r.log_url][:3]
    for row in examples:
        path = url_path(row.log_url)
        there = "" if path is None or path.is_file() else "  (not published)"
        lines.append(f"  {row.panda_id}: {row.log_url}{there}")
    if examples:
        day_dir = url_path(examples[0].log_url)
        if day_dir is not None:
            lines.append(f"  all of them: ls {day_dir.parent}")
    lines += [
        f"outputs on storage (file://):           {directory / 'storage'}",
        f"daemon logs:                            {settings.log_dir}",
        f"config:                                 {config}",
        f"inspect:  actctl --config {config} status",
        f"          actctl --config {config} jobs --state donefailed",
    ]
    if rows:
        lines.append(f"          actctl --config {config} job {rows[0].panda_id}")
    if not outcome.ok:
        stuck = [
            r for r in rows if r.state not in FINAL_STATES or not server.final_state(r.panda_id)
        ]
        lines += ["", "stuck jobs (PandaID: act state, PanDA's record):"]
        for row in stuck[:20]:
            lines.append(f"  {row.panda_id}: {row.state}, {_told(server, row.panda_id)}")
        if len(stuck) > 20:
            lines.append(f"  ... and {len(stuck) - 20} more")
        lines.append(f"look at the daemon logs in {settings.log_dir}")
    return "\n".join(lines)


def write_record(
    path: Path, outcome: Outcome, rows: Sequence[Any], server: PandaTestServer
) -> None:
    """``<dir>/summary.json``: the run, and per job act's final state next to what the PanDA
    test server recorded (final state, number of final reports, pilot error code)."""
    act_rows = {row.panda_id: row for row in rows}
    jobs = {}
    for pandaid in outcome.pandaids:
        row = act_rows.get(pandaid)
        told = server.last_fields(pandaid)
        jobs[str(pandaid)] = {
            "act_state": row.state if row else None,
            "error_code": row.error_code if row else None,
            "log_url": row.log_url if row else None,
            "panda_final_state": server.final_state(pandaid),
            "panda_final_reports": server.final_reports(pandaid),
            "panda_pilot_error_code": told.get("pilot_error_code", told.get("pilotErrorCode")),
        }
    record = {"ok": outcome.ok, "wall_seconds": round(outcome.wall, 3), "jobs": jobs}
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")


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
