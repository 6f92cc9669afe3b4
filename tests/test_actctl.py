"""actctl on every backend: schema commands, status, jobs, job, processes, states, errors."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from sqlalchemy.engine import URL, Connection

from act.common import exitcodes, liveness, migrate
from act.common.db import Database, normalise_url
from act.common.schema import ce_jobs, panda_jobs, processes
from act.common.schema import transitions as history
from act.common.states import EDGES, RULES, STATES, Actor, Layer
from act.common.timeutil import utcnow
from act.common.transitions import create_jobs, transition
from act.ctl.cli import cli, main
from tests.conftest import REPO
from tests.support.dbs import BACKENDS, SERVERS, fresh_database, url_text
from tests.support.jobs import ce_row, panda_row, path_to

PASSWORD = "S3cretPw-" + "x7"
UNREACHABLE = [
    f"postgresql://act:{PASSWORD}@127.0.0.1:1/act",
    f"mysql://act:{PASSWORD}@127.0.0.1:1/act",
]
CE_A = "https://ce-a.example.org/arex"
CE_B = "https://ce-b.example.org/arex"
JOB_KEYS = {
    "panda_id",
    "queue",
    "state",
    "panda_status",
    "attempt",
    "ce_name",
    "ce_state",
    "ce_job_id",
    "state_changed_at",
    "error_code",
    "error_text",
}


pytestmark = pytest.mark.usefixtures("isolated_config")


def actctl(url: URL | str | None, *args: str, config_file: Path | None = None) -> Result:
    argv: list[str] = []
    if config_file is not None:
        argv += ["--config", str(config_file)]
    if url is not None:
        argv += ["--db-url", url if isinstance(url, str) else url_text(url)]
    return CliRunner().invoke(cli, [*argv, *args])


def ok(result: Result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def table_rows(text: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of the first tabulate 'simple' table in ``text``."""
    lines = text.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.strip() and set(line) <= {"-", " "})
    spans = [match.span() for match in re.finditer(r"-+", lines[rule])]
    spans[-1] = (spans[-1][0], 10**6)

    def cells(line: str) -> list[str]:
        return [line[start:end].strip() for start, end in spans]

    body = []
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        body.append(cells(line))
    return cells(lines[rule - 1]), body


# --- building jobs ------------------------------------------------------------------------------


def _walk(conn: Connection, layer: Layer, ids: list[int], state: str) -> None:
    for edge in path_to(layer, state)[1:]:
        assert edge.from_state is not None
        moved = transition(conn, layer, ids, edge.from_state, edge.to_state, actor=min(edge.actors))
        assert moved == sorted(ids)


def panda_jobs_in(conn: Connection, queue: str, state: str, *panda_ids: int) -> list[int]:
    rows = [panda_row(panda_id, queue) for panda_id in panda_ids]
    ids = create_jobs(conn, Layer.PANDA, rows, "received", actor=Actor.PANDA_FETCHER)
    _walk(conn, Layer.PANDA, ids, state)
    return ids


def ce_job_in(conn: Connection, panda_job_id: int | None, endpoint: str | None, state: str) -> int:
    row = {**ce_row(), "ce_name": endpoint, "panda_job_id": panda_job_id}
    (ce_id,) = create_jobs(conn, Layer.CE, [row], "tosubmit", actor=Actor.TRANSLATOR)
    _walk(conn, Layer.CE, [ce_id], state)
    return ce_id


def _scenario(conn: Connection) -> dict[int, int]:
    """Five PanDA jobs in two queues, CE jobs on two CEs; returns {PanDA id: panda_jobs.id}."""
    ids = dict(zip((1001, 1002), panda_jobs_in(conn, "Q1", "received", 1001, 1002), strict=True))
    (ids[1003],) = panda_jobs_in(conn, "Q1", "running", 1003)
    (ids[2001],) = panda_jobs_in(conn, "Q2", "failed", 2001)
    (ids[2002],) = panda_jobs_in(conn, "Q2", "queued", 2002)
    ce_job_in(conn, ids[1003], CE_B, "cancelled")  # the older CE job of 1003
    newest = ce_job_in(conn, ids[1003], CE_A, "running")
    conn.execute(sa.update(ce_jobs).where(ce_jobs.c.id == newest).values(ce_job_id="ce-a-123"))
    ce_job_in(conn, ids[2001], CE_B, "failed")
    ce_job_in(conn, ids[2002], None, "tosubmit")
    ce_job_in(conn, None, CE_B, "submitted")  # a CE job of no PanDA job
    conn.execute(
        sa.update(panda_jobs)
        .where(panda_jobs.c.panda_id == 2001)
        .values(error_code=1305, error_text="payload failed\nsee the log")
    )
    return ids


