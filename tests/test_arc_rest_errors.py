"""Whether a failed ARC REST call may have reached the CE (``CEUnavailable.maybe_sent``).

The submitter sends a batch to another CE at once only when the call certainly failed before the
CE saw it; otherwise the CE is asked first, so that no job runs twice. Each case here is a real
socket on 127.0.0.1 behaving as a broken CE would.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from act.arc.backend import ArcBackend
from act.arc.rest import ArcRest, JobResult
from act.engine.backend import CE, CEUnavailable, SubmitRequest
from act.engine.settings import CESettings, EngineSettings
from act.service.settings import Settings

Handler = Callable[[socket.socket], None]


@contextmanager
def serving(handler: Handler) -> Iterator[int]:
    """A TCP server on 127.0.0.1 running ``handler`` on each connection; yields its port."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conns.append(conn)
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        for conn in conns:
            conn.close()
        server.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def reply(status: str) -> Handler:
    def handle(conn: socket.socket) -> None:
        read_request(conn)
        body = b'{"msg": "x"}'
        conn.sendall(
            f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    return handle


def never_replies(conn: socket.socket) -> None:
    read_request(conn)  # takes the request, then keeps the connection open, silent


def hangs_up(conn: socket.socket) -> None:
    read_request(conn)
    conn.close()


def not_tls(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    conn.close()


def submit_error(url: str) -> CEUnavailable:
    client = ArcRest(url, name="ce1", version="1.0", timeout=1.0)
    try:
        with pytest.raises(CEUnavailable) as caught:
            client._request("POST", "/rest/1.0/jobs?action=new", data=b"&(executable=x)")
    finally:
        client.close()
    return caught.value


def test_a_refused_connection_sent_nothing() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    error = submit_error(f"http://127.0.0.1:{port}/arex")  # nothing listens there now
    assert not error.maybe_sent and "connection failed" in error.cause


def test_a_failed_tls_handshake_sent_nothing() -> None:
    with serving(not_tls) as port:
        error = submit_error(f"https://127.0.0.1:{port}/arex")
    assert not error.maybe_sent and "TLS failure" in error.cause


def test_a_reply_that_never_comes_may_follow_a_submission() -> None:
    with serving(never_replies) as port:
        error = submit_error(f"http://127.0.0.1:{port}/arex")
    assert error.maybe_sent and "timeout" in error.cause


def test_a_connection_closed_after_the_request_may_follow_a_submission() -> None:
    with serving(hangs_up) as port:
        error = submit_error(f"http://127.0.0.1:{port}/arex")
    assert error.maybe_sent and "connection failed" in error.cause


@pytest.mark.parametrize(
    ("status", "maybe_sent"),
    [
        ("500 Internal Server Error", True),
        ("503 Service Unavailable", True),
        ("401 Unauthorized", False),
        ("403 Forbidden", False),
        ("429 Too Many Requests", False),
    ],
)
def test_error_statuses(status: str, maybe_sent: bool) -> None:
    with serving(reply(status)) as port:
        error = submit_error(f"http://127.0.0.1:{port}/arex")
    assert error.maybe_sent is maybe_sent
    assert error.cause.startswith(f"HTTP {status.split(maxsplit=1)[0]} on POST")


class SecondCallRefused:
    """An ArcRest stand-in whose first submit call creates the jobs and whose second finds the
    connection refused (the CE went away between the xRSL and the ADL call of one batch)."""

    def __init__(self) -> None:
        self.created_calls = 0

    def submit(self, descriptions: list[str]) -> list[JobResult]:
        if self.created_calls:
            raise CEUnavailable("ce1", "connection failed: refused", maybe_sent=False)
        self.created_calls += 1
        return [
            JobResult(id=f"job{i}", code=201, reason="Created") for i in range(len(descriptions))
        ]


def test_a_batch_part_of_which_was_created_is_reported_as_maybe_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ce = CE("ce1", CESettings(backend="arc", url="https://localhost:1/arex", credential="x"))
    settings = Settings(root=str(tmp_path), engine=EngineSettings(ces={"ce1": ce.settings}))
    backend = ArcBackend(settings=settings, db=None, log=logging.getLogger("t"))
    client = SecondCallRefused()
    monkeypatch.setattr(backend, "client", lambda _ce: client)
    monkeypatch.setattr(backend, "delegation", lambda _ce, replace=None: "deleg1")
    xrsl_job = SubmitRequest(1, "a" * 32, '&(executable="run.sh")(jobname="j1")')
    adl_job = SubmitRequest(
        2,
        "b" * 32,
        "<ActivityDescription xmlns='http://www.eu-emi.eu/es/2010/12/adl'>"
        "<ActivityIdentification><Name>j2</Name></ActivityIdentification>"
        "<Application><Executable><Path>run.sh</Path></Executable></Application>"
        "</ActivityDescription>",
    )
    with pytest.raises(CEUnavailable) as caught:
        backend.submit(ce, [xrsl_job, adl_job])
    # the refusal alone would say "nothing sent", but the xRSL call created a job
    assert caught.value.maybe_sent and "refused" in caught.value.cause
    client.created_calls = 1
    with pytest.raises(CEUnavailable) as again:
        backend.submit(ce, [adl_job])  # nothing created in this call: not sent
    assert not again.value.maybe_sent
