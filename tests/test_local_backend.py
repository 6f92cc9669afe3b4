"""The local back end with real processes: runners, slots, kill, walltime, fetch, find."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from act.common.config import ConfigError
from act.engine.backend import CE, TERMINAL, CEReportedState, JobStatus, SubmitRequest, make_backend
from act.engine.settings import CESettings
from act.local.backend import LocalBackend, token_prefix
from act.local.description import DescriptionError, LocalJob
from act.service.settings import Settings
from tests.support.procs import REPO, alive, env, wait_for

LOG = logging.getLogger("act.test.local")


def make(tmp_path: Path, **engine: Any) -> LocalBackend:
    settings = Settings.model_validate({"root": str(tmp_path), "engine": engine})
    backend = make_backend("local", settings=settings, db=None, log=LOG)
    assert isinstance(backend, LocalBackend)
    return backend


def local_ce(slots: int = 2, **options: Any) -> CE:
    return CE(
        "local1", CESettings(backend="local", options={"slots": slots, "grace": 1, **options})
    )


def describe(executable: str, *arguments: str, **fields: Any) -> str:
    return json.dumps({"executable": executable, "arguments": list(arguments), **fields})


_tokens = iter(range(1, 1_000_000))


def submit(be: LocalBackend, ce: CE, description: str, **request: Any) -> str:
    number = next(_tokens)
    request.setdefault("token", f"token-{number}")
    (result,) = be.submit(ce, [SubmitRequest(job_id=number, description=description, **request)])
    assert result.error is None and result.ce_job_id, result
    return result.ce_job_id


def status(be: LocalBackend, ce: CE, ce_job_id: str) -> JobStatus:
    found = be.status(ce, [ce_job_id])[ce_job_id]
    assert found is not None
    return found


def ended(be: LocalBackend, ce: CE, ce_job_id: str, timeout: float = 30.0) -> JobStatus:
    def done() -> JobStatus | None:
        found = status(be, ce, ce_job_id)
        return found if found.state in TERMINAL else None

    result: JobStatus = wait_for(done, timeout, f"job {ce_job_id} to end")
    return result


def state_file(be: LocalBackend, ce: CE, ce_job_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        (be.workdir(ce) / "jobs" / ce_job_id / "state.json").read_text()
    )
    return data


def test_a_job_finishes_with_its_output_captured(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce()
    job_id = submit(
        be,
        ce,
        describe(
            "sh",
            "-c",
            "echo hello; echo oops >&2; echo $GREETING",
            environment={"GREETING": "hi there"},
        ),
    )
    result = ended(be, ce, job_id)
    assert (
        result.state is CEReportedState.FINISHED and result.exit_code == 0 and result.errors == ()
    )
    assert result.started_at is not None and result.ended_at is not None
    assert result.started_at <= result.ended_at and result.cpu_seconds is not None
    assert result.max_rss_kb is not None and result.max_rss_kb > 0
    fetched = be.fetch(ce, job_id, tmp_path / "out", failed=False)
    assert fetched.error is None and set(fetched.files) == {"stdout", "stderr"}
    assert (tmp_path / "out" / "stdout").read_text() == "hello\nhi there\n"
    assert (tmp_path / "out" / "stderr").read_text() == "oops\n"
    assert be.workdir(ce) == tmp_path / "local-ce" / "local1"


def test_a_nonzero_exit_is_failed_with_the_exit_code(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce()
    result = ended(be, ce, submit(be, ce, describe("sh", "-c", "exit 3")))
    assert result.state is CEReportedState.FAILED and result.exit_code == 3
    assert any("exit code 3" in error for error in result.errors), result.errors


def test_a_missing_executable_fails_the_job(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce()
    result = ended(be, ce, submit(be, ce, describe("/nonexistent/payload")))
    assert result.state is CEReportedState.FAILED
    assert "cannot start '/nonexistent/payload'" in result.errors[0]


def test_inputs_are_copied_and_outputs_fetched(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    (inputs / "sub").mkdir(parents=True)
    (inputs / "run.sh").write_text(
        "#!/bin/sh\ncat sub/data.txt > result.txt\nmkdir -p d\necho x > d/y\n"
    )
    (inputs / "run.sh").chmod(0o755)
    (inputs / "sub" / "data.txt").write_text("payload data\n")
    be, ce = make(tmp_path), local_ce()
    job_id = submit(
        be,
        ce,
        describe(
            "./run.sh", inputs=["run.sh", "sub/data.txt"], outputs=["result.txt", "d", "nope"]
        ),
        input_dir=inputs,
    )
    assert ended(be, ce, job_id).state is CEReportedState.FINISHED
    fetched = be.fetch(ce, job_id, tmp_path / "out", failed=False)
    assert fetched.error is None
    assert set(fetched.files) == {"stdout", "stderr", "result.txt", "d/y"}
    assert (tmp_path / "out" / "result.txt").read_text() == "payload data\n"
    assert os.access(be.workdir(ce) / "jobs" / job_id / "work" / "run.sh", os.X_OK)
    assert fetched.size == len("payload data\n") + len("x\n")
    assert fetched.diagnostics is not None and "missing output: nope" in fetched.diagnostics


def test_slots_bound_the_jobs_running_at_once(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce(slots=2)
    ids = [submit(be, ce, describe("sleep", "0.4")) for _ in range(4)]
    seen_running = 0
    while True:
        states = [s.state for s in be.status(ce, ids).values() if s is not None]
        assert states.count(CEReportedState.RUNNING) <= 2
        seen_running = max(seen_running, states.count(CEReportedState.RUNNING))
        if all(state in TERMINAL for state in states):
            break
    results = [status(be, ce, i) for i in ids]
    assert all(r.state is CEReportedState.FINISHED for r in results)
    # From the jobs' own timestamps: at no start were more than 2 jobs inside their run.
    spans: list[tuple[datetime, datetime]] = [
        (r.started_at, r.ended_at) for r in results if r.started_at and r.ended_at
    ]
    assert len(spans) == 4
    for start, _ in spans:
        assert sum(1 for s, e in spans if s <= start < e) <= 2
    assert seen_running >= 1


def test_kill_takes_the_whole_process_tree(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    be, ce = make(tmp_path), local_ce()
    command = describe("sh", "-c", "sleep 60 & echo $! > child.pid; wait")
    job_id = submit(be, ce, command, panda_id=4242)
    child = be.workdir(ce) / "jobs" / job_id / "work" / "child.pid"
    wait_for(lambda: child.exists() and child.read_text().strip(), what="the child's pid")
    child_pid = int(child.read_text())
    assert alive(child_pid)
    with caplog.at_level(logging.INFO, logger=LOG.name):
        outcome = be.kill(ce, [job_id])[job_id]
    assert outcome.ok
    assert f"panda_id=4242 ce=local1: killed {job_id}" in caplog.messages
    assert not alive(child_pid)
    result = status(be, ce, job_id)
    assert result.state is CEReportedState.CANCELLED
    assert not alive(state_file(be, ce, job_id)["runner_pid"])
    # Killing again, or killing a job that ended, is harmless.
    assert be.kill(ce, [job_id])[job_id].ok


def test_a_payload_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce(grace=0.3)
    job_id = submit(be, ce, describe("sh", "-c", "trap '' TERM; sleep 60 & echo $! > c.pid; wait"))
    pid_file = be.workdir(ce) / "jobs" / job_id / "work" / "c.pid"
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), what="the child's pid")
    child_pid = int(pid_file.read_text())
    assert be.kill(ce, [job_id])[job_id].ok
    assert not alive(child_pid)
    assert status(be, ce, job_id).state is CEReportedState.CANCELLED


def test_a_queued_job_can_be_killed(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce(slots=1)
    first = submit(be, ce, describe("sleep", "60"))
    second = submit(be, ce, describe("sh", "-c", "echo ran > ran.txt"))
    wait_for(
        lambda: status(be, ce, first).state is CEReportedState.RUNNING, what="first job running"
    )
    assert status(be, ce, second).state is CEReportedState.SUBMITTED
    outcomes = be.kill(ce, [second, first])
    assert list(outcomes) == [second, first] and all(o.ok for o in outcomes.values())
    assert status(be, ce, second).state is CEReportedState.CANCELLED
    assert status(be, ce, first).state is CEReportedState.CANCELLED
    assert not (be.workdir(ce) / "jobs" / second / "work" / "ran.txt").exists()


def test_walltime_exceeded_fails_the_job(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce()
    result = ended(be, ce, submit(be, ce, describe("sleep", "60", walltime=0.3)))
    assert result.state is CEReportedState.FAILED
    assert any("walltime" in error for error in result.errors), result.errors


def test_a_runner_killed_with_sigkill_is_reported_failed(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce()
    job_id = submit(be, ce, describe("sleep", "60"))
    wait_for(lambda: status(be, ce, job_id).state is CEReportedState.RUNNING, what="job running")
    state = state_file(be, ce, job_id)
    os.kill(state["runner_pid"], signal.SIGKILL)
    wait_for(lambda: not alive(state["runner_pid"]), what="runner gone")
    result = status(be, ce, job_id)
    assert result.state is CEReportedState.FAILED
    assert any("runner died" in error for error in result.errors), result.errors
    assert result.lost  # the payload's fate is unknown: the site's fault, not the payload's
    wait_for(lambda: not alive(state["pid"]), what="the orphaned payload killed")


def _kill_runner_group(state: dict[str, Any]) -> None:
    """SIGKILL the runner's process group (a power cut for the runner; its own session)."""
    os.killpg(state["runner_pid"], signal.SIGKILL)
    wait_for(lambda: not alive(state["runner_pid"]), what="runner gone")