@pytest.fixture
def scenario(db: Database) -> dict[int, int]:
    return db.run(_scenario)


# --- db upgrade / db current, and the schema check ---------------------------------------------


def test_db_upgrade_on_an_empty_database_then_current_is_head(empty_db_url: URL) -> None:
    head = migrate.head_revision()
    before = actctl(empty_db_url, "db", "current")
    assert before.exit_code == exitcodes.DATABASE
    assert "current: none" in before.stdout and f"head:    {head}" in before.stdout
    assert "actctl db upgrade" in before.stderr

    out = ok(actctl(empty_db_url, "db", "upgrade"))
    safe = normalise_url(empty_db_url).render_as_string(hide_password=True)
    assert out.strip() == f"database {safe}: schema none -> {head}"
    out = ok(actctl(empty_db_url, "db", "current"))
    assert f"current: {head}" in out and f"head:    {head}" in out
    assert ok(actctl(empty_db_url, "db", "upgrade")).strip().endswith(f"schema {head} -> {head}")
    assert "PanDA jobs per queue" in ok(actctl(empty_db_url, "status"))


@pytest.mark.parametrize(
    "command", [["status"], ["jobs"], ["job", "1"], ["processes", "--all"], ["status", "--json"]]
)
def test_commands_refuse_an_unmigrated_database(empty_db_url: URL, command: list[str]) -> None:
    result = actctl(empty_db_url, *command)
    assert result.exit_code == exitcodes.DATABASE
    assert "has no act schema" in result.stderr and "actctl db upgrade" in result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.output


def test_a_schema_from_a_newer_act_is_refused(db: Database, db_url: URL) -> None:
    with db.transaction() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = :v"), {"v": "9999"})
    result = actctl(db_url, "db", "current")
    assert result.exit_code == exitcodes.DATABASE
    assert "current: 9999" in result.stdout
    assert "does not know" in result.stderr
    assert actctl(db_url, "jobs").exit_code == exitcodes.DATABASE


# --- status -------------------------------------------------------------------------------------


def test_status_json_counts_per_queue_and_ce(db_url: URL, scenario: dict[int, int]) -> None:
    data = json.loads(ok(actctl(db_url, "status", "--json")))
    assert data == {
        "panda": {
            "Q1": {"received": 2, "running": 1},
            "Q2": {"queued": 1, "failed": 1},
        },
        "ce": {
            CE_A: {"running": 1},
            CE_B: {"cancelled": 1, "failed": 1, "submitted": 1},
            "(unassigned)": {"tosubmit": 1},
        },
    }


def test_status_tables_have_the_occurring_states_in_order_and_totals(
    db_url: URL, scenario: dict[int, int]
) -> None:
    out = ok(actctl(db_url, "status"))
    assert out.startswith("PanDA jobs per queue\n")
    panda_part, ce_part = out.split("CE jobs per CE")
    header, rows = table_rows(panda_part)
    assert header == ["queue", "received", "queued", "running", "failed", "total"]
    assert rows == [["Q1", "2", "0", "1", "0", "3"], ["Q2", "0", "1", "0", "1", "2"]]
    header, rows = table_rows(ce_part)
    assert header == ["ce", "tosubmit", "submitted", "running", "failed", "cancelled", "total"]
    assert rows == [
        ["(unassigned)", "1", "0", "0", "0", "0", "1"],
        [CE_A, "0", "0", "1", "0", "0", "1"],
        [CE_B, "0", "1", "0", "1", "1", "3"],
    ]


