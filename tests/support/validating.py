"""A PanDA job waiting for the validator, with its CE job's fetched outputs, for validator tests."""

from __future__ import annotations

import json
import uuid
import zlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from act.atlas.config import Context
from act.atlas.reporting import report_fields
from act.atlas.validation import ValidatorOptions
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs
from act.common.states import Layer
from act.common.timeutil import utcnow
from act.service.settings import Settings
from tests.support.contexts import daemon_context
from tests.support.jobs import make_jobs

CE = {"flavour": "arc", "endpoint": "arc1"}
PREFIX = "https://logs.example.org/act"


def make_settings(root: Path, *, storage: dict[str, Any] | None = None, **queue: Any) -> Settings:
    return Settings.model_validate(
        {
            "root": str(root),
            "weblogs": {"dir": str(root / "web")},
            "storage": {"timeout": 5, **(storage or {})},
            "queues": {
                "defaults": {"log_url_prefix": PREFIX},
                "serve": {
                    "NATIVE": {"ces": [CE], "truepilot": False, **queue},
                    "TRUE": {"ces": [CE], "truepilot": True},
                },
            },
        }
    )


def context(db: Database, settings: Settings, **options: Any) -> Context:
    opts = ValidatorOptions.model_validate(options)
    return daemon_context(db, settings, "validator", options=opts)


def adler32(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


class Job:
    """A PanDA job in tovalidate whose latest CE job ended with ``output_dir`` filled by a test."""

    def __init__(
        self,
        db: Database,
        root: Path,
        panda_id: int,
        *,
        queue: str = "NATIVE",
        ce: str = "done",
        attempts_left: int = 3,
    ) -> None:
        self.db, self.panda_id = db, panda_id
        (self.panda_job_id,) = db.run(
            lambda c: make_jobs(c, Layer.PANDA, "tovalidate", first_panda_id=panda_id)
        )
        (self.cid,) = db.run(lambda c: make_jobs(c, Layer.CE, ce))
        self.output_dir = root / "ce-jobs" / "arc1" / str(self.cid)
        self.output_dir.mkdir(parents=True)
        spec = {"PandaID": panda_id, "logFile": f"{panda_id}.log.tgz", "coreCount": 8}
        log_url = f"{PREFIX}/2026-11-20/{queue}/{panda_id}.out"
        db.run(
            lambda c: c.execute(
                sa.update(panda_jobs)
                .where(panda_jobs.c.id == self.panda_job_id)
                .values(queue=queue, spec=json.dumps(spec), log_url=log_url, next_report_at=None)
            )
        )
        db.run(
            lambda c: c.execute(
                sa.update(ce_jobs)
                .where(ce_jobs.c.id == self.cid)
                .values(
                    panda_job_id=self.panda_job_id, panda_id=panda_id, queue=queue,
                    ce_name="arc1", ce_job_id=f"arcid{panda_id}",
                    output_dir=str(self.output_dir), exit_code=1,
                    error_text="LRMS error: (1) job failed", worker_node="wn042.example.org",
                    started_at=utcnow() - timedelta(hours=2), ended_at=utcnow(),
                    attempts_left=attempts_left,
                )
            )
        )  # fmt: skip

    def heartbeat(self, outputs: dict[str, dict[str, Any]] | None = None, **fields: Any) -> None:
        body: dict[str, Any] = {
            "jobId": self.panda_id, "state": "finished", "transExitCode": 0, "pilotErrorCode": 0,
            "cpuConsumptionTime": 3600, "node": "pilot-node", **fields,
        }  # fmt: skip
        if outputs is not None:
            body["xml"] = json.dumps(outputs)
        (self.output_dir / "heartbeat.json").write_text(json.dumps(body))
        (self.output_dir / f"{self.panda_id}.log").write_text("pilot says hello\nERROR: boom\n")
        (self.output_dir / "gmlog").mkdir(exist_ok=True)
        (self.output_dir / "gmlog" / "errors").write_text("A-REX: job submitted to LRMS\n")

    def row(self) -> Any:
        with self.db.read() as conn:
            return conn.execute(
                sa.select(panda_jobs).where(panda_jobs.c.id == self.panda_job_id)
            ).one()

    def report(self) -> dict[str, Any]:
        return report_fields(self.row().report)


def store(directory: Path, name: str, data: bytes) -> dict[str, Any]:
    """Write an output file on "storage" (a local directory); its entry in the output report."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(data)
    return {
        "surl": path.as_uri(),
        "fsize": len(data),
        "adler32": adler32(data),
        "guid": str(uuid.uuid4()),
    }
