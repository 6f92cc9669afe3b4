"""A PanDA server TEST DOUBLE: ``PandaTestServer`` (a fake, for tests, the demo and benchmarks).

It is NOT PanDA. It speaks both wire formats with replies shaped like the real server's
(shared/research/panda.md §3, measured on panda-server 1.0.4; legacy shapes from 0.8.1's code):

- new API: ``POST /api/v1/pilot/acquire_jobs|update_job|update_jobs_bulk``, ``GET
  /api/v1/pilot/get_job_status``, ``GET /api/v1/job/get_status``, ``POST
  /api/v1/event/acquire_event_ranges|update_event_ranges``, ``GET /api/v1/system/is_alive``;
  JSON envelope ``{success, message, data}`` with HTTP 200 even for errors, strict JSON types,
  unknown arguments refused, the 1.0.4 HTTP 500 of ``update_event_ranges`` (after the update);
- legacy API: ``POST /server/panda/getJob|updateJob|updateJobsInBulk|getStatus|getEventRanges|
  updateEventRanges`` (form-encoded; URL-encoded replies, JSON with ``Accept: application/json``).

It serves plain HTTP or HTTPS with a throw-away CA (``TestCA``, which also issues RFC 3820 proxies
for clients), is threaded with HTTP/1.1 keep-alive, holds jobs (``make_job_spec``,
``add_jobs``/``seed``), records every update (``states``, ``final_state``, ``final_reports``,
``requests``), counts TCP connections and can inject: ``delay``, HTTP errors, malformed replies,
dropped connections or lost replies (``inject``), an outage (``outage``/``restore``: connection
refused), per-job commands (``set_command``), role refusal (``refuse_role``), token checks
(``accepted_tokens``). With ``sent_timeout`` it hands a job out again when no update followed
its hand-out for that long, as PanDA does with jobs stuck in "sent" (``nSent`` counts them).
Run it with ``python -m act.atlas.panda_testserver --port N --jobs N``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import http.server
import ipaddress
import json
import os
import random
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from act.atlas.panda_status import PandaCommand, PandaEventStatus, PandaServerStatus
from act.atlas.update_fields import NEW_ARGS

FINAL = (PandaServerStatus.FINISHED, PandaServerStatus.FAILED)
NEW_JOB_STATES = (
    PandaServerStatus.RUNNING,
    PandaServerStatus.STARTING,
    PandaServerStatus.TRANSFERRING,
    PandaServerStatus.HOLDING,
    PandaServerStatus.FINISHED,
    PandaServerStatus.FAILED,
)
PROXY_CERT_INFO = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.14")
# ProxyCertInfo ::= SEQUENCE { proxyPolicy SEQUENCE { policyLanguage id-ppl-inheritAll } }
_INHERIT_ALL = bytes.fromhex("300c300a06082b06010505071501")
# panda-server 1.0.4 builds a set instead of a dict and fails to serialise it (seen live:
# "Type not serializable for {'Returns', '[false]', 'Commands', '{...}'}")
EVENT_BUG_TEXT = "Type not serializable for {{'Returns', '{returns}', 'Commands', '{commands}'}}"

# Arguments the new API's update_job accepts and the JSON type of each: panda-server 1.0.4's
# own table (act.atlas.update_fields.NEW_ARGS, checked against the real function by
# tests/test_update_fields.py); a wrong type refuses the whole update, as there.
UPDATE_ARGS = frozenset(NEW_ARGS)
UPDATE_INTS = frozenset(name for name, kind in NEW_ARGS.items() if kind == "int")
UPDATE_NUMBERS = frozenset(name for name, kind in NEW_ARGS.items() if kind == "number")
UPDATE_STRINGS = frozenset(name for name, kind in NEW_ARGS.items() if kind == "str")
ACQUIRE_ARGS = frozenset(
    {
        "site_name",
        "timeout",
        "memory",
        "disk_space",
        "prod_source_label",
        "node",
        "computing_element",
        "prod_user_id",
        "get_proxy_key",
        "task_id",
        "n_jobs",
        "background",
        "resource_type",
        "harvester_id",
        "worker_id",
        "scheduler_id",
        "job_type",
        "via_topic",
        "remaining_time",
        "target_architecture",
    }
)
ACQUIRE_INTS = frozenset({"memory", "disk_space", "task_id", "n_jobs", "worker_id", "timeout"})


# -- certificates -------------------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)


class TestCA:
    """A throw-away CA for tests: server certificates and RFC 3820 client proxies."""

    __test__ = False  # not a pytest class

    def __init__(self, directory: Path, name: str = "act PanDA test CA") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = _key()
        now = dt.datetime.now(dt.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.ca_file = self.dir / "ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def _issue(
        self,
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        *,
        lifetime: dt.timedelta,
        server_names: Sequence[str] = (),
    ) -> x509.Certificate:
        now = dt.datetime.now(dt.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1))
            .not_valid_after(now + lifetime)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        if server_names:
            names: list[x509.GeneralName] = []
            for host in server_names:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(
                x509.SubjectAlternativeName(names), critical=False
            ).add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
            )
        else:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
            )
        return builder.sign(self._key, hashes.SHA256())

    def server_cert(self, hosts: Sequence[str] = ("localhost", "127.0.0.1")) -> tuple[Path, Path]:
        """(certificate, key) files for a server answering as ``hosts``."""
        key = _key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        cert = self._issue(subject, key, lifetime=dt.timedelta(days=7), server_names=hosts)
        cert_file, key_file = self.dir / "server.pem", self.dir / "server.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_private(key_file, _pem_key(key))
        return cert_file, key_file

    def proxy(
        self,
        path: Path,
        *,
        cn: str = "act-test-pilot",
        lifetime: dt.timedelta = dt.timedelta(hours=96),
        user_lifetime: dt.timedelta = dt.timedelta(days=365),
    ) -> Path:
        """Write an RFC 3820 proxy (proxy cert, its key, the user cert; mode 0600) for the user
        ``/O=act-test/CN=<cn>``. A negative ``lifetime`` gives an expired proxy."""
        user_key = _key()
        user_subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "act-test"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )
        user = self._issue(user_subject, user_key, lifetime=user_lifetime)
        proxy_key = _key()
        serial = random.randint(10**8, 10**9)
        now = dt.datetime.now(dt.timezone.utc)
        proxy_subject = x509.Name(
            [*user_subject, x509.NameAttribute(NameOID.COMMON_NAME, str(serial))]
        )
        proxy = (
            x509.CertificateBuilder()
            .subject_name(proxy_subject)
            .issuer_name(user.subject)
            .public_key(proxy_key.public_key())
            .serial_number(serial)
            .not_valid_before(min(now, now + lifetime) - dt.timedelta(hours=1))
            .not_valid_after(now + lifetime)
            .add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False),
                critical=True,
            )
            .add_extension(x509.UnrecognizedExtension(PROXY_CERT_INFO, _INHERIT_ALL), critical=True)
            .sign(user_key, hashes.SHA256())
        )
        data = (
            proxy.public_bytes(serialization.Encoding.PEM)
            + _pem_key(proxy_key)
            + user.public_bytes(serialization.Encoding.PEM)
        )
        path = Path(path)
        _write_private(path, data)
        return path


# -- job specs ----------------------------------------------------------------------------------


def make_job_spec(
    pandaid: int,
    *,
    label: Literal["managed", "user"] = "managed",
    cores: int = 1,
    n_inputs: int = 2,
    n_outputs: int = 1,
    attempt: int = 1,
    task_id: int = 4242,
    jobset_id: int = 7,
    event_service: bool = False,
    priority: int = 1000,
) -> dict[str, Any]:
    """A realistic getJob job spec (the keys and value types of panda.md §3.2): production
    (``managed``) or analysis (``user``), single- or multi-core, with comma lists aligned with
    ``inFiles`` and ``outFiles`` (the log file first, as the server sends it)."""
    rng = random.Random(pandaid)
    scope = "mc23_13p6TeV" if label == "managed" else "user.tester"
    dataset_in = f"{scope}.{600000 + pandaid % 1000}.evgen.EVNT.e8514_tid{task_id:08d}_00"
    ins = [f"EVNT.{task_id:08d}._{index:06d}.pool.root.1" for index in range(1, n_inputs + 1)]
    logfile = f"log.{task_id:08d}._{pandaid:06d}.job.log.tgz.{attempt}"
    outs = [logfile] + [
        f"HITS.{task_id:08d}._{pandaid:06d}.{k}.pool.root.{attempt}" for k in range(n_outputs)
    ]
    out_datasets = [f"{scope}.simul.log.e8514_s4162_tid{task_id:08d}_00"] + [
        f"{scope}.simul.HITS.e8514_s4162_tid{task_id:08d}_00" for _ in range(n_outputs)
    ]
    multi = cores > 1
    spec: dict[str, Any] = {
        "StatusCode": 0,
        "PandaID": pandaid,
        "prodSourceLabel": label,
        "swRelease": "Atlas-23.0.22",
        "homepackage": "AtlasOffline/23.0.22" if label == "managed" else "AnalysisTransforms",
        "transformation": "Sim_tf.py" if label == "managed" else "runGen-00-00-02",
        "jobName": f"{dataset_in}.{pandaid}",
        "jobDefinitionID": pandaid // 10,
        "cloud": "WORLD",
        "inFiles": ",".join(ins),
        "dispatchDblock": ",".join(f"panda.{task_id}.dis" for _ in ins),
        "dispatchDBlockToken": ",".join("NULL" for _ in ins),
        "dispatchDBlockTokenForOut": ",".join("NULL" for _ in outs),
        "outFiles": ",".join(outs),
        "destinationDblock": ",".join(f"{d}_sub0{pandaid}" for d in out_datasets),
        "destinationDBlockToken": ",".join("ATLASDATADISK" for _ in outs),
        "prodDBlocks": ",".join(dataset_in for _ in ins),
        "prodDBlockToken": ",".join("NULL" for _ in ins),
        "realDatasets": ",".join(out_datasets),
        "realDatasetsIn": ",".join(dataset_in for _ in ins),
        "fileDestinationSE": ",".join("TEST_SITE" for _ in outs),
        "logFile": logfile,
        "logGUID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "jobPars": (
            f"--inputEVNTFile={','.join(ins)} --outputHITSFile={outs[-1] if n_outputs else ''} "
            f"--maxEvents=100 --randomSeed={pandaid % 10000} --multithreaded={multi!s}"
        ),
        "attemptNr": attempt,
        "GUID": ",".join(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in ins),
        "checksum": ",".join(f"ad:{rng.getrandbits(32):08x}" for _ in ins),
        "fsize": ",".join(str(rng.randint(10**8, 4 * 10**9)) for _ in ins),
        "scopeIn": ",".join(scope for _ in ins),
        "scopeOut": ",".join(scope for _ in outs[1:]),
        "scopeLog": scope,
        "ddmEndPointIn": ",".join("TEST-SITE_DATADISK" for _ in ins),
        "ddmEndPointOut": ",".join("TEST-SITE_DATADISK" for _ in outs),
        "destinationSE": "TEST_SITE",
        "prodUserID": "/O=act-test/CN=act-test-pilot",
        "maxCpuCount": 86400 if multi else 43200,
        "minRamCount": 2000 * cores if multi else 2000,
        "maxDiskCount": 10000,
        "cmtConfig": "x86_64-el9-gcc13-opt",
        "processingType": "simul" if label == "managed" else "panda-client-1.5.80-jedi-run",
        "transferType": "NULL",
        "sourceSite": "NULL",
        "currentPriority": priority,
        "taskID": task_id,
        "coreCount": cores,
        "jobsetID": jobset_id,
        "reqID": "NULL",
        "nucleus": "TEST_NUCLEUS",
        "maxWalltime": 86400 if multi else 43200,
        "resource_type": "MCORE" if multi else "SCORE",
        "ioIntensity": None,
        "ioIntensityUnit": None,
        "nSent": 0,
    }
    if event_service:
        spec["eventService"] = "True"
    return spec


# -- state --------------------------------------------------------------------------------------


@dataclass
class TestJob:
    """A job held by the test server, with what it was told about it."""

    __test__ = False

    spec: dict[str, Any]
    queue: str
    status: str = "activated"
    states: list[str] = field(default_factory=list)
    final_state: str | None = None
    final_reports: int = 0
    command: str | None = None
    last_fields: dict[str, Any] = field(default_factory=dict)
    event_ranges: list[dict[str, Any]] = field(default_factory=list)
    event_status: dict[str, str] = field(default_factory=dict)
    sent_at: float | None = None  # time.monotonic() of the last hand-out

    @property
    def pandaid(self) -> int:
        return int(self.spec["PandaID"])

    @property
    def label(self) -> str:
        return str(self.spec["prodSourceLabel"])

    @property
    def attempt(self) -> int:
        return int(self.spec["attemptNr"])


@dataclass(frozen=True)
class Received:
    """One request the test server answered: its method, parameters and credentials."""

    api: str  # "new" or "legacy"
    method: str  # e.g. "pilot/update_job" or "updateJob"
    params: dict[str, Any]
    client_dn: str | None
    authorization: str | None
    origin: str | None
    connection: int


@dataclass
class _Fault:
    kind: Literal["http", "malformed", "drop", "lose_reply"]
    status: int = 500
    body: str = ""
    method: str | None = None


class PandaTestServer:
    """The PanDA TEST DOUBLE (see the module docstring). Use as a context manager or with
    ``start()``/``stop()``; ``url`` is the base URL to configure as ``panda.url``."""

    __test__ = False

    def __init__(
        self,
        *,
        tls: bool = False,
        certs_dir: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ca: TestCA | None = None,
        require_client_cert: bool = False,
    ) -> None:
        self.host = host
        self.tls = tls
        self.ca: TestCA | None = None
        self._ssl: ssl.SSLContext | None = None
        if tls:
            if ca is None:
                if certs_dir is None:
                    raise ValueError("tls needs certs_dir (or a TestCA)")
                ca = TestCA(certs_dir)
            self.ca = ca
            cert, key = ca.server_cert((host, "localhost"))
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, key)
            context.load_verify_locations(ca.ca_file)
            # the recipe's server requires a client certificate; production's accepts none too
            context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
            context.verify_flags |= ssl.VERIFY_ALLOW_PROXY_CERTS
            self._ssl = context
        self._lock = threading.Lock()
        self.jobs: dict[int, TestJob] = {}
        self._next_id = 1
        self.requests: list[Received] = []
        self.connections = 0
        self.tls_failures = 0
        self.faults_served = 0
        self._open: set[socket.socket] = set()
        self._faults: deque[_Fault] = deque()
        # knobs, changeable at any time
        self.delay = 0.0
        self.refuse_role = False
        self.event_ranges_bug = True
        self.accepted_tokens: set[str] | None = None
        self.record_requests = True
        # legacy replies honour Accept: application/json (as 0.8.1 does) unless this is False,
        # then they are always URL-encoded, as aCT saw them
        self.legacy_accept_json = True
        # As PanDA does: a job handed out ("sent") that no update followed for this many seconds
        # is handed out again (nSent + 1). None: never (the default).
        self.sent_timeout: float | None = None
        self._port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self._port}"

    def start(self) -> PandaTestServer:
        server = _Server((self.host, self._port), _Handler, self)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._drop_connections()

    def outage(self) -> None:
        """Stop listening and drop open connections: clients get 'connection refused'."""
        self.stop()

    def restore(self) -> None:
        """Listen again on the same port after ``outage()``."""
        if self._server is None:
            self.start()

    def __enter__(self) -> PandaTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _drop_connections(self) -> None:
        with self._lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    # -- jobs -----------------------------------------------------------------------------------

    def add_jobs(
        self, specs: Iterable[Mapping[str, Any]], *, queue: str = "TEST_QUEUE"
    ) -> list[int]:
        """Hold these job specs (status ``activated``) for ``queue``; their PandaIDs."""
        ids = []
        with self._lock:
            for spec in specs:
                job = TestJob(dict(spec), queue)
                if job.pandaid in self.jobs:
                    raise ValueError(f"PandaID {job.pandaid} already held")
                if job.spec.get("eventService"):
                    job.event_ranges = _event_ranges(job.spec, 20)
                self.jobs[job.pandaid] = job
                self._next_id = max(self._next_id, job.pandaid + 1)
                ids.append(job.pandaid)
        return ids

    def seed(
        self,
        n: int,
        *,
        queue: str = "TEST_QUEUE",
        label: Literal["managed", "user"] = "managed",
        cores: int = 1,
        **spec_options: Any,
    ) -> list[int]:
        """Add ``n`` realistic jobs (see ``make_job_spec``); their PandaIDs."""
        with self._lock:
            first = self._next_id
            self._next_id += n
        specs = [
            make_job_spec(pid, label=label, cores=cores, **spec_options)
            for pid in range(first, first + n)
        ]
        return self.add_jobs(specs, queue=queue)

    def set_command(self, pandaid: int, command: str | None) -> None:
        """Answer every later heartbeat of this job with ``command`` (tobekilled, ...)."""
        with self._lock:
            self.jobs[pandaid].command = command

    def states(self, pandaid: int) -> list[str]:
        """Every state reported for this job, in order."""
        with self._lock:
            job = self.jobs.get(pandaid)
            return list(job.states) if job else []

    def final_state(self, pandaid: int) -> str | None:
        with self._lock:
            job = self.jobs.get(pandaid)
            return job.final_state if job else None

    def final_reports(self, pandaid: int) -> int:
        """How many final (finished/failed) updates this job received."""
        with self._lock:
            job = self.jobs.get(pandaid)
            return job.final_reports if job else 0

    def status(self, pandaid: int) -> str | None:
        with self._lock:
            job = self.jobs.get(pandaid)
            return job.status if job else None

    def last_fields(self, pandaid: int) -> dict[str, Any]:
        """The fields of the job's latest update, as received."""
        with self._lock:
            job = self.jobs.get(pandaid)
            return dict(job.last_fields) if job else {}

    def event_status(self, pandaid: int) -> dict[str, str]:
        with self._lock:
            job = self.jobs.get(pandaid)
            return dict(job.event_status) if job else {}

    def received(self, method: str | None = None) -> list[Received]:
        """The requests answered so far (of one method if given)."""
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

    def update_count(self) -> int:
        """Job updates received (a bulk call counts each job)."""
        with self._lock:
            return sum(len(job.states) for job in self.jobs.values())

    # -- fault injection -------------------------------------------------------------------------

    def inject(
        self,
        kind: Literal["http", "malformed", "drop", "lose_reply"],
        *,
        count: int = 1,
        status: int = 500,
        body: str | None = None,
        method: str | None = None,
    ) -> None:
        """Answer the next ``count`` requests (of ``method`` if given, e.g. "pilot/update_job")
        with an HTTP error ``status``, a malformed body, or by closing the connection (``drop``:
        before doing anything; ``lose_reply``: after doing what was asked, as when the answer
        is lost on its way back)."""
        text = body if body is not None else _fault_body(kind, status)
        with self._lock:
            for _ in range(count):
                self._faults.append(_Fault(kind, status, text, method))

    def clear_faults(self) -> int:
        """Forget the faults not served yet; how many there were."""
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
            return count

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method is None or fault.method == method:
                    self._faults.remove(fault)
                    return fault
        return None

    # -- request handling (called by the handler threads) ---------------------------------------

    def _handle(self, request: _Request) -> tuple[int, str, str] | None:
        """(HTTP status, content type, body) for a request, or None to drop the connection."""
        if self.delay:
            time.sleep(self.delay)
        fault = self._take_fault(request.method)
        if fault is not None:
            with self._lock:
                self.faults_served += 1
        if fault is not None and fault.kind != "lose_reply":
            if fault.kind == "drop":
                return None
            if fault.kind == "malformed":
                return 200, "text/html", fault.body
            return fault.status, "text/plain", fault.body
        if self.record_requests:
            with self._lock:
                self.requests.append(
                    Received(
                        request.api,
                        request.method,
                        request.params,
                        request.client_dn,
                        request.headers.get("authorization"),
                        request.headers.get("origin"),
                        request.connection,
                    )
                )
        if request.headers.get("authorization") and self.accepted_tokens is not None:
            token = request.headers["authorization"].removeprefix("Bearer ").strip()
            if token not in self.accepted_tokens:
                return 403, "text/plain", "ERROR : Token authentication failed. invalid token"
        api = _NewApi(self, request) if request.api == "new" else _LegacyApi(self, request)
        answer = api.answer()
        return None if fault is not None else answer  # lose_reply: done, the answer is lost

    # shared job logic (under the lock)

    def _acquire(self, queue: str, label: str | None, n_jobs: int) -> list[dict[str, Any]] | None:
        """Jobs handed out, or None if the role is refused."""
        if self.refuse_role and label not in ("user",):
            return None
        accepted = _labels(label)
        out = []
        with self._lock:
            if self.sent_timeout is not None:
                expired = time.monotonic() - self.sent_timeout
                for job in self.jobs.values():
                    if job.status == "sent" and job.sent_at is not None and job.sent_at < expired:
                        job.status = "activated"  # never heard of: PanDA sends it again
            candidates = sorted(
                (
                    j
                    for j in self.jobs.values()
                    if j.status == "activated"
                    and j.queue == queue
                    and (accepted is None or j.label in accepted)
                ),
                key=lambda j: (-int(j.spec.get("currentPriority", 0)), j.pandaid),
            )
            for job in candidates[: max(n_jobs, 0)]:
                job.status = "sent"
                job.sent_at = time.monotonic()
                job.spec["nSent"] = int(job.spec.get("nSent", 0)) + 1
                out.append(dict(job.spec))
        return out

    def _update(
        self,
        pandaid: int,
        state: str,
        attempt: int | None,
        fields: Mapping[str, Any],
        *,
        legacy: bool = False,
    ) -> str:
        """Record one heartbeat; the command to answer with ("NULL" for none)."""
        with self._lock:
            job = self.jobs.get(pandaid)
            if job is None:
                return PandaCommand.TOBEKILLED
            if not legacy and attempt is not None and attempt != job.attempt:
                # as panda-server 1.0.4: its UPDATE is conditional on the attempt number, so a
                # wrong one records nothing and is answered like an unknown job
                return PandaCommand.TOBEKILLED
            already_final = job.final_state is not None
            job.states.append(state)
            job.last_fields = dict(fields)
            if state in FINAL:
                job.final_reports += 1
                job.final_state = state
                job.status = "holding"  # finished/failed wait in holding for the Adder
            elif not already_final:
                job.status = state
            if job.command:
                return job.command
            if attempt is not None and attempt != job.attempt:
                return "badattemptnr"
            if already_final and state in FINAL:
                return "alreadydone"
            return "NULL"

    def _status_of(self, pandaid: int) -> tuple[str, int, str | None]:
        with self._lock:
            job = self.jobs.get(pandaid)
            if job is None:
                return "not found", 0, None
            return job.status, job.attempt, job.command

    def _acquire_ranges(self, pandaid: int, n: int) -> list[dict[str, Any]]:
        with self._lock:
            job = self.jobs.get(pandaid)
            if job is None:
                return []
            out: list[dict[str, Any]] = []
            for item in job.event_ranges:
                if len(out) >= n:
                    break
                if item["eventRangeID"] not in job.event_status:
                    job.event_status[item["eventRangeID"]] = PandaEventStatus.RUNNING
                    out.append(dict(item))
            return out

    def _update_ranges(self, ranges: Sequence[Mapping[str, Any]]) -> int:
        with self._lock:
            done = 0
            for item in ranges:
                range_id = str(item.get("eventRangeID", ""))
                pandaid = int(range_id.split("-")[1]) if range_id.count("-") >= 3 else -1
                job = self.jobs.get(pandaid)
                if job is not None:
                    job.event_status[range_id] = str(item.get("eventStatus"))
                    done += 1
            return done