def test_status_of_an_empty_store(db_url: URL) -> None:
    assert json.loads(ok(actctl(db_url, "status", "--json"))) == {"panda": {}, "ce": {}}
    assert ok(actctl(db_url, "status")).count("(no jobs)") == 2


# --- jobs ---------------------------------------------------------------------------------------


def _panda_ids(url: URL, *args: str) -> list[int]:
    return [row["panda_id"] for row in json.loads(ok(actctl(url, "jobs", "--json", *args)))]


def test_jobs_newest_first_with_their_newest_ce_job(db_url: URL, scenario: dict[int, int]) -> None:
    rows = json.loads(ok(actctl(db_url, "jobs", "--json")))
    assert [row["panda_id"] for row in rows] == [2002, 2001, 1003, 1002, 1001]
    assert all(set(row) == JOB_KEYS for row in rows)
    by_id = {row["panda_id"]: row for row in rows}
    running = by_id[1003]
    assert (running["queue"], running["state"], running["attempt"]) == ("Q1", "running", 1)
    assert (running["ce_name"], running["ce_state"], running["ce_job_id"]) == (
        CE_A,
        "running",
        "ce-a-123",
    )
    assert (by_id[2002]["ce_name"], by_id[2002]["ce_state"]) == (None, "tosubmit")
    assert by_id[1001]["ce_state"] is None and by_id[1001]["ce_name"] is None
    assert (by_id[2001]["error_code"], by_id[2001]["ce_state"]) == (1305, "failed")
    assert running["state_changed_at"].endswith("Z")


def test_jobs_filters(db_url: URL, scenario: dict[int, int]) -> None:
    assert _panda_ids(db_url, "--state", "received", "--state", "failed") == [2001, 1002, 1001]
    assert _panda_ids(db_url, "--queue", "Q1") == [1003, 1002, 1001]
    assert _panda_ids(db_url, "--ce", CE_A) == [1003]
    # 1003's job on CE_B is not its newest, and the other CE_B job belongs to no PanDA job.
    assert _panda_ids(db_url, "--ce", CE_B) == [2001]
    assert _panda_ids(db_url, "--panda-id", "1002") == [1002]
    assert _panda_ids(db_url, "--panda-id", "4242") == []
    assert _panda_ids(db_url, "--limit", "2") == [2002, 2001]
    assert _panda_ids(db_url, "--queue", "Q1", "--state", "received", "--limit", "1") == [1002]
    assert _panda_ids(db_url, "--queue", "Q2", "--state", "received") == []


def test_jobs_table(db_url: URL, scenario: dict[int, int]) -> None:
    header, rows = table_rows(ok(actctl(db_url, "jobs")))
    assert header == [
        "panda_id",
        "queue",
        "state",
        "panda_status",
        "attempt",
        "ce_name",
        "ce_state",
        "ce_job_id",
        "state_changed_at",
        "error",
    ]
    assert [row[0] for row in rows] == ["2002", "2001", "1003", "1002", "1001"]
    assert rows[1][-1] == "1305: payload failed"
    assert rows[1][1:3] == ["Q2", "failed"] and rows[1][5:7] == [CE_B, "failed"]
    assert rows[2][5:8] == [CE_A, "running", "ce-a-123"] and rows[2][-1] == ""
    assert rows[4][5:8] == ["", "", ""] and rows[4][8].endswith("Z")


def test_an_unknown_state_is_a_usage_error_naming_the_valid_ones() -> None:
    result = actctl(UNREACHABLE[0], "jobs", "--state", "bogus")  # refused before any DB access
    assert result.exit_code == exitcodes.USAGE
    assert "'bogus' is not one of" in result.stderr
    assert all(state in result.stderr for state in STATES[Layer.PANDA])
    assert actctl(None, "jobs", "--limit", "-1").exit_code == exitcodes.USAGE


# --- job ----------------------------------------------------------------------------------------


