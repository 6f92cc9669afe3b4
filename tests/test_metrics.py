"""Prometheus metrics: what each process counts, the database snapshot, the endpoint, and the
multi-process aggregation under a real actd."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Connection

from act.atlas.panda_client import PandaReplyError, PandaTransportError
from act.common import liveness, metrics, migrate
from act.common.daemon import run_daemon
from act.common.db import Database
from act.common.metrics_server import DatabaseCollector, build_registry
from act.common.schema import ces, panda_jobs, processes
from act.common.states import Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs, transition
from act.engine.backend import CE, CEUnavailable, JobStatus
from act.engine.measured import MeasuredBackend
from act.engine.runtime import EnginePool
from act.engine.settings import CESettings
from act.service.daemons import resolve
from act.service.metrics_daemon import read_snapshot
from act.service.settings import Settings
from act.testing.panda import PandaTestServer
from tests.support.jobs import ce_row, panda_row, path_to
from tests.support.panda import client_for
from tests.support.procs import Actd, wait_for, write_config

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "etc" / "grafana" / "act.json"
LOG = logging.getLogger("test.metrics")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _value(name: str, **labels: str) -> float:
    """This process's current value of a sample (0 if it does not exist yet)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return str(reply.read().decode())


def _walk(conn: Connection, layer: Layer, ids: list[int], state: str) -> None:
    """Move freshly created jobs along allowed edges to ``state``."""
    for edge in path_to(layer, state)[1:]:
        assert edge.from_state is not None
        transition(conn, layer, ids, edge.from_state, edge.to_state, actor=min(edge.actors))


def _seed(conn: Connection, layer: Layer, state: str, rows: Sequence[dict[str, Any]]) -> list[int]:
    first = path_to(layer, state)[0]
    ids = create_jobs(conn, layer, list(rows), first.to_state, actor=min(first.actors))
    _walk(conn, layer, ids, state)
    return ids


# -- what each process counts --------------------------------------------------------------------


def test_transition_counts_the_jobs_that_moved(sqlite_db: Database) -> None:
    moves = {
        "layer": "panda",
        "from_state": "received",
        "to_state": "queued",
        "actor": "translator",
    }
    created = {"layer": "panda", "from_state": "", "to_state": "received", "actor": "operator"}
    before = _value("act_transitions_total", **moves)
    before_created = _value("act_transitions_total", **created)

    def work(conn: Connection) -> tuple[list[int], list[int]]:
        ids = create_jobs(
            conn, Layer.PANDA, [panda_row(i) for i in (1, 2, 3)], "received", actor=Actor.OPERATOR
        )
        moved = transition(
            conn, Layer.PANDA, [ids[0], ids[1], 10**9], "received", "queued", actor=Actor.TRANSLATOR
        )
        again = transition(conn, Layer.PANDA, ids[:2], "received", "queued", actor=Actor.TRANSLATOR)
        return moved, again

    moved, again = sqlite_db.run(work)
    assert len(moved) == 2 and again == []
    assert _value("act_transitions_total", **moves) - before == 2
    assert _value("act_transitions_total", **created) - before_created == 3


def test_panda_calls_record_latency_and_the_error_kind() -> None:
    method = {"method": "get_job_status"}

    def count(outcome: str) -> float:
        return _value("act_panda_requests_total", **method, outcome=outcome)

    before = {o: count(o) for o in ("ok", "http_5xx", "bad_reply", "connection")}
    observed = _value("act_panda_request_seconds_count", **method)
    with PandaTestServer() as server:
        client = client_for(server, retries=0)
        assert client.get_job_status([1]) == {1: "notfound"}
        server.inject("http", status=500)
        with pytest.raises(PandaTransportError):
            client.get_job_status([1])
        server.inject("malformed", status=200)
        with pytest.raises(PandaReplyError):
            client.get_job_status([1])
        client.close()
        gone = client_for(server, retries=0, url=f"http://127.0.0.1:{_free_port()}")
        with pytest.raises(PandaTransportError):
            gone.get_job_status([1])
        gone.close()
    assert {o: count(o) - before[o] for o in before} == {
        "ok": 1,
        "http_5xx": 1,
        "bad_reply": 1,
        "connection": 1,
    }
    assert _value("act_panda_request_seconds_count", **method) - observed == 4
    assert _value("act_panda_request_seconds_sum", **method) > 0


class _Flaky:
    """A back end whose status call answers, fails as a whole, or breaks, as told."""

    def __init__(self) -> None:
        self.next: Exception | None = None

    def limits(self, ce: CE) -> Any:
        raise NotImplementedError

    def status(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, JobStatus | None]:
        if self.next is not None:
            raise self.next
        return dict.fromkeys(ce_job_ids)

    def close(self) -> None:
        pass


