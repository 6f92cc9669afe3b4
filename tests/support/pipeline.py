"""The whole pipeline of the embedded demo (act/demo/run.py) under a test's control, for fault
tests: the PanDA TEST DOUBLE in this process (recording the order of final updates), a real
``actd`` subprocess with every daemon, the local CE, file:// storage, and a job store the test
chooses (``db_url``). The demo's config is the base; ``tweak`` edits it (as a dict) before it is
written and validated."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml

from act.common import migrate
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs
from act.demo import run as demo
from act.demo.progress import FINAL_STATES
from act.local import jobfiles as jf
from act.service.settings import Settings, load_settings
from act.testing.panda import FINAL, PandaTestServer, TestCA
from tests.support.procs import wait_for

QUEUE = demo.QUEUE


class RecordingServer(PandaTestServer):
    """The test double, also keeping every final update in the order it arrived."""

    __test__ = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.final_order: list[tuple[int, str, float]] = []
        self._order_lock = threading.Lock()

    def _update(
        self,
        panda_id: int,
        state: str,
        attempt: int | None,
        fields: Mapping[str, Any],
        *,
        legacy: bool = False,
    ) -> str:
        answer = super()._update(panda_id, state, attempt, fields, legacy=legacy)
        if state in FINAL:
            with self._order_lock:
                self.final_order.append((panda_id, state, time.monotonic()))
        return answer


@dataclass
class Counts:
    jobs: int
    final_reports: int
    duplicates: int
    missing_reports: int
    final_in_store: int
    ce_jobs: int
    extra_ce_jobs: int
    resubmissions: int

    def line(self) -> str:
        return (
            f"jobs {self.jobs}, final reports {self.final_reports}, duplicates "
            f"{self.duplicates}, missing reports {self.missing_reports}, final in the store "
            f"{self.final_in_store}, CE jobs {self.ce_jobs}, extra CE jobs {self.extra_ce_jobs}, "
            f"resubmissions {self.resubmissions}"
        )


class Pipeline:
    """Start with :meth:`start`, add jobs with :meth:`seed`, always :meth:`stop` (a finally)."""

    def __init__(
        self,
        directory: Path,
        *,
        db_url: str | None = None,
        tweak: Callable[[dict[str, Any]], None] | None = None,
        sleep: str = "0.5-2",
    ) -> None:
        self.directory = demo.prepare_dir(directory)
        ca = TestCA(self.directory / "panda", name="act fault-test CA (throw-away)")
        ca.proxy(self.directory / "panda" / "proxy", cn="act-fault-test")
        self.server = RecordingServer(tls=True, ca=ca)
        self.server.record_requests = False
        self.server.start()
        pilot = demo.write_pilot_wrapper(self.directory, 0.0, sleep)
        text = demo.render(
            demo.template_path().read_text(encoding="utf-8"),
            {
                "@DEMO_DIR@": str(self.directory),
                "@PANDA_URL@": self.server.url,
                "@DEMO_PILOT@": str(pilot),
            },
        )
        config = yaml.safe_load(text)
        if db_url is not None:
            config["db"]["url"] = db_url
        if tweak is not None:
            tweak(config)
        self.config = self.directory / "act.yaml"
        self.config.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.config.chmod(0o600)
        self.settings: Settings = load_settings(self.config)
        self.db = Database(self.settings.db_url(), pool_size=1)
        migrate.upgrade(self.db)
        self.ids: list[int] = []
        self.proc: Any = None

    def seed(self, n: int) -> list[int]:
        ids = self.server.seed(n, queue=QUEUE)
        self.ids += ids
        return ids

    def start(self) -> None:
        self.proc = demo.start_actd(self.config, self.directory)

    def actd_alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self, name: str) -> str:
        path = Path(self.settings.log_dir) / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def states(self) -> Counter[str]:
        with self.db.read() as conn:
            rows = conn.execute(
                sa.select(panda_jobs.c.state, sa.func.count()).group_by(panda_jobs.c.state)
            ).all()
        return Counter({str(state): int(n) for state, n in rows})

    def all_final(self, ids: list[int] | None = None) -> bool:
        """Every job (of ``ids``) reported final to PanDA and final in the job store."""
        wanted = self.ids if ids is None else ids
        if any(self.server.final_state(panda_id) is None for panda_id in wanted):
            return False
        with self.db.read() as conn:
            final = conn.execute(
                sa.select(sa.func.count()).where(
                    panda_jobs.c.panda_id.in_(wanted), panda_jobs.c.state.in_(FINAL_STATES)
                )
            ).scalar_one()
        return int(final) == len(wanted)

    def wait_all_final(self, timeout: float, ids: list[int] | None = None) -> None:
        def done() -> bool:
            assert self.actd_alive(), f"actd exited with {self.proc.returncode}: {self.logs_hint()}"
            return self.all_final(ids)

        wait_for(done, timeout=timeout, what=f"every job final ({self.states()})")

    def logs_hint(self) -> str:
        return f"see {self.settings.log_dir} and {self.directory / 'log' / 'actd.console'}"

    def counts(self) -> Counts:
        reports = {panda_id: self.server.final_reports(panda_id) for panda_id in self.ids}
        with self.db.read() as conn:
            final = conn.execute(
                sa.select(sa.func.count()).where(
                    panda_jobs.c.panda_id.in_(self.ids), panda_jobs.c.state.in_(FINAL_STATES)
                )
            ).scalar_one()
            rows = conn.execute(sa.select(ce_jobs.c.panda_id, ce_jobs.c.submissions)).all()
        per_job = Counter(int(row.panda_id) for row in rows)
        return Counts(
            jobs=len(self.ids),
            final_reports=sum(reports.values()),
            duplicates=sum(max(0, n - 1) for n in reports.values()),
            missing_reports=sum(1 for n in reports.values() if n == 0),
            final_in_store=int(final),
            ce_jobs=len(rows),
            extra_ce_jobs=sum(max(0, n - 1) for n in per_job.values()),
            resubmissions=sum(max(0, int(row.submissions) - 1) for row in rows),
        )

    def local_ce_jobs(self, ce: str = "demo-local") -> Counter[int]:
        """CE jobs per PanDA ID as the local CE holds them (its job directories; with the
        cleaner disabled, every submission's directory stays)."""
        jobs = Path(self.settings.root) / "local-ce" / ce / jf.JOBS
        found: Counter[int] = Counter()
        for jobdir in jobs.iterdir() if jobs.is_dir() else ():
            value = (jf.read_json(jobdir / jf.JOB) or {}).get("panda_id")
            if isinstance(value, int):
                found[value] += 1
        return found

    def stop(self) -> None:
        try:
            self.db.dispose()
            if self.proc is not None:
                demo.stop_actd(self.proc, self.settings)
            demo.stop_local_jobs(self.settings)
        finally:
            self.server.stop()