def test_job_json_has_every_column_its_ce_jobs_and_history(
    db: Database, db_url: URL, scenario: dict[int, int]
) -> None:
    data = json.loads(ok(actctl(db_url, "job", "1003", "--json")))
    job = data["panda_job"]
    assert set(job) == set(panda_jobs.c.keys())
    assert (job["panda_id"], job["queue"], job["state"]) == (1003, "Q1", "running")
    assert job["spec"] == '{"PandaID": 1003}'
    assert [ce["ce_name"] for ce in data["ce_jobs"]] == [CE_B, CE_A]
    assert [ce["state"] for ce in data["ce_jobs"]] == ["cancelled", "running"]
    assert all(set(ce) == set(ce_jobs.c.keys()) for ce in data["ce_jobs"])
    ce_ids = [ce["id"] for ce in data["ce_jobs"]]
    with db.read() as conn:
        stored = conn.execute(
            sa.select(sa.func.count()).where(
                sa.or_(
                    sa.and_(history.c.layer == "panda", history.c.job_id == job["id"]),
                    sa.and_(history.c.layer == "ce", history.c.job_id.in_(ce_ids)),
                )
            )
        ).scalar_one()
    steps = data["history"]
    assert len(steps) == stored == 3 + 3 + 4  # received..running; (new)..cancelled; ..running
    assert [step["at"] for step in steps] == sorted(step["at"] for step in steps)
    assert {(s["layer"], s["job_id"]) for s in steps} == {("panda", job["id"])} | {
        ("ce", ce_id) for ce_id in ce_ids
    }


def test_job_history_merges_both_layers_in_time_order(db: Database, db_url: URL) -> None:
    (job_id,) = db.run(lambda c: panda_jobs_in(c, "Q1", "received", 3001))
    ce_id = db.run(lambda c: ce_job_in(c, job_id, CE_A, "tosubmit"))
    db.run(
        lambda c: transition(c, Layer.PANDA, [job_id], "received", "queued", actor=Actor.TRANSLATOR)
    )
    db.run(
        lambda c: transition(c, Layer.CE, [ce_id], "tosubmit", "submitting", actor=Actor.SUBMITTER)
    )
    db.run(
        lambda c: transition(
            c, Layer.CE, [ce_id], "submitting", "submitted", actor=Actor.SUBMITTER, reason="ok"
        )
    )
    db.run(
        lambda c: transition(c, Layer.PANDA, [job_id], "queued", "running", actor=Actor.APP_STATUS)
    )
    steps = json.loads(ok(actctl(db_url, "job", "3001", "--json")))["history"]
    assert [(s["layer"], s["job_id"], s["from_state"], s["to_state"]) for s in steps] == [
        ("panda", job_id, None, "received"),
        ("ce", ce_id, None, "tosubmit"),
        ("panda", job_id, "received", "queued"),
        ("ce", ce_id, "tosubmit", "submitting"),
        ("ce", ce_id, "submitting", "submitted"),
        ("panda", job_id, "queued", "running"),
    ]
    assert steps[4]["actor"] == "submitter" and steps[4]["reason"] == "ok"

    text = ok(actctl(db_url, "job", "3001"))
    header, rows = table_rows(text.split("History (both layers, oldest first)")[1])
    assert header == ["layer", "job_id", "at", "from_state", "to_state", "actor", "reason"]
    assert [(row[0], row[1], row[3], row[4], row[6]) for row in rows] == [
        ("panda", str(job_id), "", "received", ""),
        ("ce", str(ce_id), "", "tosubmit", ""),
        ("panda", str(job_id), "received", "queued", ""),
        ("ce", str(ce_id), "tosubmit", "submitting", ""),
        ("ce", str(ce_id), "submitting", "submitted", "ok"),
        ("panda", str(job_id), "queued", "running", ""),
    ]
    assert [row[2] for row in rows] == [step["at"] for step in steps]


