"""act's Prometheus metrics: the counters and histograms every process updates.

The objects here are module-level ``prometheus_client`` metrics, all named ``act_...``. What a
process does is counted where it happens: state changes in
:func:`act.common.transitions.transition`, PanDA calls in :mod:`act.atlas.panda_client`, CE
back-end calls in :mod:`act.engine.measured`, daemon cycles in :mod:`act.common.daemon`. The
numbers read from the database (jobs per state, heartbeat lag, breakers, daemon liveness) are
not here: the ``metrics`` daemon (:mod:`act.service.metrics_daemon`) reads them once per cycle
and serves them with these.

Across processes: actd sets ``PROMETHEUS_MULTIPROC_DIR`` (:data:`ENV_MULTIPROC_DIR`) to
``<root>/run/metrics`` for the daemons it starts, so each keeps its values in files there
(prometheus_client's multi-process mode, chosen when ``prometheus_client`` is first imported,
which in a daemon is after actd set the variable) and the metrics daemon adds them up. Without
the variable (tests, actctl, a lone ``act-daemon``) the values live in the process's memory.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import Counter, Histogram
from prometheus_client.multiprocess import mark_process_dead

#: Set by actd for its daemons: the directory of the per-process metric files.
ENV_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"

#: Under the run directory (``settings.run_dir``): the per-process metric files of actd's daemons.
MULTIPROC_SUBDIR = "metrics"

#: Seconds; a remote call (PanDA, CE) takes from milliseconds to its timeout (minutes).
CALL_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
#: Seconds; a daemon cycle is a few database statements or many remote calls.
CYCLE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)

TRANSITIONS = Counter(
    "act_transitions",
    "Jobs moved from one state to another (from_state is empty for a job's creation). Counted "
    "when the statement ran: a transaction rolled back afterwards over-counts.",
    ["layer", "from_state", "to_state", "actor"],
)

PANDA_REQUESTS = Counter(
    "act_panda_requests",
    "PanDA API calls by method and outcome (ok, or the error kind: http_5xx, timeout, "
    "connection, tls, server_timeout, auth, refused, bad_reply, error).",
    ["method", "outcome"],
)
PANDA_SECONDS = Histogram(
    "act_panda_request_seconds",
    "Duration of PanDA API calls, retries included, whatever the outcome.",
    ["method"],
    buckets=CALL_BUCKETS,
)

CE_REQUESTS = Counter(
    "act_ce_requests",
    "Calls to CE back ends by back end, CE, operation (submit, status, find, fetch, kill, "
    "clean, restart) and outcome (ok, unavailable: the CE did not answer as a whole, error).",
    ["backend", "ce", "operation", "outcome"],
)
CE_SECONDS = Histogram(
    "act_ce_request_seconds",
    "Duration of calls to CE back ends, whatever the outcome.",
    ["backend", "operation"],
    buckets=CALL_BUCKETS,
)

DAEMON_CYCLES = Counter(
    "act_daemon_cycles",
    "Daemon cycles by daemon and outcome (ok, error, db_unavailable, db_broken).",
    ["daemon", "outcome"],
)
DAEMON_CYCLE_SECONDS = Histogram(
    "act_daemon_cycle_seconds",
    "Duration of daemon cycles (one run_once).",
    ["daemon"],
    buckets=CYCLE_BUCKETS,
)


def count_transition(
    layer: str, from_state: str | None, to_state: str, actor: str, moved: int
) -> None:
    """Count ``moved`` jobs going ``from_state`` -> ``to_state`` (None: created)."""
    if moved:
        TRANSITIONS.labels(layer, from_state or "", to_state, actor).inc(moved)


class Call:
    """The outcome of a measured call; ``ok`` until the code around it says otherwise."""

    def __init__(self) -> None:
        self.outcome = "ok"


@contextmanager
def measured(
    counter: Counter,
    histogram: Histogram,
    counter_labels: tuple[str, ...],
    histogram_labels: tuple[str, ...],
) -> Iterator[Call]:
    """Time the block into ``histogram`` and count it in ``counter`` with its outcome.

    ``counter_labels`` come before the outcome label. The block may set ``call.outcome``; an
    exception leaving the block makes it ``error`` unless the block set another outcome first.
    """
    call = Call()
    started = time.perf_counter()
    try:
        yield call
    except BaseException:
        if call.outcome == "ok":
            call.outcome = "error"
        raise
    finally:
        histogram.labels(*histogram_labels).observe(time.perf_counter() - started)
        counter.labels(*counter_labels, call.outcome).inc()


def multiproc_dir(run_dir: Path) -> Path:
    """Where actd's daemons keep their metric files."""
    return run_dir / MULTIPROC_SUBDIR


def reset_multiproc_dir(path: Path) -> None:
    """Start with no metric files (actd, before it starts its daemons): a new actd's counters
    start from zero, as Prometheus expects of a restarted target."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(mode=0o750, parents=True, exist_ok=True)


def process_gone(pid: int, path: Path) -> None:
    """Bookkeeping after a daemon process ended (its counters stay; live gauges go)."""
    mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]


def multiproc_dir_of_env() -> Path | None:
    """The directory of the metric files if this process runs in multi-process mode."""
    value = os.environ.get(ENV_MULTIPROC_DIR)
    return Path(value) if value else None
