"""The crash test: a real submitter process dies between the CE's reply and its commit.

``act-daemon submitter --once`` (with the scripted double registered, see
``tests/support/scripted_backend.py``) runs with ``ACT_FAULT`` naming a point of the submission
protocol and exits there with code 137, as if killed. A second run, once the dead process's
claims expired, must leave every job ``submitted`` exactly once at the CE: nothing lost, nothing
sent twice.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from act.common.db import Database
from act.common.faults import EXIT_CODE
from act.common.schema import ce_jobs, processes
from act.common.states import Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs
from tests.support.dbs import url_text
from tests.support.procs import SCRIPTED_DAEMON, daemon_once, wait_for, write_config
from tests.support.scripted_backend import Script, install

JOBS = 6
#: act-daemon, and act-daemon with the scripted double registered.

pytestmark = pytest.mark.slow


def _config(tmp_path: Path, url: URL) -> Path:
    return write_config(
        tmp_path / "act.yaml",
        {
            "root": str(tmp_path),
            "db": {"url": url_text(url)},
            "liveness": {"heartbeat_interval": 0.2, "dead_after": 1.0},
            "daemons": {"submitter": {"lease": 1, "batch": 100}},
            "engine": {
                "strategy": "round_robin",
                "ces": {
                    name: {"backend": "scripted", "timeout": 0.5, "min_spacing": 0}
                    for name in ("ce1", "ce2")
                },
            },
        },
    )


def _submitter(tmp_path: Path, config: Path, script: Script, fault: str | None) -> int:
    log = tmp_path / f"submitter-{fault or 'clean'}.log"
    state = str(script.path)
    done = daemon_once(
        "submitter",
        config,
        tmp_path,
        command=SCRIPTED_DAEMON,
        fault=fault,
        log=log,
        ACT_SCRIPTED_BACKEND_STATE=state,
    )
    return done.returncode


def _rows(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(ce_jobs).order_by(ce_jobs.c.id)).mappings()]


def _all_dead(db: Database) -> bool:
    with db.read() as conn:
        last = conn.execute(sa.select(sa.func.max(processes.c.heartbeat_at))).scalar()
    return last is None or utcnow() - last > timedelta(seconds=1.2)


@pytest.mark.parametrize("fault", ["submitter:after-submit", "submitter:after-intent"])
def test_killed_between_submit_and_commit_every_job_submitted_exactly_once(
    db: Database,
    db_url: URL,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fault: str,
) -> None:
    script = install(monkeypatch, tmp_path / "scripted.json")
    rows = [
        {"backend": "scripted", "candidates": "ce1 ce2", "description": "x", "attempts_left": 3}
        for _ in range(JOBS)
    ]
    db.run(lambda c: create_jobs(c, Layer.CE, rows, "tosubmit", actor=Actor.TRANSLATOR))
    config = _config(tmp_path, db_url)

    assert _submitter(tmp_path, config, script, fault) == EXIT_CODE
    after_crash = _rows(db)
    # Died inside the first batch (to ce1): its jobs are stuck in submitting with a claim.
    stuck = [r for r in after_crash if r["state"] == "submitting"]
    assert len(stuck) == JOBS // 2 and all(r["lease_owner"] for r in stuck)
    accepted_before = script.submitted_tokens()
    if fault == "submitter:after-submit":
        assert sorted(accepted_before) == sorted(str(r["token"]) for r in stuck)
    else:
        assert accepted_before == []

    # The dead process never released its claims: wait until they expire.
    wait_for(
        lambda: all(r["lease_expires"] is None or r["lease_expires"] < utcnow() for r in _rows(db)),
        what="the dead submitter's claims to expire",
    )
    assert _submitter(tmp_path, config, script, None) == 0

    final = _rows(db)
    assert [r["state"] for r in final] == ["submitted"] * JOBS
    tokens = script.submitted_tokens()
    assert sorted(tokens) == sorted(str(r["token"]) for r in final)  # each job's token at the CE
    per_job = Counter(record["job_id"] for record in script.jobs().values())
    assert per_job == dict.fromkeys((r["id"] for r in final), 1)  # no job twice at a CE
    sent = [token for call in script.calls("submit") for token in call["tokens"]]
    assert len(sent) == len(set(sent))  # no token was ever submitted twice
    at_ce = {record["token"]: ce_job_id for ce_job_id, record in script.jobs().items()}
    assert all(at_ce[str(r["token"])] == r["ce_job_id"] for r in final)
    if fault == "submitter:after-submit":
        # The jobs the CE had were reconciled, keeping their first submission.
        kept = {str(r["token"]) for r in final if r["submissions"] == 1}
        assert set(accepted_before) <= kept
        assert len(script.calls("find")) >= 1


def test_local_backend_killed_after_submit_runs_each_job_once(
    db: Database, db_url: URL, tmp_path: Path
) -> None:
    """The same crash with the real local back end: each job has exactly one job directory."""
    config = write_config(
        tmp_path / "act.yaml",
        {
            "root": str(tmp_path),
            "db": {"url": url_text(db_url)},
            "liveness": {"heartbeat_interval": 0.2, "dead_after": 1.0},
            "daemons": {"submitter": {"lease": 1}},
            "engine": {"ces": {"here": {"backend": "local", "timeout": 0.5, "min_spacing": 0}}},
        },
    )
    description = json.dumps({"executable": "/bin/true"})
    rows = [
        {"backend": "local", "candidates": "here", "description": description, "attempts_left": 1}
        for _ in range(3)
    ]
    db.run(lambda c: create_jobs(c, Layer.CE, rows, "tosubmit", actor=Actor.TRANSLATOR))

    def act_daemon(fault: str | None) -> int:
        log = tmp_path / f"local-{fault or 'clean'}.log"
        return daemon_once("submitter", config, tmp_path, fault=fault, log=log).returncode

    assert act_daemon("submitter:after-submit") == EXIT_CODE
    assert {r["state"] for r in _rows(db)} == {"submitting"}
    jobs_dir = tmp_path / "local-ce" / "here" / "jobs"
    assert len(list(jobs_dir.iterdir())) == 3  # the CE has them; the database does not know
    wait_for(
        lambda: all(r["lease_expires"] < utcnow() for r in _rows(db)),
        what="the dead submitter's claims to expire",
    )
    wait_for(lambda: _all_dead(db), what="the dead submitter's heartbeat to age out")
    assert act_daemon(None) == 0

    final = _rows(db)
    assert [r["state"] for r in final] == ["submitted"] * 3
    records = [json.loads((d / "job.json").read_text()) for d in jobs_dir.iterdir()]
    assert len(records) == 3  # no job directory was made twice
    assert sorted(rec["token"] for rec in records) == sorted(str(r["token"]) for r in final)
    assert {d.name for d in jobs_dir.iterdir()} == {str(r["ce_job_id"]) for r in final}