def test_job_text_shows_fields_ce_jobs_and_the_spec_last(
    db_url: URL, scenario: dict[int, int]
) -> None:
    text = ok(actctl(db_url, "job", "1003"))
    assert text.startswith("PanDA job\n")
    header, rows = table_rows(text)
    assert header == ["field", "value"]
    fields = dict(rows)
    assert [name for name, _ in rows] == [c.name for c in panda_jobs.columns if c.name != "spec"]
    assert (fields["panda_id"], fields["queue"], fields["state"]) == ("1003", "Q1", "running")
    assert fields["error_code"] == "" and fields["created_at"].endswith("Z")
    _, first_ce = table_rows(text.split("CE job 1 of 2")[1])
    assert [name for name, _ in first_ce] == [
        c.name for c in ce_jobs.columns if c.name != "description"
    ]
    assert dict(first_ce)["ce_name"] == CE_B and dict(first_ce)["state"] == "cancelled"
    assert text.index('spec (17 characters):\n{"PandaID": 1003}') > text.index("lease_expires")
    assert text.index("CE job 1 of 2") < text.index(CE_B) < text.index("CE job 2 of 2")
    assert text.index("CE job 2 of 2") < text.index(CE_A) < text.index("History")


def test_job_truncates_a_long_spec_unless_full(db: Database, db_url: URL) -> None:
    spec = '{"PandaID": 4001, "pad": "' + "a" * 2400 + 'END"}'
    row = {**panda_row(4001), "spec": spec}
    db.run(lambda c: create_jobs(c, Layer.PANDA, [row], "received", actor=Actor.OPERATOR))
    short = ok(actctl(db_url, "job", "4001"))
    assert "END" not in short and spec[:2000] in short
    assert f"spec ({len(spec)} characters, first 2000 shown; --full shows all)" in short
    assert spec in ok(actctl(db_url, "job", "4001", "--full"))
    assert json.loads(ok(actctl(db_url, "job", "4001", "--json")))["panda_job"]["spec"] == spec
    assert "CE jobs: none" in short


def test_an_unknown_job_is_not_found(db_url: URL, scenario: dict[int, int]) -> None:
    for extra in ([], ["--json"]):
        result = actctl(db_url, "job", "999999", *extra)
        assert result.exit_code == exitcodes.NOT_FOUND
        assert result.stdout == "" and "no PanDA job 999999" in result.stderr


# --- processes ----------------------------------------------------------------------------------

TRACEBACK = "Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'bad'\n"


def _processes(db: Database, silent_for: float) -> None:
    """submitter/a live (with an error), submitter/b silent for a while, poller/c stopped."""

    def setup(conn: Connection) -> None:
        for instance, pid in (("a", 11), ("b", 12)):
            liveness.register(conn, "submitter", instance, "host1", pid)
            liveness.beat(conn, "submitter", instance, dead_after=60)
        liveness.register(conn, "poller", "c", "host2", 13)
        liveness.unregister(conn, "poller", "c")
        now = utcnow()
        liveness.record_cycle(
            conn,
            role="submitter",
            instance="a",
            started=now - timedelta(seconds=2),
            ended=now,
            error=TRACEBACK,
        )
        conn.execute(
            sa.update(processes)
            .where(processes.c.instance == "b")
            .values(heartbeat_at=utcnow() - timedelta(seconds=silent_for))
        )

    db.run(setup)


def test_processes_live_dead_and_stopped(db: Database, db_url: URL) -> None:
    _processes(db, silent_for=3600)
    rows = json.loads(ok(actctl(db_url, "processes", "--json")))
    assert [(r["role"], r["instance"], r["status"]) for r in rows] == [
        ("submitter", "a", "live"),
        ("submitter", "b", "dead"),
    ]
    live, dead = rows
    assert live["last_error"] == "KeyError: 'bad'" and live["errors"] == 1 and live["cycles"] == 1
    assert abs(live["last_cycle_seconds"] - 2.0) < 0.01 and live["heartbeat_age"] < 60
    assert 3590 < dead["heartbeat_age"] < 3700 and dead["last_error"] is None
    everyone = json.loads(ok(actctl(db_url, "processes", "--all", "--json")))
    assert [(r["instance"], r["status"]) for r in everyone] == [
        ("c", "stopped"),
        ("a", "live"),
        ("b", "dead"),
    ]
    header, rows = table_rows(ok(actctl(db_url, "processes", "--all")))
    assert header[:5] == ["role", "instance", "host", "pid", "status"]
    assert [row[:5] for row in rows] == [
        ["poller", "c", "host2", "13", "stopped"],
        ["submitter", "a", "host1", "11", "live"],
        ["submitter", "b", "host1", "12", "dead"],
    ]
    assert header[-3:] == ["last_cycle_ended_at", "last_cycle_seconds", "last_error"]
    assert rows[1][-2:] == ["2.000s", "KeyError: 'bad'"] and rows[2][-1] == ""
    assert "poller" not in ok(actctl(db_url, "processes"))