def _update_types(params: Mapping[str, Any]) -> str | None:
    """The number and string arguments' types, as 1.0.4's request_validation checks them."""
    for name, value in params.items():
        if value is None:
            continue
        if name in UPDATE_NUMBERS and not isinstance(value, int | float):
            return f"Type error: '{name}' must be of type int | float, got {type(value).__name__}."
        if name in UPDATE_STRINGS and not isinstance(value, str):
            return f"Type error: '{name}' must be of type str, got {type(value).__name__}."
    return None


def _labels(label: str | None) -> set[str] | None:
    if label in (None, "managed"):
        return {"managed", "test", "prod_test", "install"}
    if label == "user":
        return {"user", "panda", "install"}
    if label == "unified":
        return None
    return {label}


def _event_ranges(spec: Mapping[str, Any], n: int) -> list[dict[str, Any]]:
    task, pandaid = spec["taskID"], spec["PandaID"]
    lfn = str(spec["inFiles"]).split(",")[0]
    guid = str(spec["GUID"]).split(",")[0]
    return [
        {
            "eventRangeID": f"{task}-{pandaid}-{k}-1-1",
            "startEvent": 10 * k + 1,
            "lastEvent": 10 * k + 10,
            "LFN": lfn,
            "GUID": guid,
            "scope": str(spec["scopeIn"]).split(",")[0],
        }
        for k in range(n)
    ]