def test_a_runner_killed_before_starting_the_payload_leaves_a_lost_job(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce(slots=1)
    first = submit(be, ce, describe("sleep", "60"))
    wait_for(lambda: status(be, ce, first).state is CEReportedState.RUNNING, what="first running")
    second = submit(be, ce, describe("sh", "-c", "echo ran > ran.txt"))
    assert status(be, ce, second).state is CEReportedState.SUBMITTED  # waits for the slot
    queued = state_file(be, ce, second)
    assert queued["state"] == "queued"
    _kill_runner_group(queued)
    result = status(be, ce, second)
    assert result.state is CEReportedState.FAILED and result.lost, result
    assert result.errors == (
        f"the job was lost: its runner died (pid {queued['runner_pid']}) before starting the"
        " payload",
    )
    assert state_file(be, ce, second)["lost"] is True
    assert not (be.workdir(ce) / "jobs" / second / "work" / "ran.txt").exists()
    be.kill(ce, [first])


def test_a_runner_that_never_started_leaves_a_lost_job(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce()
    job_id = submit(be, ce, describe("sleep", "60"))
    jobdir = be.workdir(ce) / "jobs" / job_id
    _kill_runner_group(state_file(be, ce, job_id))
    (jobdir / "state.json").unlink()  # as if the runner never recorded itself
    job = json.loads((jobdir / "job.json").read_text())
    job["submitted_at"] = "2020-01-01T00:00:00+00:00"
    (jobdir / "job.json").write_text(json.dumps(job))
    result = status(be, ce, job_id)
    assert result.state is CEReportedState.FAILED and result.lost, result
    assert result.errors == ("the job was lost: its runner never started",)


def test_a_runner_killed_while_uploading_a_failed_payloads_outputs_is_a_payload_failure(
    tmp_path: Path,
) -> None:
    """The payload's exit was recorded (state finishing with exit_code): that decides."""
    be, ce = make(tmp_path), local_ce()
    for code, lost in ((3, False), (0, True)):
        job_id = submit(be, ce, describe("sleep", "60"))
        wait_for(lambda: status(be, ce, job_id).state is CEReportedState.RUNNING, what="running")
        state = state_file(be, ce, job_id)
        _kill_runner_group(state)
        os.killpg(state["pgid"], signal.SIGKILL)
        wait_for(lambda: not alive(state["pid"]), what="payload gone")
        state.update(state="finishing", exit_code=code)  # as the runner records it
        (be.workdir(ce) / "jobs" / job_id / "state.json").write_text(json.dumps(state))
        result = status(be, ce, job_id)
        assert result.state is CEReportedState.FAILED and result.lost is lost, result
        assert result.exit_code == code
        assert ("payload failed: exit code 3" in result.errors[0]) is not lost, result.errors


def test_jobs_outlive_their_submitter_and_another_instance_sees_them(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import json, logging
        from act.service.settings import Settings
        from act.engine.backend import CE, SubmitRequest
        from act.engine.settings import CESettings
        from act.local.backend import LocalBackend
        be = LocalBackend(settings=Settings(root={str(tmp_path)!r}), db=None,
                          log=logging.getLogger())
        ce = CE("local1", CESettings(backend="local", options={{"slots": 2}}))
        desc = json.dumps({{"executable": "sh", "arguments": ["-c", "sleep 0.3; echo done"]}})
        (r,) = be.submit(ce, [SubmitRequest(job_id=1, token="tok-sub", description=desc)])
        print(r.ce_job_id)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env(tmp_path),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    job_id = done.stdout.strip()
    be, ce = make(tmp_path), local_ce()
    assert be.find(ce, ["tok-sub"]) == {"tok-sub": job_id}
    result = ended(be, ce, job_id)
    assert result.state is CEReportedState.FINISHED
    be.fetch(ce, job_id, tmp_path / "out", failed=False)
    assert (tmp_path / "out" / "stdout").read_text() == "done\n"


def _spawner_of(be: LocalBackend, ce: CE, job_id: str) -> int:
    """The pid of the spawner that forked the job's runner (the runner's parent)."""
    runner = state_file(be, ce, job_id)["runner_pid"]
    parent = int(Path(f"/proc/{runner}/stat").read_text().rsplit(")", 1)[1].split()[1])
    assert b"act.local.spawner" in Path(f"/proc/{parent}/cmdline").read_bytes()
    return parent


def test_runners_are_forked_by_a_spawner_that_jobs_outlive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # a work directory deeper than a socket address may be long (108 bytes): still served
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    be, ce = make(deep), local_ce()
    first = submit(be, ce, describe("sh", "-c", "sleep 1; echo first"))
    server = _spawner_of(be, ce, first)
    os.kill(server, signal.SIGKILL)  # the CE's service dies: its jobs go on
    wait_for(lambda: not alive(server), what="spawner gone")
    second = submit(be, ce, describe("sh", "-c", "sleep 0.5; echo second"))  # a new spawner
    assert _spawner_of(be, ce, second) != server
    for job_id, text in ((first, "first\n"), (second, "second\n")):
        assert ended(be, ce, job_id).state is CEReportedState.FINISHED
        be.fetch(ce, job_id, tmp_path / job_id, failed=False)
        assert (tmp_path / job_id / "stdout").read_text() == text
    assert "one runner process per job" not in caplog.text


def test_a_job_whose_submitter_died_before_its_runner_started_runs_once_found(
    tmp_path: Path,
) -> None:
    # the submitter wrote job.json and was killed before asking for the runner: the CE has the
    # job (find says so, reconciliation marks it submitted), so find starts its runner
    be, ce = make(tmp_path), local_ce()
    request = SubmitRequest(
        job_id=1, token="tok-orphan", description=describe("sh", "-c", "echo ran >> ../ran")
    )
    root = be.workdir(ce) / "jobs"
    root.mkdir(parents=True)
    (be.workdir(ce) / "slots").mkdir()
    jobdir = root / f"{token_prefix('tok-orphan')}-orphan1"
    job = LocalJob.parse(request.description)
    be._prepare(jobdir, job, request, be.options(ce), root.parent / "slots")
    assert not (jobdir / "state.json").exists()
    assert be.find(ce, ["tok-orphan"]) == {"tok-orphan": jobdir.name}
    assert ended(be, ce, jobdir.name).state is CEReportedState.FINISHED
    # a runner arriving late (the dead submitter's request) finds the job taken: no second run
    assert be.find(ce, ["tok-orphan"]) == {"tok-orphan": jobdir.name}
    late = subprocess.run(
        [sys.executable, "-S", "-m", "act.local.runner", str(jobdir)],
        env=env(tmp_path),
        cwd=REPO,
        check=False,
    )
    assert late.returncode == 0
    assert (jobdir / "ran").read_text() == "ran\n"


def test_find_by_token(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce()
    a = submit(be, ce, describe("true"), token="alpha")
    b = submit(be, ce, describe("true"), token="beta")
    assert be.find(ce, ["alpha", "beta", "gamma"]) == {"alpha": a, "beta": b}
    assert make(tmp_path).find(ce, ["beta"]) == {"beta": b}
    assert be.find(CE("other", ce.settings), ["alpha"]) == {}


def test_fetch_refuses_symlinks_out_of_the_job(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours\n")
    be, ce = make(tmp_path), local_ce()
    link = submit(
        be,
        ce,
        describe("sh", "-c", f"ln -s {secret} out.txt", outputs=["out.txt"]),
    )
    assert ended(be, ce, link).state is CEReportedState.FINISHED
    fetched = be.fetch(ce, link, tmp_path / "out", failed=False)
    assert fetched.error is not None and "is a symbolic link, not followed" in fetched.error
    assert not (tmp_path / "out" / "out.txt").exists()
    inner = submit(
        be,
        ce,
        describe("sh", "-c", f"mkdir d; ln -s {secret} d/escape; echo ok > d/fine", outputs=["d"]),
    )
    ended(be, ce, inner)
    fetched = be.fetch(ce, inner, tmp_path / "out2", failed=False)
    assert fetched.error is not None and "escape" in fetched.error


def test_a_symlink_the_payload_planted_fails_the_fetch_naming_the_job(tmp_path: Path) -> None:
    """Outputs are reached through act.common.safe_paths: a link is never followed, wherever it
    points (outside the job, into it, or as a directory on the way), and the error names the
    job and the link."""
    (outside := tmp_path / "outside").mkdir()
    (outside / "x").write_text("not yours\n")
    be, ce = make(tmp_path), local_ce()
    cases = {
        "into the job": ("echo data > a; ln -s a b", ["b"], "'b' is a symbolic link"),
        "a directory on the way": (
            f"ln -s {outside} d",
            ["d/x"],
            "a directory on the way to 'd/x' is a symbolic link",
        ),
        "below an output directory": (
            "mkdir d; echo data > d/a; ln -s a d/b",
            ["d"],
            "'d/b' is a symbolic link",
        ),
    }
    for case, (script, outputs, expected) in cases.items():
        job_id = submit(be, ce, describe("sh", "-c", script, outputs=outputs), token=case)
        assert ended(be, ce, job_id).state is CEReportedState.FINISHED
        dest = tmp_path / case.replace(" ", "-")
        fetched = be.fetch(ce, job_id, dest, failed=False)
        assert fetched.error is not None, case
        assert fetched.error.startswith(f"job {job_id}: output "), fetched.error
        assert expected in fetched.error, fetched.error
        assert "not followed" in fetched.error, fetched.error
        assert not any(path.name in ("b", "x") for path in dest.rglob("*")), case


def test_fetch_respects_the_caps(tmp_path: Path) -> None:
    be = make(tmp_path, fetch={"max_bytes": 1000, "max_files": 4})
    ce = local_ce()
    big = submit(be, ce, describe("sh", "-c", "head -c 2000 /dev/zero > big", outputs=["big"]))
    ended(be, ce, big)
    fetched = be.fetch(ce, big, tmp_path / "out", failed=False)
    assert fetched.error is not None and "max_bytes=1000" in fetched.error
    assert not (tmp_path / "out" / "big").exists()
    many = submit(be, ce, describe("sh", "-c", "mkdir d; touch d/1 d/2 d/3", outputs=["d"]))
    ended(be, ce, many)
    fetched = be.fetch(ce, many, tmp_path / "out2", failed=False)
    assert fetched.error is not None and "max_files=4" in fetched.error


def test_failed_fetch_brings_diagnostics(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce()
    job_id = submit(be, ce, describe("sh", "-c", "echo broken >&2; exit 7"))
    ended(be, ce, job_id)
    fetched = be.fetch(ce, job_id, tmp_path / "out", failed=True)
    assert fetched.error is None and fetched.diagnostics is not None
    assert "exit code 7" in fetched.diagnostics and "broken" in fetched.diagnostics


@pytest.mark.parametrize(
    ("description", "field"),
    [
        ('{"arguments": []}', "executable"),
        (describe("true", cores="two"), "cores"),
        (describe("true", cores=64), "cores"),
        (describe("true", outputs=["../escape"]), "outputs"),
        (describe("true", outputs=["stdout"]), "outputs"),
        (describe("true", environment={"A B": "x"}), "environment"),
        (describe("true", walltime=-1), "walltime"),
        (describe("true", colour="red"), "colour"),
        ("[1, 2]", "(document)"),
        ("not json", "(document)"),
        (describe("true", inputs=["missing.txt"]), "inputs"),
    ],
)
def test_bad_descriptions_are_rejected_naming_the_field(
    tmp_path: Path, description: str, field: str
) -> None:
    be, ce = make(tmp_path), local_ce(slots=2)
    (inputs := tmp_path / "in").mkdir()
    (result,) = be.submit(
        ce, [SubmitRequest(job_id=1, token="t", description=description, input_dir=inputs)]
    )
    assert result.ce_job_id is None and result.permanent
    assert result.error is not None and f"{field}:" in result.error, result.error
    assert be.find(ce, ["t"]) == {}


def test_inputs_outside_the_input_dir_are_refused(tmp_path: Path) -> None:
    (inputs := tmp_path / "in").mkdir()
    (tmp_path / "secret").write_text("x")
    (inputs / "link").symlink_to(tmp_path / "secret")
    be, ce = make(tmp_path), local_ce()
    (result,) = be.submit(
        ce,
        [
            SubmitRequest(
                job_id=1, token="t", description=describe("true", inputs=["link"]), input_dir=inputs
            )
        ],
    )
    assert result.permanent and result.error is not None and "outside" in result.error


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("link", "'link' is a symbolic link, not followed"),
        ("sub/data.txt", "a directory on the way to 'sub/data.txt' is a symbolic link"),
    ],
)
def test_a_symlink_in_the_input_dir_is_never_followed(
    tmp_path: Path, name: str, expected: str
) -> None:
    """Inputs are read through act.common.safe_paths: a link below the input directory is
    refused even when it points at one of its own files (the job is not submitted)."""
    (inputs := tmp_path / "in").mkdir()
    (inputs / "real").mkdir()
    (inputs / "real" / "data.txt").write_text("x")
    (inputs / "link").symlink_to(inputs / "real" / "data.txt")
    (inputs / "sub").symlink_to(inputs / "real")
    be, ce = make(tmp_path), local_ce()
    (result,) = be.submit(
        ce,
        [
            SubmitRequest(
                job_id=1, token="t", description=describe("true", inputs=[name]), input_dir=inputs
            )
        ],
    )
    assert result.ce_job_id is None and result.permanent
    assert result.error is not None and expected in result.error, result.error
    assert be.find(ce, ["t"]) == {}


def test_description_round_trip() -> None:
    job = LocalJob(executable="sh", arguments=["-c", "true"], outputs=["a/b"], cores=2)
    assert LocalJob.parse(job.to_description()) == job
    with pytest.raises(DescriptionError) as caught:
        LocalJob.parse('{"executable": ""}')
    assert caught.value.field == "executable"


def test_clean_only_after_the_end_and_restart_is_refused(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce()
    job_id = submit(be, ce, describe("sleep", "60"))
    refused = be.clean(ce, [job_id])[job_id]
    assert not refused.ok and refused.error is not None and "kill it" in refused.error
    assert not be.limits(ce).can_restart
    restart = be.restart(ce, [job_id])[job_id]
    assert not restart.ok and restart.error
    be.kill(ce, [job_id])
    assert be.clean(ce, [job_id])[job_id].ok
    assert not (be.workdir(ce) / "jobs" / job_id).exists()
    assert be.status(ce, [job_id]) == {job_id: None}
    assert be.clean(ce, [job_id])[job_id].gone
    assert be.kill(ce, [job_id])[job_id].gone
    assert be.fetch(ce, job_id, tmp_path / "x", failed=False).gone


def test_a_cleaner_killed_while_removing_leaves_no_half_deleted_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by the kill test: a cleaner SIGKILLed inside rmtree left a job directory with its
    # job.json but without state.json, which reads as "queued" (clean refused for a minute).
    be, ce = make(tmp_path), local_ce()
    first, second = submit(be, ce, describe("true")), submit(be, ce, describe("true"))
    ended(be, ce, first), ended(be, ce, second)
    jobs = be.workdir(ce) / "jobs"

    class Killed(BaseException):
        pass

    def dies_half_way(path: Path, **_: Any) -> None:
        (Path(path) / "state.json").unlink()  # rmtree got this far when the process died
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr("act.local.backend.shutil.rmtree", dies_half_way)
        with pytest.raises(Killed):
            be.clean(ce, [first])
    assert be.status(ce, [first]) == {first: None}  # gone, not a half job that looks queued
    assert be.clean(ce, [first])[first].gone
    assert be.clean(ce, [second])[second].ok
    assert sorted(p.name for p in jobs.iterdir()) == []  # the leftover was swept too


def test_malformed_ids_are_unknown(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce()
    assert be.status(ce, ["../../etc", "0123456789abcdef-zzzzzz"]) == {
        "../../etc": None,
        "0123456789abcdef-zzzzzz": None,
    }


def test_bad_options_are_a_config_error(tmp_path: Path) -> None:
    be = make(tmp_path)
    with pytest.raises(ConfigError, match=r"engine\.ces\.bad\.options\.slots"):
        be.limits(CE("bad", CESettings(backend="local", options={"slots": 0})))
    assert be.limits(CE("d", CESettings(backend="local"))).extras["slots"] == (os.cpu_count() or 1)
