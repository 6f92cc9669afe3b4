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
Run it with ``python -m act.testing.panda --port N --jobs N``.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from act.testing.panda.ca import TestCA
from act.testing.panda.httpd import Handler, Server
from act.testing.panda.legacy_api import LegacyApi
from act.testing.panda.new_api import NewApi
from act.testing.panda.request import Request
from act.testing.panda.store import JobStore


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


class PandaTestServer(JobStore):
    """The PanDA TEST DOUBLE (see :mod:`act.testing.panda`). Use as a context manager or with
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
        super().__init__()
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
        self.requests: list[Received] = []
        self.connections = 0
        self.tls_failures = 0
        self.faults_served = 0
        self._open: set[socket.socket] = set()
        self._faults: deque[_Fault] = deque()
        # knobs, changeable at any time
        self.delay = 0.0
        self.accepted_tokens: set[str] | None = None
        self.record_requests = True
        self._port = port
        self._server: Server | None = None
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
        server = Server((self.host, self._port), Handler, self)
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

    def received(self, method: str | None = None) -> list[Received]:
        """The requests answered so far (of one method if given)."""
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

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

    def _handle(self, request: Request) -> tuple[int, str, str] | None:
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
        api = NewApi(self, request) if request.api == "new" else LegacyApi(self, request)
        answer = api.answer()
        return None if fault is not None else answer  # lose_reply: done, the answer is lost

    # shared job logic (under the lock)


def _fault_body(kind: str, status: int) -> str:
    if kind == "malformed":
        return "<html><body>Proxy Error: upstream sent an invalid response</body></html>"
    return f"ERROR : injected HTTP {status}"
