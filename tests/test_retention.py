"""The retention daemon (act.atlas.retention): only final jobs whose report PanDA accepted, past
their window, with every CE job cleaned, move to archived_jobs; their history, CE rows and
directories go; a SIGKILL at any point loses nothing and archives nothing twice."""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL

from act.atlas import retention
from act.atlas.config import Context
from act.common.db import Database
from act.common.faults import EXIT_CODE
from act.common.safe_paths import UnsafePath
from act.common.schema import archived_jobs, ce_jobs, operator_actions, panda_jobs, transitions
from act.common.states import CEJobState, Layer, PandaJobState
from act.common.timeutil import utcnow
from act.service.settings import Settings
from tests.support.contexts import daemon_context
from tests.support.dbs import url_text
from tests.support.jobs import make_jobs
from tests.support.procs import ACT_DAEMON, daemon_once, env, wait_for, write_config

OLD = timedelta(days=8)
PS, CS = PandaJobState, CEJobState


@dataclass
class Population:
    """The PanDA ids made, by what retention must do with them."""

    archived: list[int]
    kept: list[int]


def _jobs(
    conn: sa.Connection,
    state: PandaJobState,
    count: int,
    first: int,
    *,
    age: timedelta = OLD,
    ce_state: CEJobState | None = CS.CLEANED,
    root: Path | None = None,
) -> list[int]:
    ids = make_jobs(conn, Layer.PANDA, state, count, first_panda_id=first)
    at = utcnow() - age
    conn.execute(sa.update(panda_jobs).where(panda_jobs.c.id.in_(ids)).values(state_changed_at=at))
    panda = dict(
        conn.execute(
            sa.select(panda_jobs.c.id, panda_jobs.c.panda_id).where(panda_jobs.c.id.in_(ids))
        ).all()
    )
    if ce_state is not None:
        ces = make_jobs(conn, Layer.CE, ce_state, count)
        for ce_id, job_id in zip(ces, ids, strict=True):
            output = str(root / "ce-jobs" / "ce1" / str(ce_id)) if root is not None else None
            conn.execute(
                sa.update(ce_jobs)
                .where(ce_jobs.c.id == ce_id)
                .values(
                    panda_job_id=job_id,
                    panda_id=panda[job_id],
                    ce_name="ce1",
                    submissions=1,
                    ended_at=at,
                    output_dir=output,
                )
            )
    return sorted(panda.values())


def populate(db: Database, root: Path | None = None, final: int = 6) -> Population:
    def make(conn: sa.Connection) -> Population:
        archived = _jobs(conn, PS.DONE, final, 1000, root=root)
        archived += _jobs(conn, PS.DONEFAILED, 2, 2000, root=root)
        archived += _jobs(conn, PS.DONECANCELLED, 1, 2500, ce_state=None, root=root)
        kept = _jobs(conn, PS.DONE, 2, 3000, age=timedelta(days=6))  # recent
        kept += _jobs(conn, PS.RUNNING, 2, 4000, ce_state=CS.RUNNING)  # not final
        kept += _jobs(conn, PS.FAILED, 2, 5000)  # final report not sent yet
        in_doubt = _jobs(conn, PS.FINISHED, 2, 6000)  # sent, answer lost
        p = panda_jobs
        conn.execute(
            sa.update(p).where(p.c.panda_id.in_(in_doubt)).values(final_sent_at=utcnow() - OLD)
        )
        kept += in_doubt
        kept += _jobs(conn, PS.DONE, 2, 7000, ce_state=CS.TOCLEAN)  # CE job not cleaned yet
        return Population(archived, kept)

    return db.run(make)


def context(db: Database, root: Path, batch: int = 4) -> Context:
    settings = Settings.model_validate({"root": str(root)})
    return daemon_context(
        db, settings, "retention", options=retention.RetentionOptions(), batch=batch
    )


def panda_ids(db: Database) -> list[int]:
    with db.read() as conn:
        return sorted(conn.execute(sa.select(panda_jobs.c.panda_id)).scalars())


def archived(db: Database) -> list[int]:
    with db.read() as conn:
        return sorted(conn.execute(sa.select(archived_jobs.c.panda_id)).scalars())