def _fault_body(kind: str, status: int) -> str:
    if kind == "malformed":
        return "<html><body>Proxy Error: upstream sent an invalid response</body></html>"
    return f"ERROR : injected HTTP {status}"


# -- wire formats -------------------------------------------------------------------------------


@dataclass
class _Request:
    api: str
    method: str
    http_method: str
    params: dict[str, Any]
    typed: bool  # JSON body (values keep their types) rather than form/query strings
    headers: dict[str, str]
    client_dn: str | None
    connection: int
    body_error: str | None = None

    @property
    def wants_json(self) -> bool:
        return "application/json" in self.headers.get(
            "accept", ""
        ) or "application/json" in self.headers.get("content-type", "")


def _json(data: Any) -> tuple[int, str, str]:
    return 200, "application/json", json.dumps(data)


class _NewApi:
    """``/api/v1/<module>/<method>``, shaped like panda-server 1.0.4."""

    POSTS = frozenset(
        {
            "pilot/acquire_jobs",
            "pilot/update_job",
            "pilot/update_jobs_bulk",
            "event/acquire_event_ranges",
            "event/update_event_ranges",
        }
    )
    GETS = frozenset({"pilot/get_job_status", "job/get_status", "system/is_alive"})

    def __init__(self, server: PandaTestServer, request: _Request) -> None:
        self.server = server
        self.request = request

    def reply(self, success: bool, message: str = "", data: Any = None) -> tuple[int, str, str]:
        envelope = {"success": success, "message": message, "data": data}
        if self.request.wants_json:
            return _json(envelope)
        return 200, "text/plain", str(envelope)  # the real server's Python repr

    def answer(self) -> tuple[int, str, str]:
        request = self.request
        method = request.method
        if method not in self.POSTS and method not in self.GETS:
            return 403, "text/plain", f"ERROR : method {method.split('/')[-1]} is forbidden"
        expected = "POST" if method in self.POSTS else "GET"
        if request.http_method != expected:
            return self.reply(False, f"expecting {expected}, received {request.http_method}")
        if request.body_error:
            return self.reply(False, request.body_error)
        handler = getattr(self, method.replace("/", "_"))
        result: tuple[int, str, str] = handler(request.params)
        return result

    def _types(
        self, params: Mapping[str, Any], allowed: frozenset[str], ints: frozenset[str]
    ) -> str | None:
        for name in params:
            if name not in allowed:
                return f"Argument error: got an unexpected keyword argument '{name}'"
        for name in ints:
            value = params.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                return f"Type error: '{name}' must be of type int, got {type(value).__name__}."
        return None

    def _role_refused(self) -> bool:
        return self.server.refuse_role

    def pilot_acquire_jobs(self, params: dict[str, Any]) -> tuple[int, str, str]:
        error = self._types(params, ACQUIRE_ARGS, ACQUIRE_INTS)
        if error:
            return self.reply(False, error)
        if "site_name" not in params:
            return self.reply(False, "Argument error: missing a required argument: 'site_name'")
        jobs = self.server._acquire(
            str(params["site_name"]), params.get("prod_source_label"), params.get("n_jobs", 1)
        )
        if jobs is None:
            return self.reply(False, "no production/pilot role in VOMS FQANs or non pilot owner")
        if not jobs:
            return self.reply(False, "No jobs in PanDA")
        return self.reply(True, "", {"StatusCode": 0, "jobs": jobs})

    def _one_update(self, params: Mapping[str, Any]) -> tuple[bool, str, Any]:
        error = self._types(params, UPDATE_ARGS, UPDATE_INTS) or _update_types(params)
        if error:
            return False, error, None
        if "job_id" not in params or "job_status" not in params:
            return False, "Argument error: missing a required argument: 'job_id'", None
        if params["job_status"] not in NEW_JOB_STATES:
            return False, f"Invalid job status: {params['job_status']}", {"StatusCode": 50}
        command = self.server._update(
            params["job_id"], params["job_status"], params.get("attempt_nr"), params
        )
        return True, "", {"StatusCode": 0, "command": command}

    def pilot_update_job(self, params: dict[str, Any]) -> tuple[int, str, str]:
        if self._role_refused():
            return self.reply(False, "production or pilot role required")
        return self.reply(*self._one_update(params))

    def pilot_update_jobs_bulk(self, params: dict[str, Any]) -> tuple[int, str, str]:
        if self._role_refused():
            return self.reply(False, "production or pilot role required")
        job_list = params.get("job_list")
        if not isinstance(job_list, list) or not all(isinstance(j, dict) for j in job_list):
            return self.reply(False, "Type error: 'job_list' must be of type list", [])
        for item in job_list:
            if self._types(item, UPDATE_ARGS, UPDATE_INTS) or "job_id" not in item:
                return self.reply(False, "failed to update jobs: malformed job in job_list", [])
        out = []
        for item in job_list:
            success, message, data = self._one_update(item)
            out.append({"success": success, "message": message, "data": data})
        return self.reply(True, "", out)

    def _job_ids(self, params: Mapping[str, Any]) -> list[int] | str:
        raw = params.get("job_ids", [])
        values = raw if isinstance(raw, list) else [raw]
        try:
            return [int(v) for v in values]
        except (TypeError, ValueError):
            return "Type error: 'job_ids' must be of type List[int]"

    def pilot_get_job_status(self, params: dict[str, Any]) -> tuple[int, str, str]:
        ids = self._job_ids(params)
        if isinstance(ids, str):
            return self.reply(False, ids)
        out = []
        for pid in ids:
            status, attempt, _ = self.server._status_of(pid)
            out.append({"job_id": pid, "status": status, "attempt_number": attempt})
        return self.reply(True, "", out)

    def job_get_status(self, params: dict[str, Any]) -> tuple[int, str, str]:
        ids = self._job_ids(params)
        if isinstance(ids, str):
            return self.reply(False, ids)
        out = []
        for pid in ids:
            status, _, command = self.server._status_of(pid)
            out.append({"status": status, "command": command})
        return self.reply(True, "", out)

    def system_is_alive(self, params: dict[str, Any]) -> tuple[int, str, str]:
        return self.reply(True, "", None)

    def event_acquire_event_ranges(self, params: dict[str, Any]) -> tuple[int, str, str]:
        if self._role_refused():
            return self.reply(False, "production or pilot role required")
        pandaid = params.get("job_id")
        if not isinstance(pandaid, int):
            return self.reply(False, "Type error: 'job_id' must be of type int")
        n = params.get("n_ranges", 10)
        return self.reply(True, "", self.server._acquire_ranges(pandaid, int(n)))

    def event_update_event_ranges(self, params: dict[str, Any]) -> tuple[int, str, str]:
        if self._role_refused():
            return self.reply(False, "production or pilot role required")
        text = params.get("event_ranges")
        if not isinstance(text, str):
            return self.reply(False, "Type error: 'event_ranges' must be of type str")
        try:
            ranges = json.loads(text)
        except ValueError:
            return self.reply(False, "failed to decode event_ranges")
        done = self.server._update_ranges(ranges if isinstance(ranges, list) else [])
        if self.server.event_ranges_bug:
            text = EVENT_BUG_TEXT.format(returns=json.dumps([True] * done), commands="{}")
            return 500, "text/plain", text
        return self.reply(True, "", {"Returns": [True] * len(ranges), "Commands": {}})


