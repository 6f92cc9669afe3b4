"""The ``metrics`` daemon: act's Prometheus endpoint, ``http://<listen>:<port>/metrics``.

It serves two kinds of numbers:

* what act's processes counted themselves (:mod:`act.common.metrics`: transitions, PanDA and CE
  calls, daemon cycles). Under actd, every daemon keeps them in files under
  ``<root>/run/metrics`` and they are added up at each scrape (prometheus_client's
  multi-process mode); a lone ``act-daemon metrics`` serves its own process's only.
* what the database says, read once per cycle (``interval``, e.g. 15 s) into a snapshot, so that
  a scrape never waits for the database: jobs per layer, state, queue and CE
  (``act_jobs``), overdue PanDA reports and the heartbeat lag per queue, each CE's breaker,
  drain flag and consecutive failures, each daemon's live instances, last cycle and errors, and
  the database's size on disk (``act_database_size_bytes``);
* what the host says, read in the same cycle: free and total space of the file system holding
  ``root`` (``act_root_free_bytes``, ``act_root_size_bytes``) and the time left on each
  credential the configuration names, PanDA roles' proxies and tokens and CEs' proxies
  (``act_credential_expiry_seconds``, ``act_credential_usable``).

``act_metrics_snapshot_age_seconds`` and ``act_metrics_snapshot_errors_total`` show a snapshot
that could not be refreshed (database down) instead of silently serving old numbers.
``etc/prometheus/act-alerts.yml`` holds Prometheus alert rules on these metrics.

The server binds ``127.0.0.1`` by default: expose it through a reverse proxy, or set
``listen`` (e.g. ``0.0.0.0``) where the network is trusted. It answers ``GET /metrics`` only.
A port already in use is logged at each cycle (the daemon keeps refreshing and retries); it
does not stop the daemon.

The daemon reads every layer (PanDA reports, CE jobs and breakers, daemon processes), hence its
place in act.service; the HTTP server is :mod:`act.common.metrics_server`.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from datetime import datetime
from functools import partial

from prometheus_client.core import GaugeMetricFamily, Metric
from pydantic import Field
from sqlalchemy.engine import Connection

from act.arc.proxy import ProxyError, load_credential
from act.atlas.config import AtlasConfig
from act.atlas.credentials import credential_lifetimes
from act.atlas.report_backlog import overdue_by_queue
from act.common.config import Section
from act.common.daemon import Context, DaemonSpec
from act.common.db import Database
from act.common.job_counts import Counts, ce_counts_by_queue, panda_counts
from act.common.liveness import process_rows, process_status
from act.common.metrics_server import MetricsEndpoint
from act.common.timeutil import utcnow
from act.engine.breaker import CLOSED, HALF_OPEN, OPEN
from act.engine.queries import ces_shown

BREAKER_STATES = (CLOSED, OPEN, HALF_OPEN)


class MetricsOptions(Section):
    #: Address to bind; 127.0.0.1 keeps the endpoint local (put a reverse proxy in front).
    listen: str = Field("127.0.0.1", min_length=1)
    port: int = Field(9771, ge=1, le=65535)


# -- the database snapshot --------------------------------------------------------------------


def read_snapshot(
    conn: Connection, *, now: datetime, dead_after: float, daemons: Iterable[str]
) -> list[Metric]:
    """The database-derived metric families at ``now`` (one read transaction)."""
    panda = panda_counts(conn)
    return [
        _jobs(conn, panda),
        *_reports(conn, now, queues=panda),
        *_breakers(conn),
        *_daemons(conn, now=now, dead_after=dead_after, configured=daemons),
        _database_size(conn),
    ]


def _jobs(conn: Connection, panda: Counts) -> Metric:
    family = GaugeMetricFamily(
        "act_jobs",
        "Jobs in the database by layer (panda, ce), state, queue and CE (ce is empty for the "
        "PanDA layer and for CE jobs not yet assigned to a CE).",
        labels=["layer", "state", "queue", "ce"],
    )
    for queue, by_state in sorted(panda.items()):
        for state, count in sorted(by_state.items()):
            family.add_metric(["panda", state, queue, ""], count)
    for ce_queue, ce, ce_state, n in ce_counts_by_queue(conn):
        family.add_metric(["ce", ce_state, ce_queue or "", ce or ""], n)
    return family


def _reports(conn: Connection, now: datetime, *, queues: Iterable[str]) -> list[Metric]:
    lag = GaugeMetricFamily(
        "act_heartbeat_lag_seconds",
        "How late the most overdue PanDA report (heartbeat or final) of the queue is; 0 when "
        "none is overdue. PanDA declares a job lost after hours without a heartbeat.",
        labels=["queue"],
    )
    overdue = GaugeMetricFamily(
        "act_reports_overdue", "PanDA reports due now or earlier, per queue.", labels=["queue"]
    )
    by_queue = overdue_by_queue(conn, now)
    for queue in sorted(set(by_queue) | set(queues)):  # a queue with jobs but none overdue: 0
        found = by_queue.get(queue)
        lag.add_metric([queue], found.lag.total_seconds() if found else 0.0)
        overdue.add_metric([queue], found.overdue if found else 0)
    return [lag, overdue]


def _breakers(conn: Connection) -> list[Metric]:
    state = GaugeMetricFamily(
        "act_ce_breaker_state",
        "1 for the CE's current circuit-breaker state (closed, open, half_open; an operator's "
        "forced state wins), 0 for the others.",
        labels=["ce", "state"],
    )
    forced = GaugeMetricFamily(
        "act_ce_breaker_forced", "1 if an operator forced the CE's breaker.", labels=["ce"]
    )
    enabled = GaugeMetricFamily(
        "act_ce_enabled", "1 if the CE takes new jobs, 0 if drained by an operator.", labels=["ce"]
    )
    failures = GaugeMetricFamily(
        "act_ce_consecutive_failures",
        "The CE's consecutive failures (the breaker opens at engine.breaker.failures).",
        labels=["ce"],
    )
    for ce, row in sorted(ces_shown(conn).items()):
        current = row.breaker_forced or row.breaker
        for name in BREAKER_STATES:
            state.add_metric([ce, name], 1.0 if current == name else 0.0)
        forced.add_metric([ce], 1.0 if row.breaker_forced else 0.0)
        enabled.add_metric([ce], 1.0 if row.enabled else 0.0)
        failures.add_metric([ce], row.failures)
    return [state, forced, enabled, failures]


def _daemons(
    conn: Connection, *, now: datetime, dead_after: float, configured: Iterable[str]
) -> list[Metric]:
    up = GaugeMetricFamily(
        "act_daemon_up",
        "Live instances of the daemon (heartbeat within liveness.dead_after); 0 for a "
        "configured daemon with none.",
        labels=["daemon"],
    )
    age = GaugeMetricFamily(
        "act_daemon_last_cycle_age_seconds",
        "Seconds since the daemon's most recent cycle ended (any instance).",
        labels=["daemon"],
    )
    errors = GaugeMetricFamily(
        "act_daemon_errors",
        "Failed cycles recorded in the processes table for the daemon's instances still listed "
        'there (actctl processes); for a rate use act_daemon_cycles_total{outcome="error"}.',
        labels=["daemon"],
    )
    live: dict[str, int] = dict.fromkeys(configured, 0)
    last: dict[str, datetime] = {}
    failed: dict[str, int] = {}
    for row in process_rows(conn, include_stopped=True):
        role = str(row["role"])
        live.setdefault(role, 0)
        if process_status(row, dead_after=dead_after, now=now) == "live":
            live[role] += 1
        ended = row["last_cycle_ended_at"]
        if ended is not None and (role not in last or ended > last[role]):
            last[role] = ended
        failed[role] = failed.get(role, 0) + int(row["errors"])
    for role in sorted(live):
        up.add_metric([role], live[role])
        errors.add_metric([role], failed.get(role, 0))
        if role in last:
            age.add_metric([role], max((now - last[role]).total_seconds(), 0.0))
    return [up, age, errors]


def _database_size(conn: Connection) -> Metric:
    family = GaugeMetricFamily(
        "act_database_size_bytes",
        "The database's size on disk: SQLite's pages (the file without its WAL), PostgreSQL's "
        "pg_database_size, MariaDB's data and index length of the schema's tables.",
    )
    dialect = conn.dialect.name
    if dialect == "sqlite":
        pages = conn.exec_driver_sql("PRAGMA page_count").scalar_one()
        page_size = conn.exec_driver_sql("PRAGMA page_size").scalar_one()
        size = int(pages) * int(page_size)
    elif dialect == "postgresql":
        size = int(conn.exec_driver_sql("SELECT pg_database_size(current_database())").scalar_one())
    else:  # mysql / mariadb
        size = int(
            conn.exec_driver_sql(
                "SELECT COALESCE(SUM(data_length + index_length), 0) "
                "FROM information_schema.tables WHERE table_schema = DATABASE()"
            ).scalar_one()
        )
    family.add_metric([], size)
    return family


# -- what the host says -----------------------------------------------------------------------


def read_host(settings: AtlasConfig, *, now: datetime) -> list[Metric]:
    """The families read from the host: disk space under ``root``, credential lifetimes."""
    return [*_disk(settings.root), *_credentials(settings, now=now)]


def _disk(root: str) -> list[Metric]:
    free = GaugeMetricFamily(
        "act_root_free_bytes",
        "Bytes free to act on the file system holding root (database, spool, job directories, "
        "logs when under it).",
    )
    size = GaugeMetricFamily(
        "act_root_size_bytes", "Size in bytes of the file system holding root."
    )
    try:
        usage = shutil.disk_usage(root)
    except OSError:
        return [free, size]  # no samples: root is not there (yet)
    # What an unprivileged writer may use (statvfs f_bavail): disk_usage's free is that already.
    free.add_metric([], usage.free)
    size.add_metric([], usage.total)
    return [free, size]


def _credentials(settings: AtlasConfig, *, now: datetime) -> list[Metric]:
    labels = ["use", "name", "path"]
    expiry = GaugeMetricFamily(
        "act_credential_expiry_seconds",
        "Seconds left before the credential expires (negative once expired), per PanDA role "
        "(use=panda) and per CE with its own proxy (use=ce); absent when it has no expiry or "
        "cannot be read.",
        labels=labels,
    )
    usable = GaugeMetricFamily(
        "act_credential_usable",
        "1 if the credential can be read and has not expired, 0 if it is missing, unreadable, "
        "not private or expired (actctl panda shows why).",
        labels=labels,
    )
    for info in credential_lifetimes(settings.panda):
        key = ["panda", info.role, info.path]
        if info.remaining is not None:
            expiry.add_metric(key, info.remaining.total_seconds())
        usable.add_metric(key, 0.0 if info.problem else 1.0)
    for name, ce in sorted(settings.engine.ces.items()):
        if not ce.credential:
            continue
        key = ["ce", name, ce.credential]
        try:
            left = (load_credential(ce.credential).not_after - now).total_seconds()
        except ProxyError:
            usable.add_metric(key, 0.0)
            continue
        expiry.add_metric(key, left)
        usable.add_metric(key, 1.0 if left > 0 else 0.0)
    return [expiry, usable]


# -- the daemon -------------------------------------------------------------------------------


def read_families(db: Database, settings: AtlasConfig) -> list[Metric]:
    """Every family the snapshot holds: the database's (one read transaction), the host's."""
    now = utcnow()
    configured = [name for name, d in settings.daemons.items() if d.enabled]
    with db.read() as conn:
        families = read_snapshot(
            conn, now=now, dead_after=settings.liveness.dead_after, daemons=configured
        )
    return families + read_host(settings, now=now)


def run_once(ctx: Context[AtlasConfig]) -> bool:
    endpoint = ctx.cache.get("metrics_endpoint")
    if not isinstance(endpoint, MetricsEndpoint):
        endpoint = MetricsEndpoint(ctx.options.listen, ctx.options.port)
        ctx.cache["metrics_endpoint"] = endpoint
    try:
        endpoint.database.refresh(partial(read_families, ctx.db, ctx.settings))
    finally:
        endpoint.start(ctx.log)  # served even while the database is away: the age shows it
    return False


DAEMON = DaemonSpec(run_once=run_once, options=MetricsOptions, doc=__doc__ or "")
