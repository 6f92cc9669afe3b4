"""The test double's HTTP layer: a threaded HTTP/1.1 keep-alive server, TLS with client
certificates, requests parsed for the API handlers, connections counted."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import ssl
import threading
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import parse_qs, parse_qsl, urlsplit

from act.testing.panda.request import Request


class Owner(Protocol):
    """What the HTTP layer needs of the server it serves (a PanDA test server)."""

    _ssl: ssl.SSLContext | None
    _lock: threading.Lock
    _open: set[socket.socket]
    connections: int
    tls_failures: int

    def _handle(self, request: Request) -> tuple[int, str, str] | None: ...


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], handler: type[Handler], owner: Owner) -> None:
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


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    disable_nagle_algorithm = True
    server: Server

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
        request = Request(
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