class _LegacyApi:
    """``/server/panda/<method>``, shaped like panda-server 0.8.1's JobDispatcher."""

    def __init__(self, server: PandaTestServer, request: _Request) -> None:
        self.server = server
        self.request = request

    @property
    def json_mode(self) -> bool:
        return self.server.legacy_accept_json and self.request.wants_json

    def reply(self, data: Mapping[str, Any]) -> tuple[int, str, str]:
        if self.json_mode:
            return _json(dict(data))
        flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
        return 200, "text/plain", urlencode(flat)

    def answer(self) -> tuple[int, str, str]:
        method = self.request.method
        handler = getattr(self, f"m_{method}", None)
        if handler is None:
            return 403, "text/plain", f"ERROR : method {method} is forbidden"
        if self.request.http_method != "POST" and method != "isAlive":
            return 403, "text/plain", f"ERROR : method {method} needs POST"
        result: tuple[int, str, str] = handler(self.request.params)
        return result

    def m_isAlive(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        return 200, "text/plain", "alive=yes"

    def m_getJob(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        if "siteName" not in params:
            return self.reply({"StatusCode": 80, "errorDialog": "siteName is missing"})
        n_text = params.get("nJobs")
        try:
            n = int(n_text) if n_text is not None else 1
        except ValueError:
            return self.reply({"StatusCode": 50, "errorDialog": "nJobs is not an int"})
        jobs = self.server._acquire(params["siteName"], params.get("prodSourceLabel"), n)
        if jobs is None:
            return self.reply({"StatusCode": 60})
        if not jobs:
            data: dict[str, Any] = {"StatusCode": 20}
            if self.json_mode:
                data["errorDialog"] = "no jobs in PanDA"
            return self.reply(data)
        if n_text is not None:
            return self.reply({"StatusCode": 0, "jobs": jobs})
        job = jobs[0]
        if self.json_mode:
            return self.reply(job)
        return self.reply({k: "NULL" if v is None else str(v) for k, v in job.items()})

    def _legacy_update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if self.server.refuse_role:
            return {"StatusCode": 60}
        try:
            pandaid = int(params["jobId"])
            attempt = int(params["attemptNr"]) if params.get("attemptNr") else None
        except (KeyError, ValueError):
            return {"StatusCode": 50}
        state = str(params.get("state", ""))
        if state not in NEW_JOB_STATES:
            return {"StatusCode": 0, "command": "NULL"}  # 0.8.1 silently ignores a bad state
        command = self.server._update(pandaid, state, attempt, params, legacy=True)
        return {"StatusCode": 0, "command": command}

    def m_updateJob(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        return self.reply(self._legacy_update(params))

    def m_updateJobsInBulk(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        try:
            job_list = json.loads(params.get("jobList", ""))
        except ValueError:
            return 200, "text/plain", json.dumps([False, "jobList is not JSON"])
        if not isinstance(job_list, list):
            return 200, "text/plain", json.dumps([False, "jobList is not a list"])
        replies = []
        for item in job_list:
            data = self._legacy_update(item if isinstance(item, dict) else {})
            replies.append(urlencode({k: str(v) for k, v in data.items()}))
        return 200, "text/plain", json.dumps([True, replies])

    def m_getStatus(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        statuses, attempts = [], []
        for pid in params.get("ids", "").split():
            try:
                status, attempt, _ = self.server._status_of(int(pid))
            except ValueError:
                status, attempt = "notfound", 0
            statuses.append(status.replace(" ", ""))
            attempts.append(str(attempt))
        return self.reply(
            {"StatusCode": 0, "status": " ".join(statuses), "attemptNr": " ".join(attempts)}
        )

    def m_getEventRanges(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        if self.server.refuse_role:
            return self.reply({"StatusCode": 60})
        try:
            pandaid, n = int(params["pandaID"]), int(params.get("nRanges", "10"))
        except (KeyError, ValueError):
            return self.reply({"StatusCode": 50})
        ranges = self.server._acquire_ranges(pandaid, n)
        return self.reply({"StatusCode": 0, "eventRanges": json.dumps(ranges)})

    def m_updateEventRanges(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        if self.server.refuse_role:
            return self.reply({"StatusCode": 60})
        try:
            ranges = json.loads(params.get("eventRanges", ""))
        except ValueError:
            return self.reply({"StatusCode": 50})
        done = self.server._update_ranges(ranges if isinstance(ranges, list) else [])
        return self.reply(
            {"StatusCode": 0, "Returns": json.dumps([True] * done), "Command": "NULL"}
        )


# -- HTTP plumbing ------------------------------------------------------------------------------


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], owner: PandaTestServer
    ) -> None:
        self.owner = owner
        super().__init__(address, handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        context = self.owner._ssl
        if context is not None:
            sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.owner._lock:
            self.owner.connections += 1
            self.owner._open.add(sock)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that went away or failed TLS is counted, not printed

    def shutdown_request(self, request: Any) -> None:
        with self.owner._lock:
            self.owner._open.discard(request)
        super().shutdown_request(request)


def _dn(cert: Mapping[str, Any] | None) -> str | None:
    if not cert:
        return None
    parts = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            short = {
                "countryName": "C",
                "organizationName": "O",
                "organizationalUnitName": "OU",
                "commonName": "CN",
            }.get(key, key)
            parts.append(f"/{short}={value}")
    return "".join(parts) or None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True
    server: _Server

    def setup(self) -> None:
        self.connection_id = id(self.request)
        self.client_dn: str | None = None
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(30)
            try:
                self.request.do_handshake()
            except (ssl.SSLError, OSError):
                with self.server.owner._lock:
                    self.server.owner.tls_failures += 1
                raise
            self.client_dn = _dn(self.request.getpeercert())
        super().setup()

    def handle(self) -> None:
        with contextlib.suppress(ssl.SSLError, ConnectionError, TimeoutError):
            super().handle()

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, http_method: str) -> None:
        parts = urlsplit(self.path)
        path = parts.path
        headers = {k.lower(): v for k, v in self.headers.items()}
        length = int(headers.get("content-length", "0") or 0)
        body = self.rfile.read(length) if length else b""
        if path.startswith(("/api/v1/", "/api/latest/")):
            api, method = "new", path.split("/", 3)[3]
        elif path.startswith("/server/panda/"):
            api, method = "legacy", path[len("/server/panda/") :]
        else:
            self._send(404, "text/plain", "not found")
            return
        params: dict[str, Any] = {}
        typed = False
        body_error = None
        query = parse_qs(parts.query, keep_blank_values=True)
        for key, values in query.items():
            params[key] = values if len(values) > 1 or key == "job_ids" else values[0]
        if body:
            if "application/json" in headers.get("content-type", ""):
                try:
                    decoded = json.loads(body)
                except ValueError:
                    decoded = None
                if isinstance(decoded, dict):
                    params.update(decoded)
                    typed = True
                else:
                    body_error = "failed to decode the JSON body"
            else:
                params.update(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        if api == "new" and not typed and http_method == "POST":
            for name in ("n_jobs", "job_id", "attempt_nr", "n_ranges"):
                if isinstance(params.get(name), str):
                    body_error = f"Type error: '{name}' must be of type int, got str."
                    break
        request = _Request(
            api,
            method,
            http_method,
            params,
            typed,
            headers,
            self.client_dn,
            self.connection_id,
            body_error,
        )
        answer = self.server.owner._handle(request)
        if answer is None:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.request.shutdown(socket.SHUT_RDWR)
            return
        self._send(*answer)

    def _send(self, status: int, content_type: str, text: str) -> None:
        payload = text.encode("utf-8")
        reason = self.responses.get(status, ("",))[0]
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            f"Content-Type: {content_type}; charset=utf-8\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode("latin-1")
        self.wfile.write(head + payload)


# -- command line -------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m act.atlas.panda_testserver",
        description="A PanDA server TEST DOUBLE for demos and benchmarks (not PanDA).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=25080)
    parser.add_argument("--jobs", type=int, default=0, help="jobs to seed")
    parser.add_argument("--queue", default="TEST_QUEUE")
    parser.add_argument(
        "--multicore", type=float, default=0.3, help="fraction of 8-core jobs (default 0.3)"
    )
    parser.add_argument(
        "--tls", metavar="DIR", help="serve HTTPS with a throw-away CA written to DIR"
    )
    parser.add_argument(
        "--proxy", metavar="PATH", help="with --tls: also write a client proxy (0600) to PATH"
    )
    args = parser.parse_args(argv)
    if args.proxy and not args.tls:
        parser.error("--proxy needs --tls")
    server = PandaTestServer(
        tls=bool(args.tls),
        certs_dir=Path(args.tls) if args.tls else None,
        host=args.host,
        port=args.port,
    )
    n_multi = int(args.jobs * args.multicore)
    server.seed(args.jobs - n_multi, queue=args.queue)
    server.seed(n_multi, queue=args.queue, cores=8)
    server.record_requests = False
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.start()
    print(f"PanDA TEST DOUBLE serving {server.url} (queue {args.queue}, {args.jobs} jobs)")
    if server.ca is not None:
        print(f"CA certificate: {server.ca.ca_file}")
        if args.proxy:
            print(f"client proxy: {server.ca.proxy(Path(args.proxy))}")
    sys.stdout.flush()
    while not stop.wait(10):
        with server._lock:
            held = len(server.jobs)
            sent = sum(1 for j in server.jobs.values() if j.status != "activated")
            finals = sum(1 for j in server.jobs.values() if j.final_state)
        print(f"jobs {held}, handed out {sent}, final {finals}, updates {server.update_count()}")
        sys.stdout.flush()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
