"""The engine's test double (tests/support/scripted_backend.py) does what it is scripted to."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from act.common import exitcodes
from act.common.daemon import DaemonSpec, run_daemon
from act.common.db import Database
from act.engine.backend import (
    BACKENDS,
    CE,
    CEReportedState,
    CEUnavailable,
    SubmitRequest,
    make_backend,
)
from act.engine.config import Context
from act.engine.runtime import pool
from act.engine.settings import CESettings
from act.service.settings import Settings
from tests.support.procs import REPO, SCRIPTED_DAEMON, daemon_once, env, write_config
from tests.support.scripted_backend import UNKNOWN, Script, job

LOG = logging.getLogger("act.test")
CE1 = CE("ce1", CESettings(backend="scripted"))
CE2 = CE("ce2", CESettings(backend="scripted"))


def backend(tmp_path: Path) -> object:
    return make_backend("scripted", settings=Settings(root=str(tmp_path)), db=None, log=LOG)


def req(job_id: int, token: str | None = None) -> SubmitRequest:
    return SubmitRequest(job_id=job_id, token=token or f"tok{job_id}", description="{}")


def test_registered_only_by_install(script: Script, tmp_path: Path) -> None:
    assert BACKENDS["scripted"] == "tests.support.scripted_backend:ScriptedBackend"
    assert type(backend(tmp_path)).__name__ == "ScriptedBackend"


def test_submit_records_and_permanent_and_transient_errors(script: Script, tmp_path: Path) -> None:
    be = make_backend("scripted", settings=Settings(root=str(tmp_path)), db=None, log=LOG)
    script.submit_error("bad description: executable", permanent=True, token="tok2")
    script.submit_error("busy", times=1, job_id=3)
    first = be.submit(CE1, [req(1), req(2), req(3)])
    assert [s.ce_job_id is not None for s in first] == [True, False, False]
    assert first[1].permanent and first[1].error == "bad description: executable"
    assert not first[2].permanent and first[2].error == "busy"
    again = be.submit(CE1, [req(3)])
    assert again[0].ce_job_id is not None and again[0].error is None
    assert script.submitted_tokens("ce1") == ["tok1", "tok3"]
    calls = script.calls("submit", ce="ce1")
    assert [c["tokens"] for c in calls] == [["tok1", "tok2", "tok3"], ["tok3"]]


def test_unavailable_ce_raises_on_every_call_but_others_work(
    script: Script, tmp_path: Path
) -> None:
    be = make_backend("scripted", settings=Settings(root=str(tmp_path)), db=None, log=LOG)
    script.ce_unavailable("ce1", "connection refused")
    with pytest.raises(CEUnavailable, match="ce1: connection refused"):
        be.submit(CE1, [req(1)])
    for call in (
        lambda: be.status(CE1, ["x"]),
        lambda: be.find(CE1, ["tok1"]),
        lambda: be.kill(CE1, ["x"]),
        lambda: be.clean(CE1, ["x"]),
        lambda: be.restart(CE1, ["x"]),
        lambda: be.fetch(CE1, "x", tmp_path, failed=False),
    ):
        with pytest.raises(CEUnavailable):
            call()
    assert be.submit(CE2, [req(2)])[0].ce_job_id is not None
    assert script.submitted_tokens() == ["tok2"]
    script.ce_unavailable("ce1", None)
    assert be.submit(CE1, [req(1)])[0].ce_job_id is not None


def test_lost_submit_reply_leaves_jobs_that_find_reports(script: Script, tmp_path: Path) -> None:
    be = make_backend("scripted", settings=Settings(root=str(tmp_path)), db=None, log=LOG)
    script.lose_submit_reply("ce1")
    with pytest.raises(CEUnavailable):
        be.submit(CE1, [req(1), req(2)])
    found = be.find(CE1, ["tok1", "tok2", "tok9"])
    assert set(found) == {"tok1", "tok2"}
    assert found["tok1"] == script.ce_job_id("tok1")
    assert be.find(CE2, ["tok1"]) == {}


def test_state_progression_kill_and_clean(script: Script, tmp_path: Path) -> None:
    be = make_backend("scripted", settings=Settings(root=str(tmp_path)), db=None, log=LOG)
    script.states(
        job(CEReportedState.RUNNING),
        job(CEReportedState.FAILED, exit_code=1, errors=["LRMS error: (271)"]),
        job_id=1,
    )
    script.states(UNKNOWN, token="tok3")
    ids = [s.ce_job_id for s in be.submit(CE1, [req(1), req(2), req(3)])]
    a, b, c = (i or "" for i in ids)
    first = {i: (s.state if s else None) for i, s in be.status(CE1, [a, b, c]).items()}
    assert first == {a: CEReportedState.RUNNING, b: CEReportedState.SUBMITTED, c: None}
    for _ in range(2):  # the last step stays
        later = be.status(CE1, [a])[a]
        assert later is not None and later.state is CEReportedState.FAILED
        assert later.exit_code == 1 and later.errors == ("LRMS error: (271)",)

    script.outcome("kill", "error", error="permission denied", ce_job_id=c)
    kills = be.kill(CE1, [b, c, "ce1/999"])
    assert kills[b].ok and not kills[c].ok and kills[c].error == "permission denied"
    assert kills["ce1/999"].gone
    killed = be.status(CE1, [b])[b]
    assert killed is not None and killed.state is CEReportedState.CANCELLED

    script.outcome("clean", "gone", ce_job_id=a)
    cleaned = be.clean(CE1, [a, b])
    assert cleaned[a].gone and cleaned[b].ok
    assert be.status(CE1, [b]) == {b: None}
    assert be.clean(CE1, [b])[b].gone
    assert [c["ids"] for c in script.calls("clean")] == [[a, b], [b]]


def test_restart_restarts_the_progression(script: Script, tmp_path: Path) -> None:
    be = make_backend("scripted", settings=Settings(root=str(tmp_path)), db=None, log=LOG)
    assert be.limits(CE1).can_restart
    script.states(
        job(CEReportedState.FAILED, restartable=True), job(CEReportedState.FINISHED, exit_code=0)
    )
    (sub,) = be.submit(CE1, [req(1)])
    jid = sub.ce_job_id or ""
    before = be.status(CE1, [jid])[jid]
    assert before is not None and before.state is CEReportedState.FAILED
    assert be.restart(CE1, [jid])[jid].ok
    after = be.status(CE1, [jid])[jid]
    assert after is not None and after.state is CEReportedState.FAILED
    assert script.jobs()[jid]["restarts"] == 1


def test_fetch_writes_scripted_files_or_errors(script: Script, tmp_path: Path) -> None:
    be = make_backend("scripted", settings=Settings(root=str(tmp_path)), db=None, log=LOG)
    script.fetch({"heartbeat.json": '{"state": "finished"}', "logs/a.txt": b"\x00\xff"}, job_id=1)
    script.fetch(error="session dir gone", diagnostics="LRMS said no", job_id=2)
    ids = [s.ce_job_id or "" for s in be.submit(CE1, [req(1), req(2)])]
    dest = tmp_path / "out"
    fetched = be.fetch(CE1, ids[0], dest, failed=False)
    assert fetched.error is None and fetched.files == ("heartbeat.json", "logs/a.txt")
    assert (dest / "logs" / "a.txt").read_bytes() == b"\x00\xff"
    assert fetched.size == len('{"state": "finished"}') + 2
    failed = be.fetch(CE1, ids[1], tmp_path / "out2", failed=True)
    assert failed.error == "session dir gone" and failed.diagnostics == "LRMS said no"
    assert be.fetch(CE1, "ce1/77", dest, failed=False).gone


def test_state_is_shared_with_another_process(script: Script, tmp_path: Path) -> None:
    """A back end made in a child process (via make_backend) sees the script and records calls."""
    be = make_backend("scripted", settings=Settings(root=str(tmp_path)), db=None, log=LOG)
    script.states(job(CEReportedState.FINISHED, exit_code=0), job_id=1)
    (sub,) = be.submit(CE1, [req(1)])
    code = textwrap.dedent(
        f"""
        import logging
        from act.service.settings import Settings
        from act.engine.backend import CE, make_backend
        from act.engine.settings import CESettings
        from tests.support.scripted_backend import install
        install()
        be = make_backend("scripted", settings=Settings(), db=None, log=logging.getLogger())
        print(be.status(CE("ce1", CESettings(backend="scripted")), [{sub.ce_job_id!r}]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env(tmp_path, ACT_SCRIPTED_BACKEND_STATE=str(script.path)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "CEReportedState.FINISHED" in done.stdout
    status_calls = script.calls("status")
    assert len(status_calls) == 1 and status_calls[0]["pid"] != script.calls("submit")[0]["pid"]


def _probe_cycle(ctx: Context) -> bool:
    """Submit one request to every configured CE through the engine's pool of back ends."""
    engine = pool(ctx)
    for ce in engine.ces():
        try:
            engine.backend(ce).submit(ce, [req(1, token=f"probe-{ce.name}")])
        except CEUnavailable as error:
            ctx.log.warning("%s", error)
    return False


PROBE = DaemonSpec(run_once=_probe_cycle, doc="test daemon driving the scripted back end")


def _daemon_config(db_url: URL, tmp_path: Path) -> dict[str, object]:
    return {
        "root": str(tmp_path),
        "db": {"url": db_url.render_as_string(hide_password=False)},
        "daemons": {"probe": {"entry": "tests.test_scripted_backend:PROBE"}},
        "engine": {"ces": {"ce1": {"backend": "scripted"}, "ce2": {"backend": "scripted"}}},
    }


def test_a_daemon_in_process_uses_it_through_the_engine_pool(
    script: Script, db: Database, db_url: URL, tmp_path: Path
) -> None:
    script.ce_unavailable("ce2")
    settings = Settings.model_validate(_daemon_config(db_url, tmp_path))
    assert run_daemon(PROBE, settings, "probe", once=True, db=db) == exitcodes.OK
    assert script.submitted_tokens() == ["probe-ce1"]
    assert [c["ce"] for c in script.calls("submit")] == ["ce1", "ce2"]
    assert len(script.calls("close")) == 1  # the pool's one back end, closed at stop


def test_a_daemon_in_another_process_follows_the_same_script(
    script: Script, db_url: URL, tmp_path: Path
) -> None:
    script.submit_error("rejected", permanent=True, ce="ce1")
    config = write_config(tmp_path / "act.yaml", _daemon_config(db_url, tmp_path))
    state = str(script.path)
    done = daemon_once(
        "probe", config, tmp_path, command=SCRIPTED_DAEMON, ACT_SCRIPTED_BACKEND_STATE=state
    )
    assert done.returncode == 0, done.stderr
    assert script.submitted_tokens() == ["probe-ce2"]
    (call,) = script.calls("submit", ce="ce1")
    assert call["tokens"] == ["probe-ce1"] and call["pid"] != os.getpid()