def test_ce_calls_record_their_outcome() -> None:
    ce = CE("ce-measured", CESettings.model_validate({"backend": "local"}))
    inner = _Flaky()
    backend = MeasuredBackend(inner, "flaky")  # type: ignore[arg-type]

    def count(outcome: str) -> float:
        labels = {"backend": "flaky", "ce": ce.name, "operation": "status", "outcome": outcome}
        return _value("act_ce_requests_total", **labels)

    assert backend.status(ce, ["a"]) == {"a": None}
    inner.next = CEUnavailable(ce.name, "connection refused")
    with pytest.raises(CEUnavailable):
        backend.status(ce, ["a"])
    inner.next = ValueError("a bug")
    with pytest.raises(ValueError):
        backend.status(ce, ["a"])
    assert (count("ok"), count("unavailable"), count("error")) == (1, 1, 1)
    assert _value("act_ce_request_seconds_count", backend="flaky", operation="status") == 3


def test_the_engine_gets_its_back_ends_measured(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {"root": str(tmp_path), "engine": {"ces": {"local-m": {"backend": "local"}}}}
    )
    engines = EnginePool(settings, None, LOG)
    try:
        ce = engines.ce("local-m")
        backend = engines.backend(ce)
        assert isinstance(backend, MeasuredBackend)
        backend.status(ce, [])
        labels = {"backend": "local", "ce": "local-m", "operation": "status", "outcome": "ok"}
        assert _value("act_ce_requests_total", **labels) == 1
    finally:
        engines.close()


# -- the database snapshot, on every backend ----------------------------------------------------


def test_the_database_snapshot_gives_exact_values(db: Database) -> None:
    now = utcnow().replace(microsecond=0)

    def seed(conn: Connection) -> None:
        q1 = _seed(conn, Layer.PANDA, "running", [panda_row(i, "Q1") for i in range(1, 4)])
        _seed(conn, Layer.PANDA, "queued", [panda_row(4, "Q1")])
        q2 = _seed(conn, Layer.PANDA, "running", [panda_row(5, "Q2"), panda_row(6, "Q2")])
        _seed(conn, Layer.PANDA, "received", [panda_row(7, "Q3")])
        # Reports: two of Q1 overdue (the older by 120 s), one of Q2 by 30 s, one not yet due.
        due = {q1[0]: 120, q1[1]: 45, q2[0]: 30, q2[1]: -600}
        for job_id, late in due.items():
            conn.execute(
                sa.update(panda_jobs)
                .where(panda_jobs.c.id == job_id)
                .values(next_report_at=now - timedelta(seconds=late))
            )
        rows = [
            {**ce_row("ce1"), "queue": "Q1"},
            {**ce_row("ce1"), "queue": "Q1"},
            {**ce_row("ce2"), "queue": "Q2"},
        ]
        _seed(conn, Layer.CE, "running", rows)
        _seed(conn, Layer.CE, "tosubmit", [{**ce_row("ce1"), "ce_name": None, "queue": "Q1"}])
        for endpoint, breaker, forced, failures, enabled in (
            ("ce1", "open", None, 5, True),
            ("ce2", "closed", None, 1, False),
            ("ce3", "closed", "open", 0, True),
        ):
            conn.execute(
                sa.insert(ces).values(
                    endpoint=endpoint,
                    backend="arc",
                    updated_at=now,
                    breaker=breaker,
                    breaker_forced=forced,
                    failures=failures,
                    enabled=enabled,
                )
            )
        liveness.register(conn, "janitor", "live", "host", 1)
        liveness.record_cycle(
            conn,
            role="janitor",
            instance="live",
            started=now - timedelta(seconds=6),
            ended=now - timedelta(seconds=5),
            error="Traceback ...",
        )
        liveness.register(conn, "janitor", "dead", "host", 2)
        liveness.register(conn, "poller", "dead", "host", 3)
        conn.execute(
            sa.update(processes)
            .where(processes.c.instance == "dead")
            .values(heartbeat_at=now - timedelta(seconds=1000), errors=2)
        )

    db.run(seed)
    collector = DatabaseCollector()

    def read() -> list[Any]:
        with db.read() as conn:
            return read_snapshot(
                conn, now=now, dead_after=60.0, daemons=["janitor", "poller", "submitter"]
            )

    collector.refresh(read)
    registry = build_registry(collector)
    samples = _parse(generate_latest(registry).decode())

    jobs = {
        dict(labels)["layer"]
        + " "
        + " ".join(dict(labels)[k] for k in ("state", "queue", "ce")): value
        for (name, labels), value in samples.items()
        if name == "act_jobs"
    }
    assert jobs == {
        "panda running Q1 ": 3,
        "panda queued Q1 ": 1,
        "panda running Q2 ": 2,
        "panda received Q3 ": 1,
        "ce running Q1 ce1": 2,
        "ce running Q2 ce2": 1,
        "ce tosubmit Q1 ": 1,
    }
    for queue, (lag, overdue) in {"Q1": (120, 2), "Q2": (30, 1), "Q3": (0, 0)}.items():
        assert _get(samples, "act_heartbeat_lag_seconds", queue=queue) == lag
        assert _get(samples, "act_reports_overdue", queue=queue) == overdue
    breakers = {
        (dict(labels)["ce"], dict(labels)["state"]): value
        for (name, labels), value in samples.items()
        if name == "act_ce_breaker_state"
    }
    assert {key for key, value in breakers.items() if value == 1} == {
        ("ce1", "open"),
        ("ce2", "closed"),
        ("ce3", "open"),
    }
    assert len(breakers) == 9 and sum(breakers.values()) == 3
    assert [_get(samples, "act_ce_breaker_forced", ce=c) for c in ("ce1", "ce2", "ce3")] == [
        0,
        0,
        1,
    ]
    assert [_get(samples, "act_ce_enabled", ce=c) for c in ("ce1", "ce2", "ce3")] == [1, 0, 1]
    assert [_get(samples, "act_ce_consecutive_failures", ce=c) for c in ("ce1", "ce2")] == [5, 1]
    assert _get(samples, "act_daemon_up", daemon="janitor") == 1
    assert _get(samples, "act_daemon_up", daemon="poller") == 0
    assert _get(samples, "act_daemon_up", daemon="submitter") == 0  # configured, never started
    assert _get(samples, "act_daemon_last_cycle_age_seconds", daemon="janitor") == 5
    assert _get(samples, "act_daemon_last_cycle_age_seconds", daemon="poller") is None
    assert _get(samples, "act_daemon_errors", daemon="janitor") == 3  # 1 live + 2 dead
    assert _get(samples, "act_metrics_snapshot_errors_total") == 0
    age = _get(samples, "act_metrics_snapshot_age_seconds")
    assert age is not None and 0 <= age < 5


