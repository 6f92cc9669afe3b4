"""The embedded demo (``actctl demo``): its pilot alone, its config, and the whole run through the
real command (the PanDA TEST DOUBLE, SQLite, actd with every daemon, the local CE, file://
storage, the web area)."""

from __future__ import annotations

import fcntl
import io
import json
import os
import signal
import subprocess
import sys
import sysconfig
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
import sqlalchemy as sa

import act
from act.atlas import pilot_files
from act.atlas.translate.jobfile import form_text
from act.common import safe_tar
from act.common.db import Database
from act.common.schema import panda_jobs
from act.demo import pilot, progress, run
from act.local.stageout import Uploader, stage_out
from act.service.settings import load_settings
from act.testing.panda import make_job_spec
from tests.conftest import REPO

PIPELINE = (
    "panda_fetcher", "translator", "submitter", "poller", "ce_fetcher", "app_status",
    "validator", "propagator", "canceller", "cleaner", "janitor", "weblogs",
    "retention",
)  # fmt: skip


def _adler32(path: Path) -> str:
    return f"{zlib.adler32(path.read_bytes()) & 0xFFFFFFFF:08x}"


def _local(url: str) -> Path:
    assert url.startswith("file://"), url
    return Path(unquote(urlsplit(url).path))


def _upload(work: Path) -> dict[str, Any]:
    """What the CE does after the pilot: upload what its output.list names (the local CE's
    stage-out, as an ARC CE's data staging)."""
    uploader = Uploader(timeout=10, attempts=1)
    try:
        return stage_out(work, pilot.OUTPUT_LIST, uploader)
    finally:
        uploader.close()


def _job_dir(tmp_path: Path, panda_id: int) -> Path:
    work = tmp_path / f"job{panda_id}"
    work.mkdir()
    # the job file as act ships it (tests/test_jobfile.py: as pilot3 reads it)
    spec = make_job_spec(panda_id, n_outputs=2)
    (work / pilot.JOB_SPEC).write_text(form_text(panda_id, spec))
    return work


# -- the pilot alone -----------------------------------------------------------------------------


def test_the_pilot_leaves_a_heartbeat_act_accepts_and_its_outputs_on_storage(
    tmp_path: Path,
) -> None:
    work, storage = _job_dir(tmp_path, 7), tmp_path / "storage"
    spec = make_job_spec(7, n_outputs=2)
    printed: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            printed.append(text)

        def flush(self) -> None:
            pass

    pilot.run(work, storage, sleep=(0, 0), out=Out())

    heartbeat = pilot_files.read_heartbeat(work)  # act's own reader of untrusted pilot files
    assert heartbeat is not None and heartbeat.state == "finished"
    assert heartbeat.fields["jobId"] == "7" and heartbeat.fields["pilotErrorCode"] == 0
    lfns = {f.lfn for f in heartbeat.outputs}
    assert lfns == set(spec["outFiles"].split(","))  # two HITS files and the log
    # left beside the pilot for the CE, named in output.list, then uploaded by the CE
    for output in heartbeat.outputs:
        assert _adler32(work / output.lfn) == output.adler32
    assert not storage.exists()
    assert _upload(work)["ok"] is True
    for output in heartbeat.outputs:
        path = _local(output.surl)
        assert path.is_relative_to(storage.resolve())
        assert path.stat().st_size == output.fsize
        assert _adler32(path) == output.adler32
        assert output.guid is not None
    log = next(f for f in heartbeat.outputs if f.lfn == spec["logFile"])
    assert log.guid == spec["logGUID"]
    # the log tarball: in the job directory (the CE returns it) and on storage, same bytes
    tarball = work / spec["logFile"]
    assert tarball.read_bytes() == _local(log.surl).read_bytes()
    extracted = safe_tar.extract(tarball, tmp_path / "x", max_bytes=1 << 20, max_files=10)
    logs = [name for name in extracted if name.endswith("/" + pilot.PILOT_LOG)]
    assert len(logs) == 1
    text = (tmp_path / "x" / logs[0]).read_text()
    assert "PanDA job 7" in text and "stage-out HITS" in text
    assert "PanDA job 7" in "".join(printed)  # its stdout: the .out of the web area


