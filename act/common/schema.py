"""The job store's tables (SQLAlchemy Core), identical on SQLite, MariaDB/MySQL and PostgreSQL.

The Alembic migrations in ``act/common/migrations`` build exactly this schema; a test compares the
two on every backend. Conventions:

* every time column is :class:`UTCDateTime`: aware UTC in Python, naive UTC with microseconds in
  the database (MariaDB ``DATETIME(6)``), so comparisons are the same on every backend;
* state columns are written only by :mod:`act.common.transitions`;
* ``lease_owner``/``lease_expires`` are the claim columns used by :mod:`act.common.claims`;
* every query a daemon runs is served by one of the indexes below.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect

from act.common.timeutil import as_utc


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes stored as naive UTC with microsecond precision."""

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return as_utc(value).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


#: Big integer primary keys; SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
#: Job specs and descriptions can be large: MEDIUMTEXT (16 MB) on MariaDB/MySQL.
LongText = sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")

STATE_LEN = 32
NAME_LEN = 128
ENDPOINT_LEN = 255

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

_MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _lease_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("lease_owner", sa.String(NAME_LEN), nullable=True),
        sa.Column("lease_expires", UTCDateTime(), nullable=True),
    ]


def _operator_columns() -> list[sa.Column[Any]]:
    """Why and by whom runtime state was last changed (operators use actctl)."""
    return [
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.String(NAME_LEN), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


def _state_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("state", sa.String(STATE_LEN), nullable=False),
        sa.Column("state_changed_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    ]


panda_jobs = sa.Table(
    "panda_jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("panda_id", sa.BigInteger(), nullable=False),
    sa.Column("queue", sa.String(NAME_LEN), nullable=False),
    sa.Column("attempt", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("prod_source_label", sa.String(STATE_LEN), nullable=True),
    # The job spec exactly as PanDA sent it, and how it was encoded ("json" or "form").
    sa.Column("spec", LongText, nullable=False),
    sa.Column("spec_format", sa.String(16), nullable=False),
    *_state_columns(),
    # What PanDA was last told, when, and when the next report is due (NULL: nothing to report).
    sa.Column("panda_status", sa.String(STATE_LEN), nullable=True),
    sa.Column("panda_reported_at", UTCDateTime(), nullable=True),
    sa.Column("next_report_at", UTCDateTime(), nullable=True),
    # The last command PanDA answered with (tobekilled, badattemptnr, alreadydone, ...).
    sa.Column("panda_command", sa.String(STATE_LEN), nullable=True),
    sa.Column("panda_command_at", UTCDateTime(), nullable=True),
    sa.Column("error_code", sa.Integer(), nullable=True),
    sa.Column("error_text", sa.Text(), nullable=True),
    # Since 0002. Fields for the next report (JSON), e.g. the final one the validator built.
    sa.Column("report", LongText, nullable=True),
    sa.Column("report_failures", sa.Integer(), nullable=False, server_default="0"),
    # The queue's mode when the job was fetched: no PanDA calls, final report written to a file.
    sa.Column("heartbeat_less", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Column("access_point", sa.Text(), nullable=True),
    sa.Column("log_url", sa.Text(), nullable=True),  # GTAG: where the pilot log is published
    sa.Column("event_ranges", LongText, nullable=True),  # JSON, fetched before submission
    # Since 0003. The validator: when it looks at the job next (NULL: at once), how often it was
    # put off (storage unreachable or switched down) and why, and when the logs were published.
    sa.Column("validate_after", UTCDateTime(), nullable=True),
    sa.Column("validation_deferrals", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("validation_note", sa.Text(), nullable=True),
    sa.Column("logs_published_at", UTCDateTime(), nullable=True),
    # Since 0005. When a final report was last sent: while set, its answer may have been lost
    # (killed process, database outage, dropped reply), so PanDA is asked before sending again.
    sa.Column("final_sent_at", UTCDateTime(), nullable=True),
    *_lease_columns(),
    sa.UniqueConstraint("panda_id"),
    # Claims filter on state (and queue) and take the oldest first: these give rows in id order.
    sa.Index(None, "state", "id"),
    sa.Index(None, "queue", "state", "id"),
    sa.Index(None, "next_report_at"),
    sa.Index(None, "state", "next_report_at"),  # the propagator's due reports (0006)
    sa.Index(None, "lease_owner"),
    **_MYSQL,
)

ce_jobs = sa.Table(
    "ce_jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "panda_job_id",
        BigId,
        sa.ForeignKey("panda_jobs.id", ondelete="RESTRICT"),
        nullable=True,
    ),
    sa.Column("backend", sa.String(16), nullable=False),
    sa.Column("ce_name", sa.String(ENDPOINT_LEN), nullable=True),
    sa.Column("ce_job_id", sa.String(ENDPOINT_LEN), nullable=True),
    sa.Column("description", LongText, nullable=True),
    *_state_columns(),
    sa.Column("ce_state", sa.String(NAME_LEN), nullable=True),
    sa.Column("attempts_left", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("exit_code", sa.Integer(), nullable=True),
    sa.Column("error_text", sa.Text(), nullable=True),
    # Resources used, as the CE reports them.
    sa.Column("worker_node", sa.String(ENDPOINT_LEN), nullable=True),
    sa.Column("cpu_seconds", sa.BigInteger(), nullable=True),
    sa.Column("wall_seconds", sa.BigInteger(), nullable=True),
    sa.Column("max_rss_kb", sa.BigInteger(), nullable=True),
    sa.Column("submitted_at", UTCDateTime(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    # Since 0002. ``ce_name`` holds the name of a CE under ``ces:`` in the config.
    sa.Column("panda_id", sa.BigInteger(), nullable=True),  # for log lines, without a join
    sa.Column("queue", sa.String(NAME_LEN), nullable=True),
    # The CEs this job may go to (space-separated names) and those that refused it.
    sa.Column("candidates", sa.Text(), nullable=True),
    sa.Column("excluded", sa.Text(), nullable=True),
    # Unique per submission; the back end puts it in the CE job's name so that a job submitted
    # by a process killed before its commit is found again (reconciliation), never sent twice.
    sa.Column("token", sa.String(64), nullable=True),
    sa.Column("submissions", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("input_dir", sa.Text(), nullable=True),
    sa.Column("output_dir", sa.Text(), nullable=True),
    sa.Column("next_check_at", UTCDateTime(), nullable=True),  # when the poller looks next
    sa.Column("last_seen_at", UTCDateTime(), nullable=True),  # the CE last knew the job
    *_lease_columns(),
    sa.UniqueConstraint("token"),
    sa.Index(None, "state", "id"),
    sa.Index(None, "ce_name", "state", "id"),
    sa.Index(None, "queue", "ce_name", "state"),  # the metrics daemon's counts (0006)
    sa.Index(None, "next_check_at"),
    sa.Index(None, "panda_job_id"),
    sa.Index(None, "backend", "ce_name", "ce_job_id"),
    sa.Index(None, "lease_owner"),
    **_MYSQL,
)

#: One row per state change of either layer; written in the transaction of the change.
transitions = sa.Table(
    "transitions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("layer", sa.String(16), nullable=False),
    sa.Column("job_id", sa.BigInteger(), nullable=False),
    sa.Column("from_state", sa.String(STATE_LEN), nullable=True),
    sa.Column("to_state", sa.String(STATE_LEN), nullable=False),
    sa.Column("actor", sa.String(NAME_LEN), nullable=False),
    sa.Column("reason", sa.Text(), nullable=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Index(None, "layer", "job_id"),
    sa.Index(None, "at"),
    **_MYSQL,
)

#: Liveness of every daemon process: one row per (role, instance).
processes = sa.Table(
    "processes",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("role", sa.String(NAME_LEN), nullable=False),
    sa.Column("instance", sa.String(NAME_LEN), nullable=False),
    sa.Column("host", sa.String(ENDPOINT_LEN), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
    sa.Column("stopped_at", UTCDateTime(), nullable=True),
    sa.Column("cycles", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("errors", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("last_cycle_started_at", UTCDateTime(), nullable=True),
    sa.Column("last_cycle_ended_at", UTCDateTime(), nullable=True),
    sa.Column("last_cycle_seconds", sa.Float(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_error_at", UTCDateTime(), nullable=True),
    sa.UniqueConstraint("role", "instance"),
    sa.Index(None, "role", "heartbeat_at"),  # the live instances of a role
    sa.Index(None, "heartbeat_at"),  # pruning
    **_MYSQL,
)

#: Operator-controlled runtime state of each PanDA queue.
queues = sa.Table(
    "queues",
    metadata,
    sa.Column("name", sa.String(NAME_LEN), primary_key=True),
    sa.Column("max_jobs", sa.Integer(), nullable=True),
    sa.Column("max_queued", sa.Integer(), nullable=True),
    *_operator_columns(),
    **_MYSQL,
)

#: Operator-controlled runtime state of each compute element.
ces = sa.Table(
    "ces",
    metadata,
    sa.Column("name", sa.String(ENDPOINT_LEN), primary_key=True),  # under ces: in the config
    sa.Column("backend", sa.String(16), nullable=False),
    sa.Column("max_queued", sa.Integer(), nullable=True),
    sa.Column("max_running", sa.Integer(), nullable=True),
    *_operator_columns(),
    # Since 0002: the circuit breaker (closed, open, half_open) and an operator's override.
    sa.Column("breaker", sa.String(16), nullable=False, server_default="closed"),
    sa.Column("breaker_forced", sa.String(16), nullable=True),
    sa.Column("failures", sa.Integer(), nullable=False, server_default="0"),  # consecutive
    sa.Column("opened_at", UTCDateTime(), nullable=True),
    sa.Column("probe_job_id", sa.BigInteger(), nullable=True),
    sa.Column("probe_at", UTCDateTime(), nullable=True),
    sa.Column("last_submit_at", UTCDateTime(), nullable=True),  # spacing between submissions
    sa.Column("success_score", sa.Float(), nullable=True),  # recent success, for weighting
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_error_at", UTCDateTime(), nullable=True),
    **_MYSQL,
)

#: Since 0002. One proxy delegation per (credential, CE), shared by every process.
delegations = sa.Table(
    "delegations",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("credential", sa.String(ENDPOINT_LEN), nullable=False),
    sa.Column("ce", sa.String(ENDPOINT_LEN), nullable=False),
    sa.Column("delegation_id", sa.String(ENDPOINT_LEN), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("credential", "ce"),
    **_MYSQL,
)

#: Since 0003. Storage endpoints the validator checks outputs on (``root://host:port``, ...): an
#: operator's down switch (``enabled`` false: the validator defers jobs with files there) and the
#: last outcome of a check.
storage_endpoints = sa.Table(
    "storage_endpoints",
    metadata,
    sa.Column("endpoint", sa.String(ENDPOINT_LEN), primary_key=True),
    *_operator_columns(),
    sa.Column("last_ok_at", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.Text(), nullable=True),
    sa.Column("last_error_at", UTCDateTime(), nullable=True),
    **_MYSQL,
)

#: Since 0004. What operators changed through actctl, who, when and why: one row per command
#: that changes something (jobs killed or resubmitted, a queue or CE switched, storage marked
#: down...). ``target`` names what was changed (``queue:X``, ``ce:X``, ``job:PANDA_ID``,
#: ``storage:X``); ``details`` is JSON (filters used, ids touched, counts).
operator_actions = sa.Table(
    "operator_actions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("who", sa.String(NAME_LEN), nullable=False),
    sa.Column("command", sa.String(NAME_LEN), nullable=False),
    sa.Column("target", sa.String(ENDPOINT_LEN), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("details", LongText, nullable=True),
    sa.Index("ix_operator_actions_at", "at"),
    sa.Index("ix_operator_actions_target", "target"),
    **_MYSQL,
)

#: Since 0008. Retention's archive (:mod:`act.atlas.retention`): one row per PanDA job whose
#: final report PanDA accepted and whose window passed, kept when its ``panda_jobs``,
#: ``ce_jobs`` and ``transitions`` rows are deleted. ``ce_names``: the CEs it was submitted to
#: (space-separated, in submission order); ``attempt``: PanDA's attempt number;
#: ``ce_submissions``: CE submissions in all; ``ended_at``: the last CE job's end;
#: ``reported_at``: when PanDA accepted the final report; ``state_changed_at``: when the job
#: became final (the window counts from there).
archived_jobs = sa.Table(
    "archived_jobs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("panda_id", sa.BigInteger(), nullable=False),
    sa.Column("queue", sa.String(NAME_LEN), nullable=False),
    sa.Column("ce_names", sa.Text(), nullable=True),
    sa.Column("state", sa.String(STATE_LEN), nullable=False),
    sa.Column("panda_status", sa.String(STATE_LEN), nullable=True),
    sa.Column("error_code", sa.Integer(), nullable=True),
    sa.Column("error_text", sa.Text(), nullable=True),
    sa.Column("attempt", sa.Integer(), nullable=False),
    sa.Column("ce_submissions", sa.Integer(), nullable=False),
    sa.Column("log_url", sa.Text(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("reported_at", UTCDateTime(), nullable=True),
    sa.Column("state_changed_at", UTCDateTime(), nullable=False),
    sa.Column("archived_at", UTCDateTime(), nullable=False),
    sa.UniqueConstraint("panda_id"),
    sa.Index(None, "archived_at"),
    **_MYSQL,
)
