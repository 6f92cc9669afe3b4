"""Helpers for tests against the real PanDA server of ``tests/harness/panda-server``.

The server must be running (``make test`` starts it; by hand: ``sudo tests/harness/panda-server
start``). ``ACT_PANDA_START=1`` lets the ``panda_server`` fixture start it itself. A server that
is not running fails the tests that need it, with the command to start it; they are never skipped.

:class:`PandaServer` is what tests use: the URL, the CA, the certificates with and without the
production role, ``session()`` for plain ``requests`` calls, and direct access to the server's
database to seed queues and jobs (as CRIC and JEDI would) and to read what the server stored.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from psycopg.types.json import Jsonb

REPO = Path(__file__).resolve().parent.parent.parent
HARNESS = REPO / "tests" / "harness" / "panda-server"
START_HINT = f"sudo {HARNESS.relative_to(REPO)} start  (or: make test, or ACT_PANDA_START=1)"

# The tables a job can be in (exactly one at a time): the server moves it between them.
JOB_TABLES = ("jobsactive4", "jobsdefined4", "jobswaiting4", "jobsarchived4")


class PandaServerNotRunning(RuntimeError):
    pass


@dataclass(frozen=True)
class PandaJob:
    """A job as the server's database holds it (columns of ``doma_panda.jobs*4``)."""

    panda_id: int
    table: str  # jobsactive4 / jobsdefined4 / jobswaiting4 / jobsarchived4
    status: str  # jobstatus
    command: str | None  # commandtopilot: what the next heartbeat reply carries
    attempt_nr: int
    substatus: str | None
    error_code: int | None  # taskbuffererrorcode (set by a kill)
    modification_host: str | None  # the node given to acquire_jobs / update_job
    computing_element: str | None
    pilot_error_code: int | None
    trans_exit_code: str | None


