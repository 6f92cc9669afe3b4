"""How many jobs per second the validator daemon decides, outputs on the real XRootD server.

A benchmark, not a test (see README.md). ``--jobs`` PanDA jobs wait in ``tovalidate``, each with a
fetched CE job whose ``heartbeat.json`` reports ``--files`` outputs (1-4 kB) on the real XRootD
server of tests/harness/xrootd-server (started if it is not running), over ``root://``. The
validator cycles (``--batch`` jobs per cycle) until none is left: per job it reads and checks the
pilot's report, publishes the logs to the web area and commits the decision with the final
report; per cycle it checks every file of its jobs in one concurrent round on the SE. Checks: every
job ends ``finished`` with exactly one validator transition.

    PYTHONPATH=. python -m benchmarks.validator_cycle [--backends sqlite,mariadb,postgresql]
        [--jobs N (500)] [--files F (3)] [--batch B (100)] [--per-endpoint P (16)]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from act.atlas import validator
from act.atlas.config import Context
from act.atlas.validation import ValidatorOptions
from act.common.db import Database
from act.common.schema import ce_jobs, panda_jobs, transitions
from act.common.states import Actor, Layer
from act.common.transitions import create_jobs, transition
from act.service.settings import Settings
from benchmarks._common import BenchmarkError, scratch_database
from tests.support.contexts import daemon_context
from tests.support.jobs import path_to
from tests.support.xrootd_real import XRootDServer, read_env

CHUNK = 500


def _outputs(se: XRootDServer, run: str, panda_id: int, files: int) -> dict[str, Any]:
    report = {}
    for index in range(files):
        lfn = f"f{panda_id}.{index}.root"
        path = f"atlas/bench/{run}/{lfn}"
        size, adler = se.write(path, os.urandom(1024 + (panda_id * 37 + index) % 3072))
        report[lfn] = {"surl": se.root(path), "fsize": size, "adler32": adler,
                       "guid": str(uuid.uuid4())}  # fmt: skip
    return report


def _prefill(db: Database, root: Path, se: XRootDServer, jobs: int, files: int) -> None:
    run = uuid.uuid4().hex

    def walk(conn: Any, layer: Layer, ids: list[int], state: str) -> None:
        for edge in path_to(layer, state)[1:]:
            assert edge.from_state is not None
            transition(conn, layer, ids, edge.from_state, edge.to_state, actor=min(edge.actors))

    def make(conn: Any, start: int, count: int) -> None:
        panda = [
            {"panda_id": p, "queue": "Q", "spec": json.dumps({"logFile": f"{p}.log.tgz"}),
             "spec_format": "json"}
            for p in range(start, start + count)
        ]  # fmt: skip
        pids = create_jobs(conn, Layer.PANDA, panda, "received", actor=Actor.PANDA_FETCHER)
        walk(conn, Layer.PANDA, pids, "tovalidate")
        rows = []
        for offset, pid in enumerate(pids):
            panda_id = start + offset
            out = root / "ce-jobs" / "ce1" / str(panda_id)
            out.mkdir(parents=True)
            heartbeat = {"state": "finished", "transExitCode": 0, "pilotErrorCode": 0,
                         "xml": json.dumps(_outputs(se, run, panda_id, files))}  # fmt: skip
            (out / "heartbeat.json").write_text(json.dumps(heartbeat))
            (out / f"{panda_id}.log").write_text(f"pilot log of {panda_id}\n" * 50)
            rows.append({"backend": "local", "panda_job_id": pid, "panda_id": panda_id,
                         "ce_name": "ce1", "ce_job_id": f"j{panda_id}",
                         "output_dir": str(out), "attempts_left": 1})  # fmt: skip
        cids = create_jobs(conn, Layer.CE, rows, "tosubmit", actor=Actor.TRANSLATOR)
        walk(conn, Layer.CE, cids, "done")

    for start in range(1, jobs + 1, CHUNK):
        db.run(functools.partial(make, start=start, count=min(CHUNK, jobs + 1 - start)))


def run(backend: str, se: XRootDServer, args: argparse.Namespace) -> tuple[float, int]:
    with scratch_database(backend) as (db, root):
        _prefill(db, root, se, args.jobs, args.files)
        settings = Settings.model_validate(
            {
                "root": str(root),
                "weblogs": {"dir": str(root / "web")},
                "storage": {"per_endpoint": args.per_endpoint, "concurrency": args.per_endpoint},
                "queues": {
                    "serve": {
                        "Q": {"ces": [{"flavour": "arc", "endpoint": "ce1"}], "truepilot": False}
                    }
                },
            }
        )
        ctx: Context = daemon_context(
            db, settings, "validator", batch=args.batch, options=ValidatorOptions()
        )
        cycles = 0
        started = time.perf_counter()
        try:
            while validator.run_once(ctx):
                cycles += 1
            cycles += 1
        finally:
            validator.checker(ctx).close()
        seconds = time.perf_counter() - started
        with db.read() as conn:
            finished = conn.execute(
                sa.select(sa.func.count())
                .select_from(panda_jobs)
                .where(panda_jobs.c.state == "finished")
            ).scalar()
            moves = conn.execute(
                sa.select(sa.func.count())
                .select_from(transitions)
                .where(transitions.c.layer == "panda", transitions.c.actor == "validator")
            ).scalar()
            ce = conn.execute(sa.select(sa.func.count()).select_from(ce_jobs)).scalar()
            note = conn.execute(
                sa.select(panda_jobs.c.validation_note).where(panda_jobs.c.state != "finished")
            ).first()
        if finished != args.jobs or moves != args.jobs or ce != args.jobs:
            raise BenchmarkError(f"{backend}: {finished} finished, {moves} validator moves; {note}")
        return seconds, cycles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backends", default="sqlite,mariadb,postgresql")
    parser.add_argument("--jobs", type=int, default=500)
    parser.add_argument("--files", type=int, default=3)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--per-endpoint", type=int, default=16)
    args = parser.parse_args(argv)
    se = read_env()
    print("| backend | jobs | files | cycles | seconds | jobs/s | files/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for backend in args.backends.split(","):
        seconds, cycles = run(backend, se, args)
        files = args.jobs * args.files
        print(
            f"| {backend} | {args.jobs} | {files} | {cycles} | {seconds:.2f} | "
            f"{args.jobs / seconds:,.0f} | {files / seconds:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
