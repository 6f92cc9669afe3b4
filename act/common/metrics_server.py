"""The HTTP side of act's Prometheus endpoint: a WSGI server thread serving ``GET /metrics``.

What it serves: the counters of act's processes (:mod:`act.common.metrics`; added up over actd's
daemons in prometheus_client's multi-process mode, else this process's own) and a
:class:`DatabaseCollector` holding the last snapshot of database-derived families, which the
metrics daemon (:mod:`act.service.metrics_daemon`) refreshes each cycle so that a scrape never
waits for the database.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from act.common import metrics

PATH = "/metrics"


@dataclass(frozen=True)
class Snapshot:
    families: list[Metric]
    taken: float  # time.monotonic()


class DatabaseCollector(Collector):
    """Serves the last snapshot; :meth:`refresh` replaces it (the daemon's cycle)."""

    def __init__(self) -> None:
        self.snapshot: Snapshot | None = None
        self.errors = 0
        self._lock = threading.Lock()

    def refresh(self, read: Callable[[], list[Metric]]) -> None:
        try:
            families = read()
        except Exception:
            with self._lock:
                self.errors += 1
            raise
        with self._lock:
            self.snapshot = Snapshot(families, time.monotonic())

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot, errors = self.snapshot, self.errors
        age = GaugeMetricFamily(
            "act_metrics_snapshot_age_seconds",
            "Seconds since the database-derived metrics were read (absent before the first read).",
        )
        if snapshot is not None:
            age.add_metric([], time.monotonic() - snapshot.taken)
            yield from snapshot.families
        yield age
        yield CounterMetricFamily(
            "act_metrics_snapshot_errors",
            "Failed reads of the database-derived metrics (database unreachable, ...).",
            value=errors,
        )


class _ThisProcess(Collector):
    """The metrics of this process (without PROMETHEUS_MULTIPROC_DIR: no files to add up)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def build_registry(database: DatabaseCollector) -> CollectorRegistry:
    """What the endpoint serves: every process's counters (or this one's) and the snapshot."""
    registry = CollectorRegistry()
    directory = metrics.multiproc_dir_of_env()
    if directory is not None:
        MultiProcessCollector(registry, str(directory))  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(database)
    return registry


# -- the HTTP server --------------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one every 15-60 s)."""


class MetricsEndpoint:
    """The HTTP server (a thread) and the snapshot it serves; kept in ``ctx.cache``."""

    def __init__(self, listen: str, port: int) -> None:
        self.listen, self.port = listen, port
        self.database = DatabaseCollector()
        self.registry = build_registry(self.database)
        self.server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        host = f"[{self.listen}]" if ":" in self.listen else self.listen
        return f"http://{host}:{self.port}{PATH}"

    def start(self, log: logging.Logger) -> bool:
        """Listen if not yet listening; False (logged) when the address cannot be bound."""
        if self.server is not None:
            return True
        app = _only_metrics(make_wsgi_app(self.registry))
        server_class = _Server6 if ":" in self.listen else _Server
        try:
            server = make_server(
                self.listen, self.port, app, server_class, handler_class=_QuietHandler
            )
        except OSError as error:
            log.error(
                "cannot serve metrics on %s:%d (%s): is the port in use? Set "
                "daemons.metrics.options.port (or listen); retrying every cycle",
                self.listen,
                self.port,
                error.strerror or error,
            )
            return False
        self.server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("serving metrics on %s", self.address)
        return True

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


def _only_metrics(app: Callable[..., Any]) -> Callable[..., Any]:
    def routed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"act serves its metrics on {PATH}\n".encode()]
        return app(environ, start_response)

    return routed