def test_processes_use_dead_after_from_the_config(
    db: Database, db_url: URL, tmp_path: Path
) -> None:
    _processes(db, silent_for=40)
    settings = tmp_path / "act.yaml"
    settings.write_text("liveness:\n  heartbeat_interval: 5\n  dead_after: 20\n")
    settings.chmod(0o600)
    strict = json.loads(ok(actctl(db_url, "processes", "--json", config_file=settings)))
    default = json.loads(ok(actctl(db_url, "processes", "--json")))
    assert [r["status"] for r in strict] == ["live", "dead"]
    assert [r["status"] for r in default] == ["live", "live"]


# --- states -------------------------------------------------------------------------------------


def _markdown_tables(text: str) -> dict[str, list[list[list[str]]]]:
    """{heading: [table, ...]} where a table is its rows' cells (header and rule left out)."""
    found: dict[str, list[list[list[str]]]] = {}
    heading = ""
    previous = ""
    for line in text.splitlines():
        if line.startswith("### "):
            heading = line[4:]
            found[heading] = []
        elif line.startswith("|"):
            if not previous.startswith("|"):
                found[heading].append([])
            found[heading][-1].append([cell.strip() for cell in line.strip("|").split("|")])
        previous = line
    return {h: [table[2:] for table in tables] for h, tables in found.items()}


def test_states_markdown_lists_every_state_and_edge() -> None:
    tables = _markdown_tables(ok(actctl(None, "states", "--markdown")))
    assert list(tables) == ["PanDA layer", "CE layer"]
    for layer, title in ((Layer.PANDA, "PanDA layer"), (Layer.CE, "CE layer")):
        states, moves = tables[title]
        assert states == [[s.name, s.kind.value, s.meaning] for s in STATES[layer].values()]
        expected = [
            [
                e.from_state or "(new)",
                e.to_state,
                ", ".join(sorted(a.value for a in e.actors)),
                e.why,
            ]
            for e in RULES
            if e.layer is layer
        ]
        assert sorted(moves) == sorted(expected)
        edges_shown = {(m[0], m[1]) for m in moves}
        assert edges_shown == {
            (source or "(new)", target) for (lay, source, target) in EDGES if lay is layer
        }


def test_states_markdown_is_deterministic_across_processes() -> None:
    outputs = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-m", "act.ctl.cli", "states", "--markdown"],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            check=True,
        )
        outputs.add(done.stdout)
    assert len(outputs) == 1
    assert outputs == {ok(actctl(None, "states", "--markdown"))}


def test_states_one_layer_plain_and_json() -> None:
    ce_only = ok(actctl(None, "states", "--layer", "ce"))
    assert ce_only.startswith("CE layer\n") and "PanDA layer" not in ce_only
    assert "(new)" in ce_only and "tosubmit" in ce_only and "donecancelled" not in ce_only
    data = json.loads(ok(actctl(None, "states", "--json")))
    assert set(data) == {"panda", "ce"}
    assert [s["name"] for s in data["ce"]["states"]] == list(STATES[Layer.CE])
    first = data["panda"]["transitions"][0]
    assert first == {
        "from": None,
        "to": "received",
        "actors": ["operator", "panda_fetcher"],
        "why": "job spec stored",
    }
    assert len(data["ce"]["transitions"]) == sum(e.layer is Layer.CE for e in RULES)
    assert actctl(None, "states", "--json", "--markdown").exit_code == exitcodes.USAGE


# --- errors and secrets -------------------------------------------------------------------------