def test_a_pilot_told_to_fail_reports_1305_and_stores_only_its_log(tmp_path: Path) -> None:
    work, storage = _job_dir(tmp_path, 4), tmp_path / "storage"
    pilot.run(work, storage, sleep=(0, 0), fail_fraction=0.25, out=io.StringIO())
    heartbeat = pilot_files.read_heartbeat(work)
    assert heartbeat is not None and heartbeat.state == "failed"
    assert heartbeat.fields["pilotErrorCode"] == pilot.FAILED_CODE == 1305
    assert "on purpose" in heartbeat.fields["pilotErrorDiag"]
    assert [f.lfn for f in heartbeat.outputs] == [make_job_spec(4)["logFile"]]
    assert _upload(work)["ok"] is True
    assert [p.name for p in storage.rglob("*") if p.is_file()] == [make_job_spec(4)["logFile"]]


def test_failures_are_an_exact_share_of_consecutive_panda_ids() -> None:
    assert [n for n in range(1, 21) if pilot.fails(n, 0.25)] == [4, 8, 12, 16, 20]
    assert not any(pilot.fails(n, 0.0) for n in range(1, 100))
    assert all(pilot.fails(n, 1.0) for n in range(1, 100))


def test_the_pilot_ignores_the_pilot_wrapper_arguments_and_checks_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = _job_dir(tmp_path, 3)
    monkeypatch.chdir(work)
    argv = ["-q", "DEMO_QUEUE", "-j", "managed", "--pilot-user", "ATLAS", "-z", "-t", "--mute"]
    argv += ["--storage-dir", str(tmp_path / "s"), "--sleep", "0"]
    assert pilot.main(argv) == 0
    assert (work / pilot.HEARTBEAT).is_file()
    with pytest.raises(SystemExit):
        pilot.main(["--storage-dir", "x", "--sleep", "3-1"])
    with pytest.raises(SystemExit):
        pilot.main(["--storage-dir", "x", "--fail-fraction", "1.5"])


# -- the config and the demo directory ----------------------------------------------------------


def test_the_rendered_demo_config_validates_and_runs_the_whole_pipeline(tmp_path: Path) -> None:
    template = run.template_path()
    assert template == REPO / "etc" / "act-demo.yaml"
    text = template.read_text()
    for placeholder in run.PLACEHOLDERS:
        assert placeholder in text
    path = tmp_path / "act.yaml"
    path.write_text(
        run.render(
            text,
            {
                "@DEMO_DIR@": str(tmp_path),
                "@PANDA_URL@": "https://127.0.0.1:12345",
                "@DEMO_PILOT@": str(tmp_path / "bin" / "demo-pilot"),
            },
        )
    )
    settings = load_settings(path)
    assert set(settings.daemons) == set(PIPELINE)
    assert all(d.enabled for d in settings.daemons.values())
    assert str(settings.db_url()) == f"sqlite:///{tmp_path}/state/act.db"
    assert settings.panda.url == "https://127.0.0.1:12345" and not settings.panda.insecure
    assert settings.panda.ca == f"{tmp_path}/panda/ca.pem"
    queue = settings.queues.serve[run.QUEUE]
    assert queue.truepilot is False and queue.pilot_wrapper == str(tmp_path / "bin/demo-pilot")
    assert f"--storage-dir {tmp_path}/storage" in (queue.pilot_args or "")
    assert queue.log_url_prefix == f"file://{tmp_path}/weblogs"
    (ce,) = settings.engine.ces.values()
    assert ce.backend == "local"
    with pytest.raises(run.DemoError, match="@PANDA_URL@"):
        run.render(text, {"@DEMO_DIR@": "/x", "@DEMO_PILOT@": "/y"})