def test_a_failed_snapshot_keeps_the_old_one_and_counts_the_error() -> None:
    collector = DatabaseCollector()

    def broken() -> list[Any]:
        raise sa.exc.OperationalError("SELECT 1", {}, Exception("server has gone away"))

    with pytest.raises(sa.exc.OperationalError):
        collector.refresh(broken)
    samples = _parse(generate_latest(build_registry(collector)).decode())
    assert _get(samples, "act_metrics_snapshot_errors_total") == 1
    assert _get(samples, "act_metrics_snapshot_age_seconds") is None  # never read: no age


# -- the endpoint, in this process --------------------------------------------------------------


class _Running:
    """A metrics daemon running in a thread of this process against an SQLite database."""

    def __init__(self, root: Path, port: int, *, interval: float = 0.1) -> None:
        database = Database(f"sqlite:///{root / 'act.db'}")
        migrate.upgrade(database)
        self.db = database
        self.settings = Settings.model_validate(
            {
                "root": str(root),
                "daemons": {"metrics": {"interval": interval, "options": {"port": port}}},
            }
        )
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=run_daemon,
            args=(resolve("metrics"), self.settings, "metrics"),
            kwargs={"stop": self.stop, "db": database},
        )
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=30)
        self.db.dispose()


@pytest.fixture
def endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[int]:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    port = _free_port()
    running = _Running(tmp_path, port)
    try:
        wait_for(lambda: "act_jobs" in _try_scrape(port), what="the metrics endpoint")
        yield port
    finally:
        running.close()


def _try_scrape(port: int) -> str:
    try:
        return _scrape(port)
    except OSError:
        return ""


def test_the_endpoint_serves_metrics_only_on_its_path(endpoint: int) -> None:
    text = _scrape(endpoint)
    samples = _parse(text)
    assert _get(samples, "act_daemon_up", daemon="metrics") == 1
    assert (_get(samples, "act_daemon_cycles_total", daemon="metrics", outcome="ok") or 0) >= 1
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"http://127.0.0.1:{endpoint}/other", timeout=5)
    assert error.value.code == 404


def _exported_names(text: str) -> set[str]:
    """Every sample name the scrape can contain, from its TYPE lines."""
    names: set[str] = set()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        name, kind = match.groups()
        if name.endswith("_created"):  # creation times (in-process only): not act's own
            continue
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def _dashboard_exprs() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            exprs.append(target["expr"])
    for variable in board["templating"]["list"]:
        if variable.get("type") == "query":
            query = variable["query"]
            exprs.append(query["query"] if isinstance(query, dict) else query)
    return exprs