@dataclass(frozen=True)
class PandaServer:
    """The running PanDA server and its database, from ``tests/harness/panda-server env``."""

    url: str  # https://127.0.0.1:25443
    ca: Path
    pilot_cert: Path  # DN pilot_dn: production role
    pilot_key: Path
    pilot_proxy: Path  # pilot_cert and pilot_key in one file
    pilot_dn: str
    user_cert: Path  # DN user_dn: no role
    user_key: Path
    user_dn: str
    db: dict[str, Any] = field(repr=False)  # psycopg.connect() keyword arguments
    home: Path  # PANDA_HOME: config and logs of the server
    python: Path  # the server's python (to run its daemons)

    @property
    def api(self) -> str:
        """Base of the new API: ``{api}/<module>/<method>``."""
        return f"{self.url}/api/v1"

    # ------------------------------------------------------------------------------- HTTP
    def session(self, *, role: bool = True) -> requests.Session:
        """A ``requests`` session with the CA and the production (``role``) or plain user cert.

        It sends ``Accept: application/json`` (without it the server answers Python ``repr``).
        """
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE must not replace our CA
        session.verify = str(self.ca)
        cert, key = (self.pilot_cert, self.pilot_key) if role else (self.user_cert, self.user_key)
        session.cert = (str(cert), str(key))
        session.headers["Accept"] = "application/json"
        return session

    def alive(self) -> bool:
        try:
            with self.session() as session:
                reply = session.get(f"{self.api}/system/is_alive", timeout=10)
            return reply.status_code == 200 and reply.json().get("success") is True
        except (requests.RequestException, ValueError):
            return False

    def kill(self, panda_ids: Sequence[int], code: int | None = None) -> dict[str, Any]:
        """POST /api/v1/job/kill with the production cert; returns the reply envelope.

        Without ``code`` (or 2, 3) a dispatched job stays in its state with ``commandtopilot=
        'tobekilled'``, which the next heartbeat reply carries; a job not yet dispatched
        (``activated``), or any job with ``code=9`` (force), goes straight to ``cancelled``.
        """
        body: dict[str, Any] = {"job_ids": list(panda_ids)}
        if code is not None:
            body["code"] = code
        with self.session() as session:
            reply = session.post(f"{self.api}/job/kill", json=body, timeout=60)
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    # ------------------------------------------------------------------------------- database
    @contextmanager
    def connect(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection to the server's database (search_path doma_panda); commits on success."""
        with psycopg.connect(**self.db) as conn:
            yield conn

    def add_queue(self, name: str | None = None, **overrides: Any) -> str:
        """Insert (or replace) the CRIC record of a PanDA queue; returns its name.

        ``name`` defaults to a fresh ``ACT_TEST_<hex>``, so concurrent test runs do not take each
        other's jobs. ``overrides`` replace keys of the JSON record (``status="test"``, ...).

        A queue added while the server runs works at once for dispatch: acquire_jobs only needs
        the jobs. Each server process reads the queue records at its first acquire_jobs and
        keeps them for 10 minutes; a queue it has not loaded is served with a default record
        (type production, status online). A test that depends on a record's content must add
        the queue before the server starts (or restart it: panda-server stop, then start).
        """
        name = name or f"ACT_TEST_{secrets.token_hex(4).upper()}"
        record: dict[str, Any] = {
            "panda_resource": name,
            "nickname": name,
            "atlas_site": "ACT_TEST",
            "site": "ACT_TEST",
            "cloud": "WORLD",
            "type": "production",
            "status": "online",
            "state": "ACTIVE",
            "corecount": 1,
            "capability": "score",
            "maxrss": 4000,
            "maxtime": 86400,
            "maxwdir": 20000,
            "maxinputsize": 14336,
            "workflow": "pull_ups",
            "resource_type": "SCORE",
            "ddm": "ACT_TEST_DATADISK",
            "releases": ["ANY"],
            "copytools": {"mv": {"setup": ""}},
            "acopytools": {"pr": ["mv"], "pw": ["mv"], "pl": ["mv"]},
            "vo_name": "atlas",
        }
        record.update(overrides)
        with self.connect() as conn:
            conn.execute("DELETE FROM schedconfig_json WHERE panda_queue = %s", (name,))
            conn.execute(
                "INSERT INTO schedconfig_json (panda_queue, data, last_update) "
                "VALUES (%s, %s, now())",
                (name, Jsonb(record)),
            )
        return name

    def add_jobs(
        self,
        queue: str,
        n: int = 1,
        *,
        label: str = "managed",
        parameters: str = "-c 'echo hello from PanDA; sleep 2'",
        transformation: str = "/bin/bash",
        core_count: int = 1,
        ram_mb: int = 2000,
        walltime_s: int = 3600,
        priority: int = 1000,
        attempt_nr: int = 1,
        inputs: int = 0,
    ) -> list[int]:
        """Insert ``n`` jobs in status ``activated`` for ``queue``, as JEDI would; their PandaIDs.

        Each job has a log file and one output file (``act.test.log.<id>.tgz``,
        ``act.test.out.<id>.root``), and ``inputs`` input files (``act.test.in.<id>.<i>``).
        acquire_jobs hands them out by priority, then PandaID.
        """
        ids: list[int] = []
        with self.connect() as conn:
            for _ in range(n):
                row = conn.execute("SELECT nextval('jobsdefined4_pandaid_seq')").fetchone()
                assert row is not None
                panda_id = int(row[0])
                conn.execute(
                    _INSERT_JOB,
                    _job_values(
                        panda_id,
                        queue,
                        label,
                        transformation,
                        core_count,
                        ram_mb,
                        walltime_s,
                        priority,
                        attempt_nr,
                        self.pilot_dn,
                    ),
                )
                files = [
                    ("log", f"act.test.log.{panda_id}.tgz", f"act.test.log.{panda_id}"),
                    ("output", f"act.test.out.{panda_id}.root", f"act.test.output.{panda_id}"),
                ]
                files += [
                    ("input", f"act.test.in.{panda_id}.{i}", "act.test.input")
                    for i in range(inputs)
                ]
                for kind, lfn, dataset in files:
                    conn.execute(
                        _INSERT_FILE,
                        {
                            "panda_id": panda_id,
                            "guid": str(uuid.uuid4()),
                            "lfn": lfn,
                            "type": kind,
                            "dataset": dataset,
                            "status": "ready" if kind == "input" else "unknown",
                            "se": queue,
                            "attemptnr": attempt_nr - 1,
                            "fsize": 1024 if kind == "input" else 0,
                            "checksum": "ad:0a1b2c3d" if kind == "input" else None,
                        },
                    )
                conn.execute(
                    "INSERT INTO jobparamstable (pandaid, modificationtime, jobparameters) "
                    "VALUES (%s, now(), %s)",
                    (panda_id, parameters),
                )
                ids.append(panda_id)
        return ids

    def job(self, panda_id: int) -> PandaJob | None:
        """The job's row straight from the server's tables, or None if no table holds it."""
        with self.connect() as conn:
            for table in JOB_TABLES:
                row = conn.execute(
                    "SELECT jobstatus, commandtopilot, attemptnr, jobsubstatus, "
                    "taskbuffererrorcode, modificationhost, computingelement, piloterrorcode, "
                    f"transexitcode FROM {table} WHERE pandaid = %s",
                    (panda_id,),
                ).fetchone()
                if row is not None:
                    return PandaJob(panda_id, table, *row)
        return None

    def set_parameters(self, panda_id: int, parameters: str) -> None:
        """Replace a job's ``jobPars`` (e.g. to name its own output file, known after add_jobs)."""
        with self.connect() as conn:
            conn.execute(
                "UPDATE jobparamstable SET jobparameters = %s WHERE pandaid = %s",
                (parameters, panda_id),
            )

    def columns(self, panda_id: int, *names: str) -> dict[str, Any]:
        """Columns of the job's row (from whichever table holds it), by lower-case name; {} if
        no table holds it. Names are checked against the table's columns, never interpolated
        unchecked."""
        wanted = [name.lower() for name in names]
        with self.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            for table in JOB_TABLES:
                known = {
                    row["column_name"]
                    for row in cur.execute(
                        "SELECT column_name FROM information_schema.columns "
                        "WHERE table_schema = 'doma_panda' AND table_name = %s",
                        (table,),
                    )
                }
                unknown = set(wanted) - known
                if unknown:
                    raise ValueError(f"{table} has no column(s) {sorted(unknown)}")
                row = cur.execute(
                    f"SELECT {', '.join(wanted)} FROM {table} WHERE pandaid = %s", (panda_id,)
                ).fetchone()
                if row is not None:
                    return dict(row)
        return {}

    def files(self, panda_id: int) -> list[dict[str, Any]]:
        """The job's rows of ``filestable4`` (lfn, type, guid, status, ...), by row_id."""
        with self.connect() as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            return cur.execute(
                "SELECT lfn, type, guid, status, scope, dataset, fsize, checksum "
                "FROM filestable4 WHERE pandaid = %s ORDER BY row_id",
                (panda_id,),
            ).fetchall()

    def output_report(self, panda_id: int, *, fsize: int = 1234) -> str:
        """A ``job_output_report`` for the job's log and output files (what the Adder reads)."""
        report = {
            f["lfn"]: {"guid": f["guid"], "fsize": fsize, "adler32": "0a1b2c3d"}
            for f in self.files(panda_id)
            if f["type"] in ("log", "output")
        }
        return json.dumps(report)

    # ------------------------------------------------------------------------------- daemons
    def run_adder(self, panda_ids: Sequence[int], timeout: float = 120.0) -> dict[int, str]:
        """Run the server's Adder until none of ``panda_ids`` is ``holding``; their statuses.

        The Adder (``pandaserver.daemons.scripts.add_main``, normally run by panda_daemon) turns
        the job output report of a job in ``holding`` into ``finished`` or ``failed`` and
        archives the job. It loops by itself; it is stopped (its process group, by pid) once the
        jobs have left ``holding``, or after ``timeout`` seconds (AssertionError).
        """
        command = [str(self.python), "-m", "pandaserver.daemons.scripts.add_main"]
        if os.geteuid() == 0:  # as the server does: files it writes under home/log stay its own
            command = ["runuser", "-u", "atlpan", "--", "env", f"HOME={self.home}/home", *command]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PANDA")}
        env.update(_server_env(self))
        with (self.home / "log" / "adder-tests.log").open("ab") as log:
            proc = subprocess.Popen(
                command,
                cwd=self.home,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + timeout
            while True:
                statuses = {
                    i: (job.status if (job := self.job(i)) else "absent") for i in panda_ids
                }
                if "holding" not in statuses.values():
                    return statuses
                if proc.poll() is not None:
                    raise AssertionError(f"the Adder exited with {proc.returncode}: {statuses}")
                if time.monotonic() > deadline:
                    raise AssertionError(f"the Adder did not finish in {timeout} s: {statuses}")
                time.sleep(0.5)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


def _server_env(server: PandaServer) -> dict[str, str]:
    http = server.url.replace("https://", "http://").replace(":25443", ":25080")
    return {
        "PANDA_HOME": str(server.home),
        "PANDA_URL": f"{http}/server/panda",
        "PANDA_URL_SSL": f"{server.url}/server/panda",
        "PANDACACHE_URL": f"{server.url}/server/panda",
        "PANDA_BEHIND_REAL_LB": "1",
        "LC_ALL": "C.UTF-8",
        "LANG": "C.UTF-8",
    }


_INSERT_JOB = """
INSERT INTO jobsactive4 (
  pandaid, jobdefinitionid, creationtime, creationhost, modificationtime, statechangetime,
  atlasrelease, transformation, homepackage, prodsourcelabel, produserid, produsername,
  assignedpriority, currentpriority, attemptnr, maxattempt, jobstatus, jobname,
  maxcpucount, maxcpuunit, maxdiskcount, maxdiskunit, minramcount, minramunit,
  computingsite, destinationse, cloud, vo, jobsetid, corecount, jeditaskid, taskid, nucleus,
  processingtype, cmtconfig, workqueue_id, gshare, resource_type, maxwalltime, jobexecutionid,
  lockedby, proddblock, destinationdblock)
VALUES (
  %(panda_id)s, 1, now(), 'act-tests', now(), now(),
  'Atlas-99.0.0', %(transformation)s, 'AtlasOffline/99.0.0', %(label)s, %(dn)s, 'act-test-pilot',
  %(priority)s, %(priority)s, %(attemptnr)s, %(attemptnr)s + 2, 'activated', %(jobname)s,
  %(walltime)s, 'kSI2kseconds', 1000, 'MB', %(ram)s, 'MB',
  %(queue)s, %(queue)s, 'WORLD', 'atlas', 7, %(cores)s, 4242, 4242, 'ACT_TEST',
  'act-test', 'x86_64-el9-gcc13-opt', 2, 'Test', %(resource_type)s, %(walltime)s, 0,
  'jedi', 'act.test.input', %(outds)s)
"""

_INSERT_FILE = """
INSERT INTO filestable4 (
  row_id, pandaid, guid, lfn, type, dataset, status, proddblock, dispatchdblock,
  destinationdblock, destinationdblocktoken, destinationse, scope, jeditaskid, attemptnr,
  fsize, checksum, modificationtime)
VALUES (
  nextval('filestable4_row_id_seq'), %(panda_id)s, %(guid)s, %(lfn)s, %(type)s, %(dataset)s,
  %(status)s, %(dataset)s, %(dataset)s, %(dataset)s, 'ATLASDATADISK', %(se)s, 'act_test', 4242,
  %(attemptnr)s, %(fsize)s, %(checksum)s, now())
"""


def _job_values(
    panda_id: int,
    queue: str,
    label: str,
    transformation: str,
    cores: int,
    ram: int,
    walltime: int,
    priority: int,
    attemptnr: int,
    dn: str,
) -> dict[str, Any]:
    return {
        "panda_id": panda_id,
        "queue": queue,
        "label": label,
        "transformation": transformation,
        "cores": cores,
        "ram": ram,
        "walltime": walltime,
        "priority": priority,
        "attemptnr": attemptnr,
        "dn": dn,
        "jobname": f"act_test_job.{panda_id}",
        "outds": f"act.test.output.{panda_id}",
        "resource_type": "MCORE" if cores > 1 else "SCORE",
    }


# ----------------------------------------------------------------------------------- discovery
def read_env(start: bool = False) -> PandaServer:
    """The running server, from ``panda-server env``; started first if ``start`` (needs root).

    Raises PandaServerNotRunning, with the command to start it, if it does not answer.
    """
    if start:
        result = subprocess.run(
            [str(HARNESS), "start"], check=False, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise PandaServerNotRunning(
                f"`{HARNESS} start` failed (exit {result.returncode}):\n{result.stderr[-3000:]}"
            )
    result = subprocess.run([str(HARNESS), "env"], check=False, capture_output=True, text=True)
    if result.returncode != 0:
        raise PandaServerNotRunning(
            f"the PanDA test server is not set up ({result.stderr.strip()}). Start it: {START_HINT}"
        )
    values = _parse_exports(result.stdout)
    server = PandaServer(
        url=values["PANDA_URL_SSL"],
        ca=Path(values["PANDA_CA_CERT"]),
        pilot_cert=Path(values["PANDA_PILOT_CERT"]),
        pilot_key=Path(values["PANDA_PILOT_KEY"]),
        pilot_proxy=Path(values["PANDA_PILOT_PROXY"]),
        pilot_dn=values["PANDA_PILOT_DN"],
        user_cert=Path(values["PANDA_USER_CERT"]),
        user_key=Path(values["PANDA_USER_KEY"]),
        user_dn=values["PANDA_USER_DN"],
        db={
            "host": values["PANDA_DB_HOST"],
            "port": int(values["PANDA_DB_PORT"]),
            "dbname": values["PANDA_DB_NAME"],
            "user": values["PANDA_DB_USER"],
            "password": Path(values["PANDA_DB_PASSWORD_FILE"]).read_text().strip(),
            "options": "-c search_path=doma_panda,public",
        },
        home=Path(values["PANDA_HOME"]),
        python=Path(values["PANDA_PYTHON"]),
    )
    if not server.alive():
        raise PandaServerNotRunning(
            f"the PanDA test server does not answer at {server.api}/system/is_alive. "
            f"Start it: {START_HINT}"
        )
    return server


def _parse_exports(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("export "):
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = shlex.split(value)[0] if value else ""
    return values


# ----------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def panda_server() -> PandaServer:
    """The running PanDA test server (started first if ``ACT_PANDA_START=1``); never skipped."""
    try:
        return read_env(start=os.environ.get("ACT_PANDA_START") == "1")
    except PandaServerNotRunning as error:
        problem = str(error)
    pytest.fail(problem, pytrace=False)


@pytest.fixture
def panda_queue(panda_server: PandaServer) -> str:
    """A fresh PanDA queue of its own (``ACT_TEST_<hex>``) for one test."""
    return panda_server.add_queue()