def test_without_a_source_tree_the_template_comes_from_share_act_etc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a wheel install: act/ in site-packages (no etc/ beside it), the config under the prefix
    site = tmp_path / "lib" / "site-packages"
    (site / "act").mkdir(parents=True)
    installed = tmp_path / "share" / "act" / "etc" / "act-demo.yaml"
    installed.parent.mkdir(parents=True)
    installed.write_text((REPO / "etc" / "act-demo.yaml").read_text())
    # the modules act.demo.run reads these from (its act, sys and sysconfig are these modules)
    monkeypatch.setattr(act, "__file__", str(site / "act" / "__init__.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    monkeypatch.setattr(sysconfig, "get_path", lambda *_: str(tmp_path / "user"))
    assert run.template_path() == installed
    installed.unlink()
    with pytest.raises(run.DemoError, match="demo config not found"):
        run.template_path()


def test_only_an_empty_or_earlier_demo_directory_is_wiped(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(run.DemoError, match="not a demo directory"):
        run.prepare_dir(precious)
    assert (precious / "thesis.tex").read_text() == "years of work"

    demo = run.prepare_dir(tmp_path / "demo")
    (demo / "storage" / "old-output").write_text("from the last run")
    assert run.prepare_dir(demo) == demo
    assert not (demo / "storage" / "old-output").exists() and (demo / run.MARKER).is_file()
    with pytest.raises(run.DemoError, match="directory path"):
        run.prepare_dir(tmp_path / "with space")


def test_a_demo_directory_whose_actd_still_runs_is_not_wiped(tmp_path: Path) -> None:
    demo = run.prepare_dir(tmp_path / "demo")
    (demo / "state" / "run").mkdir(parents=True)
    with open(demo / "state" / "run" / "actd.lock", "w") as held:  # as a running actd holds it
        held.write("4242\n")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(run.DemoError, match=r"an actd \(pid 4242\) still runs"):
            run.prepare_dir(demo)
    assert (demo / run.MARKER).is_file()
    assert run.prepare_dir(demo) == demo  # once actd is gone


# -- the whole demo, through the real command ---------------------------------------------------


def _demo(directory: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACT_")}
    command = [sys.executable, "-m", "act.ctl.cli", "demo", "--dir", str(directory), *args]
    return subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _record(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / run.RECORD).read_text())
    return data


def _reports(directory: Path) -> dict[int, Any]:
    database = Database(f"sqlite:///{directory}/state/act.db")
    try:
        with database.read() as conn:
            rows = conn.execute(sa.select(panda_jobs)).all()
    finally:
        database.dispose()
    return {row.panda_id: row for row in rows}


@pytest.mark.slow
def test_the_demo_runs_20_jobs_end_to_end(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    result = _demo(directory, "--jobs", "20", "--sleep", "0.2-1", "--timeout", "180")
    assert result.returncode == 0, result.stdout + result.stderr
    record = _record(directory)
    assert record["ok"] is True and len(record["jobs"]) == 20
    for panda_id, job in record["jobs"].items():
        # the test server accepted exactly one final report, finished, for every job
        assert job["panda_final_state"] == "finished", (panda_id, job)
        assert job["panda_final_reports"] == 1, (panda_id, job)
        assert job["act_state"] == "done", (panda_id, job)
    rows = _reports(directory)
    assert sorted(rows) == sorted(int(p) for p in record["jobs"])
    for panda_id, row in rows.items():
        outputs = json.loads(json.loads(row.report)["xml"])
        assert len(outputs) == 2  # the HITS file and the log tarball
        for lfn, entry in outputs.items():
            path = _local(entry["surl"])
            assert path.is_relative_to(directory / "storage") and path.name == lfn
            assert path.stat().st_size == entry["fsize"]
            assert _adler32(path) == entry["adler32"]
        web = _local(row.log_url)  # the web area holds the pilot's stdout where the URL points
        assert web.is_relative_to(directory / "weblogs")
        assert f"PanDA job {panda_id}" in web.read_text()
    assert len(list((directory / "weblogs").rglob("*.out"))) == 20
    out = result.stdout
    assert f"web area (pilot logs, as the PanDA monitor links them): {directory}/weblogs" in out
    assert "done" in out and "finished 20" in out
    assert f"actctl --config {directory}/act.yaml status" in out
    # actd was stopped cleanly, and it was the real supervisor with every daemon
    actd_log = (directory / "log" / "actd.log").read_text()
    assert "actd stopped" in actd_log
    for name in PIPELINE:
        assert f"started {name}[0]" in actd_log


@pytest.mark.slow
def test_the_demo_with_failures_reports_them_failed_with_the_pilots_code(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    result = _demo(
        directory, "--jobs", "8", "--failures", "0.25", "--sleep", "0.1-0.5", "--timeout", "180"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = _record(directory)["jobs"]
    failed = {int(p) for p, job in jobs.items() if job["act_state"] == "donefailed"}
    assert failed == {4, 8}
    for panda_id in failed:
        job = jobs[str(panda_id)]
        assert job["panda_final_state"] == "failed" and job["panda_final_reports"] == 1
        assert job["panda_pilot_error_code"] == 1305 and job["error_code"] == 1305
    assert all(jobs[str(p)]["panda_final_state"] == "finished" for p in (1, 2, 3, 5, 6, 7))
    assert "1305 x2" in result.stdout


@pytest.mark.slow
def test_the_demo_times_out_naming_the_stuck_jobs(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    # pilots that run far longer than the timeout: fetched and started, never reported
    result = _demo(directory, "--jobs", "2", "--sleep", "600", "--timeout", "45")
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "NOT all jobs reported (timeout)" in out
    assert "stuck jobs (PandaID: act state, PanDA's record):" in out
    assert "  1: running, no final report" in out and "  2: running, no final report" in out
    assert f"look at the daemon logs in {directory}/log" in out
    assert "killed 2 demo job(s) still running on the local CE" in out
    assert _record(directory)["ok"] is False
    assert "actd stopped" in (directory / "log" / "actd.log").read_text()


def test_the_demo_refuses_a_directory_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    result = _demo(tmp_path, "--jobs", "1", timeout=60)
    assert result.returncode == 1
    assert "not a demo directory" in result.stderr
    assert (tmp_path / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_ctrl_c_stops_actd_the_local_ce_jobs_and_the_test_server(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACT_")}
    command = [sys.executable, "-m", "act.ctl.cli", "demo", "--dir", str(directory)]
    command += ["--jobs", "3", "--sleep", "600"]
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not _local_jobs_running(directory, 3):
            assert proc.poll() is None, proc.communicate()[0]
            time.sleep(0.2)
        assert _local_jobs_running(directory, 3), "the demo pilots never started"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out
    assert "interrupted: stopping actd and the PanDA test server" in out
    assert "killed 3 demo job(s) still running on the local CE" in out
    assert "actd stopped" in (directory / "log" / "actd.log").read_text()
    states = [
        json.loads(path.read_text())["state"]
        for path in (directory / "state" / "local-ce").glob("*/jobs/*/state.json")
    ]
    assert states == ["killed"] * 3


def _local_jobs_running(directory: Path, n: int) -> bool:
    found = list((directory / "state" / "local-ce").glob("*/jobs/*/state.json"))
    running = [p for p in found if json.loads(p.read_text() or "{}").get("state") == "running"]
    return len(running) == n


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_is_redrawn_in_place_on_a_terminal_and_throttled_otherwise() -> None:
    tty = progress.Display(_Stream(True))
    tty.show("one", 0.0)
    tty.show("two", 0.5)
    tty.end()
    assert isinstance(tty.stream, _Stream)
    assert tty.stream.getvalue() == "\r\x1b[Kone\r\x1b[Ktwo\n"

    plain = progress.Display(_Stream(False))
    for step in range(21):  # 10 s in half seconds
        plain.show(f"at {step / 2}", step / 2)
    plain.show("last", 10.2, force=True)
    plain.end()
    assert isinstance(plain.stream, _Stream)
    assert plain.stream.getvalue().splitlines() == ["at 0.0", "at 5.0", "at 10.0", "last"]


@pytest.mark.slow
def test_keep_leaves_act_running_after_the_summary_until_ctrl_c(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACT_")}
    command = [sys.executable, "-m", "act.ctl.cli", "demo", "--dir", str(directory)]
    command += ["--jobs", "2", "--sleep", "0", "--keep"]
    proc = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("--keep:"):
                break
        assert lines and lines[-1].startswith("--keep:"), "".join(lines)
        inspect = [sys.executable, "-m", "act.ctl.cli", "--config", str(directory / "act.yaml")]
        status = subprocess.run(
            [*inspect, "processes"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        assert "validator" in status.stdout and "propagator" in status.stdout  # still running
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    assert "actd stopped" in (directory / "log" / "actd.log").read_text()