def history_of(db: Database, panda: list[int]) -> int:
    with db.read() as conn:
        ids = sa.select(panda_jobs.c.id).where(panda_jobs.c.panda_id.in_(panda))
        ces = sa.select(ce_jobs.c.id).where(ce_jobs.c.panda_job_id.in_(ids))
        h = transitions
        stmt = sa.select(sa.func.count()).where(
            sa.or_(
                sa.and_(h.c.layer == "panda", h.c.job_id.in_(ids)),
                sa.and_(h.c.layer == "ce", h.c.job_id.in_(ces)),
            )
        )
        return int(conn.execute(stmt).scalar_one())


def counts(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return {
            t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
            for t in (panda_jobs, ce_jobs, transitions, archived_jobs, operator_actions)
        }


def drain(ctx: Context) -> None:
    while retention.run_once(ctx):
        pass


def job_dirs(root: Path, panda: list[int]) -> None:
    for panda_id in panda:
        (root / "jobs" / str(panda_id) / "input").mkdir(parents=True)
        (root / "jobs" / str(panda_id) / "input" / "pilot.py").write_text("x")


def test_only_final_accepted_old_jobs_move(db: Database, tmp_path: Path) -> None:
    root = tmp_path / "root"
    made = populate(db, root)
    with db.read() as conn:
        history_before = conn.execute(sa.select(sa.func.count()).select_from(transitions)).scalar()
    kept_history = history_of(db, made.kept)
    drain(context(db, root))

    assert archived(db) == made.archived
    assert panda_ids(db) == sorted(made.kept)
    assert history_of(db, made.kept) == kept_history  # the kept jobs' history is whole
    with db.read() as conn:
        left = conn.execute(sa.select(sa.func.count()).select_from(transitions)).scalar()
        ces = conn.execute(sa.select(ce_jobs.c.panda_id)).scalars().all()
        row = conn.execute(sa.select(archived_jobs).where(archived_jobs.c.panda_id == 2000)).one()
    assert left == kept_history and history_before is not None and left < history_before
    assert not set(ces) & set(made.archived)  # no CE row of an archived job
    assert (row.state, row.queue, row.ce_names, row.ce_submissions) == (
        "donefailed",
        "TEST_QUEUE",
        "ce1",
        1,
    )
    assert row.archived_at is not None and row.state_changed_at < utcnow() - timedelta(days=7)


def test_a_second_pass_archives_nothing_twice(db: Database, tmp_path: Path) -> None:
    made = populate(db)
    ctx = context(db, tmp_path)
    drain(ctx)
    before = counts(db)
    assert retention.run_once(ctx) is False
    assert counts(db) == before
    assert archived(db) == made.archived


def test_directories_go_after_the_commit_and_links_are_not_followed(
    db: Database, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    made = populate(db, root)
    job_dirs(root, [*made.archived, *made.kept])
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    (root / "jobs" / str(made.archived[0]) / "input" / "link").symlink_to(outside)
    ce_dir = root / "ce-jobs" / "ce1"
    with db.read() as conn:
        outputs = (
            conn.execute(sa.select(ce_jobs.c.output_dir).where(ce_jobs.c.output_dir.is_not(None)))
            .scalars()
            .all()
        )
    for output in outputs:
        Path(output).mkdir(parents=True)
    drain(context(db, root))

    assert sorted(int(p.name) for p in (root / "jobs").iterdir()) == sorted(made.kept)
    assert (outside / "precious").read_text() == "keep me"
    assert not list(ce_dir.iterdir())


def test_a_directory_outside_the_root_or_behind_a_link_is_left_alone(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "7").mkdir(parents=True)
    root = tmp_path / "root"
    root.mkdir()
    assert retention.remove_below(root, elsewhere) is False
    assert retention.remove_below(tmp_path, root / ".." / "elsewhere") is False
    (root / "jobs").symlink_to(elsewhere)  # a link below the root is never followed
    with pytest.raises(UnsafePath):
        retention.remove_below(root, root / "jobs" / "7")
    assert (elsewhere / "7").is_dir()
    linked_root = tmp_path / "linked-root"  # the root itself may be a link (the operator's)
    linked_root.symlink_to(elsewhere)
    assert retention.remove_below(linked_root, linked_root / "7") is True
    assert not (elsewhere / "7").exists() and elsewhere.is_dir()


def test_old_operator_actions_go_by_their_window(db: Database, tmp_path: Path) -> None:
    now = utcnow()
    rows = [
        {
            "at": now - timedelta(days=days),
            "who": "op",
            "command": "queue",
            "target": "queue:Q",
            "reason": "r",
        }
        for days in (1, 100, 179, 181, 400)
    ]
    db.run(lambda conn: conn.execute(sa.insert(operator_actions), rows))
    drain(context(db, tmp_path))
    with db.read() as conn:
        kept = (
            conn.execute(sa.select(operator_actions.c.at).order_by(operator_actions.c.at))
            .scalars()
            .all()
        )
    assert len(kept) == 3 and min(now - at for at in kept) < timedelta(days=2)


def test_the_plan_counts_what_a_pass_deletes_and_changes_nothing(
    db: Database, tmp_path: Path
) -> None:
    made = populate(db)
    before = counts(db)
    with db.read() as conn:
        plan = retention.plan(conn, retention.RetentionOptions(), utcnow())
    assert counts(db) == before
    drain(context(db, tmp_path, batch=100))
    after = counts(db)
    assert plan.panda_jobs == len(made.archived) == before["panda_jobs"] - after["panda_jobs"]
    assert plan.ce_jobs == before["ce_jobs"] - after["ce_jobs"]
    assert plan.transitions == before["transitions"] - after["transitions"]
    assert after["archived_jobs"] == len(made.archived)


def _config(tmp_path: Path, url: URL, batch: int) -> Path:
    return write_config(
        tmp_path / "act.yaml",
        {
            "root": str(tmp_path / "root"),
            "db": {"url": url_text(url)},
            "liveness": {"heartbeat_interval": 0.2, "dead_after": 1.0},
            "daemons": {"retention": {"batch": batch, "interval": 0.05}},
        },
    )


@pytest.mark.parametrize("point", ["retention:before-commit", "retention:after-commit"])
def test_a_crash_at_either_side_of_the_commit_loses_nothing(
    db_url: URL, tmp_path: Path, point: str
) -> None:
    db = Database(db_url)
    try:
        root = tmp_path / "root"
        made = populate(db, root)
        job_dirs(root, made.archived)
        config = _config(tmp_path, db_url, batch=3)
        crashed = daemon_once("retention", config, tmp_path, fault=point)
        assert crashed.returncode == EXIT_CODE, crashed.stderr
        first = archived(db)
        assert first == ([] if point.endswith("before-commit") else made.archived[:3])
        assert set(first) & set(panda_ids(db)) == set()
        drain(context(db, root))
        assert archived(db) == made.archived
        assert panda_ids(db) == sorted(made.kept)
        assert sorted(p.name for p in (root / "jobs").iterdir()) == []  # swept
    finally:
        db.dispose()


@pytest.mark.slow
def test_kill_9_of_a_running_daemon_loses_nothing(db_url: URL, tmp_path: Path) -> None:
    db = Database(db_url)
    try:
        root = tmp_path / "root"
        made = populate(db, root, final=300)
        job_dirs(root, made.archived)
        config = _config(tmp_path, db_url, batch=2)
        proc = subprocess.Popen(
            [*ACT_DAEMON, "retention", "--config", str(config)],
            env=env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: len(archived(db)) >= 10, timeout=60, what="a few batches archived")
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        first = archived(db)
        assert 10 <= len(first) < len(made.archived)  # killed mid-run
        assert first == sorted(set(first))
        assert not set(first) & set(panda_ids(db))  # each job is in one place, never two
        assert set(first) | set(panda_ids(db)) == set(made.archived) | set(made.kept)
        drain(context(db, root, batch=50))
        assert archived(db) == made.archived
        assert panda_ids(db) == sorted(made.kept)
        assert list((root / "jobs").iterdir()) == []
    finally:
        db.dispose()