@pytest.mark.parametrize("url", UNREACHABLE)
@pytest.mark.parametrize(
    "command",
    [["status"], ["jobs"], ["job", "1"], ["processes"], ["db", "upgrade"], ["db", "current"]],
)
def test_an_unreachable_database_is_named_without_its_password(
    url: str, command: list[str]
) -> None:
    result = actctl(url, *command)
    assert result.exit_code == exitcodes.DATABASE, result.output
    assert "127.0.0.1" in result.stderr and "unavailable" in result.stderr
    assert "act:***@127.0.0.1:1" in result.stderr
    assert PASSWORD not in result.output
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1


@pytest.fixture(params=[b for b in BACKENDS if b != "sqlite"])  # SQLite has no passwords
def secret_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[URL]:
    """An empty database reached as a user with a password."""
    backend = str(request.param)
    user = f"act_u_{secrets.token_hex(4)}"
    admin = sa.create_engine(SERVERS[backend], isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if backend == "postgresql":
            conn.exec_driver_sql(f"CREATE ROLE {user} LOGIN PASSWORD '{PASSWORD}'")
        else:
            conn.execute(sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY '{PASSWORD}'"))
    try:
        with fresh_database(backend, tmp_path, migrated=False) as url:
            with admin.connect() as conn:
                if backend == "postgresql":
                    conn.exec_driver_sql(f"ALTER DATABASE {url.database} OWNER TO {user}")
                else:
                    conn.execute(sa.text(f"GRANT ALL ON {url.database}.* TO '{user}'@'%'"))
            yield url.set(username=user, password=PASSWORD)
    finally:
        with admin.connect() as conn:
            drop = f"DROP ROLE {user}" if backend == "postgresql" else f"DROP USER '{user}'@'%'"
            conn.execute(sa.text(drop))
        admin.dispose()


def test_a_password_never_appears_in_any_output(secret_url: URL) -> None:
    outputs: list[Result] = [actctl(secret_url, "status")]
    assert outputs[0].exit_code == exitcodes.DATABASE  # no schema yet: named without password
    assert f"{secret_url.username}:***@" in outputs[0].stderr
    for command in (
        ["db", "upgrade"],
        ["db", "current"],
        ["status"],
        ["jobs", "--json"],
        ["processes", "--all"],
        ["states"],
    ):
        outputs.append(actctl(secret_url, *command))
        assert outputs[-1].exit_code == 0, outputs[-1].output
    outputs.append(actctl(secret_url, "job", "1"))
    assert outputs[-1].exit_code == exitcodes.NOT_FOUND
    assert f"{secret_url.username}:***@" in outputs[1].stdout
    for result in outputs:
        assert PASSWORD not in result.output


def test_an_invalid_config_is_exit_3_naming_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "act.yaml"
    bad.write_text("liveness:\n  dead_afterr: 5\n")
    result = actctl(None, "status", config_file=bad)
    assert result.exit_code == exitcodes.CONFIG
    assert "liveness.dead_afterr: unknown key (did you mean 'dead_after'?)" in result.stderr
    missing = actctl(None, "jobs", config_file=tmp_path / "nowhere.yaml")
    assert missing.exit_code == exitcodes.CONFIG and "cannot read the file" in missing.stderr
    wrong = actctl("nosuchdb://x/y", "status")
    assert wrong.exit_code == exitcodes.CONFIG and "unsupported database" in wrong.stderr


def test_main_returns_the_exit_codes(
    db_url: URL, scenario: dict[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    url = url_text(db_url)
    assert main(["--db-url", url, "jobs", "--panda-id", "1001", "--json"]) == exitcodes.OK
    assert json.loads(capsys.readouterr().out)[0]["panda_id"] == 1001
    assert main(["--db-url", url, "job", "77"]) == exitcodes.NOT_FOUND
    assert "no PanDA job 77" in capsys.readouterr().err
    assert main(["jobs", "--state", "nope"]) == exitcodes.USAGE
    assert "'nope' is not one of" in capsys.readouterr().err
    assert main(["--db-url", UNREACHABLE[0], "status"]) == exitcodes.DATABASE
    assert PASSWORD not in capsys.readouterr().err
    assert main(["--help"]) == exitcodes.OK
    assert "Exit codes:" in capsys.readouterr().out