def test_every_metric_the_dashboard_uses_is_exported(endpoint: int) -> None:
    exported = _exported_names(_scrape(endpoint))
    exprs = _dashboard_exprs()
    assert len(exprs) >= 15
    used = {name for expr in exprs for name in re.findall(r"\bact_[a-z0-9_]+\b", expr)}
    assert used, "the dashboard queries no act metric"
    assert sorted(used - exported) == []
    # Every family act exports has a place on the dashboard (histograms by their _bucket).
    families = {n for n in exported if n.startswith("act_")}
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used} | used
    missing = {
        n
        for n in families
        if n not in shown and re.sub(r"_(bucket|sum|count)$", "", n) not in shown
    }
    assert sorted(missing) == []


def test_the_dashboard_is_importable() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 36
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"queue", "ce"} <= variables
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_a_port_in_use_is_logged_and_retried_without_stopping_the_daemon(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    caplog.set_level(logging.INFO, logger="act.metrics")
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = int(blocker.getsockname()[1])
    running = _Running(tmp_path, port)
    try:
        message = f"cannot serve metrics on 127.0.0.1:{port}"
        wait_for(lambda: caplog.text.count(message) >= 2, what="the error, twice")
        assert "is the port in use?" in caplog.text
        assert running.thread.is_alive()
        blocker.close()
        wait_for(lambda: "act_jobs" in _try_scrape(port), what="serving once the port is free")
        assert f"serving metrics on http://127.0.0.1:{port}/metrics" in caplog.text
    finally:
        blocker.close()
        running.close()


# -- several processes under actd ---------------------------------------------------------------


def test_a_dead_process_keeps_its_counters_and_loses_its_live_gauges(tmp_path: Path) -> None:
    directory = metrics.multiproc_dir(tmp_path)
    (directory / "old").mkdir(parents=True)
    metrics.reset_multiproc_dir(directory)
    assert list(directory.iterdir()) == []
    for name in (
        "counter_123.db",
        "histogram_123.db",
        "gauge_livesum_123.db",
        "gauge_liveall_9.db",
    ):
        (directory / name).write_bytes(b"")
    metrics.process_gone(123, directory)
    assert sorted(p.name for p in directory.iterdir()) == [
        "counter_123.db",
        "gauge_liveall_9.db",
        "histogram_123.db",
    ]


@pytest.mark.slow
def test_actd_adds_up_the_metrics_of_its_daemons_and_keeps_a_killed_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    database = Database(f"sqlite:///{root / 'act.db'}")
    migrate.upgrade(database)
    database.dispose()
    stale = root / "run" / "metrics" / "counter_999999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by an earlier actd")
    port = _free_port()
    config = {
        "root": str(root),
        "liveness": {"heartbeat_interval": 0.2, "dead_after": 2.0},
        "supervisor": {"stop_timeout": 10.0, "restart_delay": 0.2},
        "daemons": {
            "janitor": {"interval": 0.2},
            "metrics": {"interval": 0.2, "options": {"port": port}},
        },
    }
    actd = Actd(root, write_config(tmp_path / "act.yaml", config))
    try:

        def scraped() -> Samples:
            text = _try_scrape(port)
            return _parse(text) if text else {}

        def cycles(samples: Samples, daemon: str) -> float:
            return _get(samples, "act_daemon_cycles_total", daemon=daemon, outcome="ok") or 0.0

        def both_counted() -> Samples | None:
            samples = scraped()
            ok = (
                cycles(samples, "janitor") >= 3
                and cycles(samples, "metrics") >= 1
                and _get(samples, "act_daemon_up", daemon="janitor") == 1
            )
            return samples if ok else None

        first = wait_for(both_counted, timeout=30, what="cycles of janitor and metrics")
        assert not stale.exists()  # actd started from an empty metrics directory
        files = {p.name for p in (root / "run" / "metrics").iterdir()}
        janitor_pid = actd.child_pids("janitor")[0]
        metrics_pid = actd.child_pids("metrics")[0]
        assert any(str(janitor_pid) in name for name in files)
        assert any(str(metrics_pid) in name for name in files)
        assert _get(first, "act_daemon_cycle_seconds_count", daemon="janitor") is not None

        before = cycles(scraped(), "janitor")
        os.kill(janitor_pid, signal.SIGKILL)
        wait_for(
            lambda: actd.child_pids("janitor").get(0, janitor_pid) != janitor_pid,
            timeout=30,
            what="the janitor restarted",
        )
        # The killed process's counts stay in the sum; the new process adds its own.
        wait_for(lambda: cycles(scraped(), "janitor") > before + 2, timeout=30, what="more cycles")
        wait_for(
            lambda: _get(scraped(), "act_daemon_up", daemon="janitor") == 1,
            timeout=30,
            what="one live janitor again",
        )
        assert actd.stop() == 0
    finally:
        if actd.proc.poll() is None:
            actd.proc.kill()
            actd.proc.wait()
