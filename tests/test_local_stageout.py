"""The local CE's output upload (act.local.stageout): what a job's output list names goes to the
real XRootD storage element (root://) or a directory (file://), checked end to end, as an ARC
CE's data staging does; every failure fails the job naming the file, the URL and the cause."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from act.engine.backend import CEReportedState
from act.local import jobfiles as jf
from act.local.description import LocalJob
from act.local.stageout import BadLine, Upload, parse_line
from tests.support.procs import alive, wait_for
from tests.support.xrootd_real import XRootDServer, xrootd_server
from tests.test_local_backend import ended, local_ce, make, state_file, status, submit

__all__ = ["xrootd_server"]  # the session fixture, imported for pytest


def adler32(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def payload(files: dict[str, bytes], listing: str, *, exit_code: int = 0) -> str:
    """A job description whose payload writes ``files`` and the output list ``listing``."""
    script = "".join(
        f"printf %s {shlex.quote(content.decode())} > {shlex.quote(name)}\n"
        for name, content in files.items()
    )
    script += f"printf %s {shlex.quote(listing)} > output.list\nexit {exit_code}\n"
    job = LocalJob(executable="sh", arguments=["-c", script], output_list="output.list")
    return job.to_description()


@pytest.fixture
def area(xrootd_server: XRootDServer, tmp_path: Path) -> Iterator[str]:
    """A fresh directory on the storage element (URL path), removed afterwards."""
    name = f"act-stageout-tests/{tmp_path.name}-{os.getpid()}"
    yield name
    target = xrootd_server.local(name)
    if target.exists():
        for path in sorted(target.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        target.rmdir()


# -- the list's lines ---------------------------------------------------------------------------


def test_lines_as_pilot3_writes_them() -> None:
    url = "root://se.example.org:1094//atlas/rucio/mc23/ab/cd/HITS.pool.root.1"
    line = f"HITS.pool.root.1 {url}:checksumtype=adler32:checksumvalue=0A1B2C3D"
    assert parse_line(1, line) == Upload(1, "HITS.pool.root.1", url, "0a1b2c3d")
    assert parse_line(2, "log.tgz file:///data/log.tgz") == Upload(
        2, "log.tgz", "file:///data/log.tgz", None
    )
    assert parse_line(3, "   ") is None  # blank
    assert parse_line(4, "kept.txt") is None  # no URL: kept for download, nothing to upload


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("a b c", "3 fields"),
        ("../up root://h//x", "inside the job directory"),
        ("a srm://h/x", "cannot upload to a srm URL"),
        ("a https://h/x", "cannot upload to a https URL"),
        ("a root://h//x:checksumtype=md5:checksumvalue=1", "only adler32"),
        ("a root://h//x:checksumvalue=xyz", "not an adler32"),
        ("a root://h//x:guid=123", "unsupported URL option(s) guid"),
        ("a root:///x", "no host"),
        ("a file://host/x", "names a host"),
    ],
)
def test_lines_that_cannot_be_uploaded_say_why(line: str, problem: str) -> None:
    with pytest.raises(BadLine) as caught:
        parse_line(7, line)
    assert "line 7" in str(caught.value) and problem in str(caught.value), caught.value


# -- uploads through the local CE ---------------------------------------------------------------


@pytest.mark.storage
def test_every_listed_file_is_uploaded_and_checked(
    tmp_path: Path, xrootd_server: XRootDServer, area: str
) -> None:
    be, ce = make(tmp_path), local_ce()
    out, log = b"the payload's output\n", b"the pilot's log\n"
    directory = tmp_path / "file-se"
    listing = (
        f"out.root {xrootd_server.root(area + '/sub/out.root')}"
        f":checksumtype=adler32:checksumvalue={adler32(out)}\n"
        f"log.tgz file://{directory}/deep/log.tgz\n"
        "heartbeat.json\n"  # no URL: stays for the fetch
    )
    job_id = submit(be, ce, payload({"out.root": out, "log.tgz": log}, listing))
    result = ended(be, ce, job_id)
    assert result.state is CEReportedState.FINISHED and result.errors == (), result
    assert xrootd_server.local(area + "/sub/out.root").read_bytes() == out
    assert (directory / "deep" / "log.tgz").read_bytes() == log
    report = json.loads((be.workdir(ce) / "jobs" / job_id / jf.STAGEOUT).read_text())
    assert report["ok"] is True and report["errors"] == []
    assert [(f["name"], f["ok"], f["size"], f["adler32"]) for f in report["files"]] == [
        ("out.root", True, len(out), adler32(out)),
        ("log.tgz", True, len(log), adler32(log)),
    ]
    # the end is recorded after the upload: finishing came first
    state = state_file(be, ce, job_id)
    assert state["finishing_at"] <= state["ended_at"]


@pytest.mark.storage
def test_a_failed_upload_fails_the_job_naming_file_url_and_cause(
    tmp_path: Path, xrootd_server: XRootDServer, area: str
) -> None:
    be, ce = make(tmp_path), local_ce(slots=4, upload_attempts=2, upload_timeout=5)
    data = b"some bytes\n"
    good = xrootd_server.root(area + "/good.root")
    wrong_sum = xrootd_server.root(area + "/wrong.root")
    cases = {
        "checksum": (
            f"a.root {wrong_sum}:checksumtype=adler32:checksumvalue=0badc0de\n",
            f"a.root -> {wrong_sum}: the file's adler32 is {adler32(data)}, "
            "the output list gives 0badc0de",
        ),
        "missing": (
            f"nothere.root {good}\n",
            f"nothere.root -> {good}: 'nothere.root': No such file or directory",
        ),
        "unreachable": (
            "a.root root://127.0.0.1:1//nowhere/a.root\n",
            "a.root -> root://127.0.0.1:1//nowhere/a.root: copy failed:",
        ),
        "bad line": ("a.root gsiftp://se//x\n", "output.list: line 1: 'gsiftp://se//x'"),
    }
    jobs = {
        name: submit(be, ce, payload({"a.root": data}, text)) for name, (text, _) in cases.items()
    }
    for name, (_, message) in cases.items():
        result = ended(be, ce, jobs[name], timeout=60)
        assert result.state is CEReportedState.FAILED, (name, result)
        assert result.exit_code == 0  # the payload itself did well
        assert any(
            e.startswith("output upload failed: ") and message in e for e in result.errors
        ), (
            name,
            result.errors,
        )
    assert not xrootd_server.local(area + "/wrong.root").exists()  # nothing left half right
    report = json.loads((be.workdir(ce) / "jobs" / jobs["unreachable"] / jf.STAGEOUT).read_text())
    assert report["files"][0]["attempts"] == 2


@pytest.mark.storage
def test_a_failed_payloads_outputs_are_uploaded_too_as_arex_does(
    tmp_path: Path, xrootd_server: XRootDServer, area: str
) -> None:
    be, ce = make(tmp_path), local_ce()
    log = b"log of a failed job\n"
    url = xrootd_server.root(area + "/log.tgz")
    job_id = submit(be, ce, payload({"log.tgz": log}, f"log.tgz {url}\n", exit_code=3))
    result = ended(be, ce, job_id)
    assert result.state is CEReportedState.FAILED and result.exit_code == 3
    assert result.errors == ("payload failed: exit code 3",)
    assert xrootd_server.local(area + "/log.tgz").read_bytes() == log


def test_an_unreadable_list_fails_the_job_and_a_missing_one_uploads_nothing(
    tmp_path: Path,
) -> None:
    be, ce = make(tmp_path), local_ce()
    unreadable = LocalJob(
        executable="sh", arguments=["-c", "mkdir output.list"], output_list="output.list"
    )
    result = ended(be, ce, submit(be, ce, unreadable.to_description()))
    assert result.state is CEReportedState.FAILED
    assert any("cannot read the output list output.list" in e for e in result.errors), result
    none = LocalJob(executable="true", output_list="output.list")
    job_id = submit(be, ce, none.to_description())
    assert ended(be, ce, job_id).state is CEReportedState.FINISHED
    assert state_file(be, ce, job_id)["stageout_note"] == "no output.list: nothing uploaded"


def test_a_listed_link_out_of_the_job_is_refused(tmp_path: Path) -> None:
    be, ce = make(tmp_path), local_ce()
    secret = tmp_path / "secret"
    secret.write_text("not the job's\n")
    script = f"ln -s {secret} out.root; echo 'out.root file://{tmp_path}/se/out.root' > output.list"
    job = LocalJob(executable="sh", arguments=["-c", script], output_list="output.list")
    result = ended(be, ce, submit(be, ce, job.to_description()))
    assert result.state is CEReportedState.FAILED
    assert any("'out.root' is a symbolic link, not followed" in e for e in result.errors)
    assert not (tmp_path / "se").exists()


def test_a_listed_link_is_refused_wherever_it_points_naming_the_job(tmp_path: Path) -> None:
    """The stage-out reaches its files through act.common.safe_paths: a link the payload planted
    is not followed even into its own directory (nor is an output list that is a link), and the
    error names the job and the link."""
    be, ce = make(tmp_path), local_ce()
    script = (
        f"echo data > real.root; ln -s real.root out.root; mkdir d; ln -s {tmp_path} d/up;"
        f" printf 'out.root file://{tmp_path}/se/out.root\\n"
        f"d/up/secret file://{tmp_path}/se/secret\\n' > output.list"
    )
    (tmp_path / "secret").write_text("not the job's\n")
    job = LocalJob(executable="sh", arguments=["-c", script], output_list="output.list")
    job_id = submit(be, ce, job.to_description())
    result = ended(be, ce, job_id)
    assert result.state is CEReportedState.FAILED
    assert any(
        f"job {job_id}: 'out.root' is a symbolic link, not followed" in e for e in result.errors
    ), result.errors
    assert any(
        f"job {job_id}: a directory on the way to 'd/up/secret' is a symbolic link" in e
        for e in result.errors
    ), result.errors
    assert not (tmp_path / "se").exists()
    listed = LocalJob(
        executable="sh",
        arguments=["-c", f"echo 'x file://{tmp_path}/se/x' > real.list; ln -s real.list out.list"],
        output_list="out.list",
    )
    job_id = submit(be, ce, listed.to_description())
    result = ended(be, ce, job_id)
    assert result.state is CEReportedState.FAILED
    assert any(
        f"cannot read the output list out.list: job {job_id}: 'out.list' is a symbolic link" in e
        for e in result.errors
    ), result.errors


def test_a_link_the_payload_planted_for_a_runner_log_is_never_written_through(
    tmp_path: Path,
) -> None:
    """The payload can write to its job directory (the parent of its work directory): a link it
    leaves where the runner writes the upload's log, or where state.json is replaced from, is
    refused (O_NOFOLLOW), the file it points to untouched, and the job fails saying why."""
    be, ce = make(tmp_path), local_ce()
    victim = tmp_path / "victim"
    victim.write_text("not the job's\n")
    script = (
        f"ln -s {victim} ../{jf.STAGEOUT_LOG}; echo data > out.root;"
        f" echo 'out.root file://{tmp_path}/se/out.root' > output.list"
    )
    job = LocalJob(executable="sh", arguments=["-c", script], output_list="output.list")
    job_id = submit(be, ce, job.to_description())
    result = ended(be, ce, job_id)
    assert result.state is CEReportedState.FAILED
    assert any(
        f"output upload failed: cannot open {jf.STAGEOUT_LOG} in the job directory" in e
        for e in result.errors
    ), result.errors
    assert victim.read_text() == "not the job's\n"
    assert not (tmp_path / "se").exists()


def test_write_json_never_writes_through_a_planted_temporary_file_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    target = tmp_path / "state.json"
    (tmp_path / f".state.json.{os.getpid()}.tmp").symlink_to(victim)
    jf.write_json(target, {"state": "running"})
    assert victim.read_text() == "keep\n"
    assert json.loads(target.read_text()) == {"state": "running"}
    assert not target.is_symlink()


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A root:// endpoint that accepts connections and never answers: uploads hang there."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"root://127.0.0.1:{listener.getsockname()[1]}"


def _finishing(be: Any, ce: Any, job_id: str) -> dict[str, Any]:
    def uploading() -> dict[str, Any] | None:
        state = state_file(be, ce, job_id)
        return state if state.get("state") == jf.FINISHING and state.get("stageout_pid") else None

    found: dict[str, Any] = wait_for(uploading, 30, "the job uploading its outputs")
    return found


def test_a_runner_killed_mid_upload_never_leaves_the_job_finished(
    tmp_path: Path, black_hole: str
) -> None:
    be, ce = make(tmp_path), local_ce(upload_timeout=60)
    job_id = submit(be, ce, payload({"a.root": b"x"}, f"a.root {black_hole}//a.root\n"))
    state = _finishing(be, ce, job_id)
    assert status(be, ce, job_id).state is CEReportedState.FINISHING
    os.kill(state["runner_pid"], signal.SIGKILL)
    wait_for(lambda: not alive(state["runner_pid"]), what="runner gone")
    result = status(be, ce, job_id)
    assert result.state is CEReportedState.FAILED, result
    assert any("while uploading the outputs" in e for e in result.errors), result.errors
    wait_for(lambda: not alive(state["stageout_pid"]), what="the orphaned upload killed")
    assert state_file(be, ce, job_id)["state"] == jf.FAILED


def test_a_job_killed_while_uploading_ends_killed(tmp_path: Path, black_hole: str) -> None:
    be, ce = make(tmp_path), local_ce(upload_timeout=60)
    job_id = submit(be, ce, payload({"a.root": b"x"}, f"a.root {black_hole}//a.root\n"))
    state = _finishing(be, ce, job_id)
    assert be.kill(ce, [job_id])[job_id].ok
    result = ended(be, ce, job_id)
    assert result.state is CEReportedState.CANCELLED, result
    assert not alive(state["stageout_pid"])
