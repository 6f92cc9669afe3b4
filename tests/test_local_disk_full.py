"""A full disk (ENOSPC) under the local CE and the CE fetcher delays jobs, never fails them.

On a real full file system: a 1 MB tmpfs of 200 inodes mounted for the test (root only; skipped
otherwise), filled to the last page and the last inode, then emptied again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from act.common.db import Database
from act.engine import fetcher, poller, submitter
from act.engine.backend import CE, CEReportedState, SubmitRequest, make_backend
from act.engine.runtime import pool
from act.engine.settings import CESettings
from act.local.backend import LocalBackend
from act.service.settings import Settings
from tests.support.follow import context, history, row_of, set_columns
from tests.support.procs import alive, wait_for
from tests.test_engine_e2e import requested

LOG = logging.getLogger("act.test.local.disk_full")


class Disk:
    """A small tmpfs that can be filled and emptied."""

    def __init__(self, mount: Path) -> None:
        self.mount = mount
        self.filler = mount / "filler"
        self.fillers = mount / "fillers"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        with pytest.raises(OSError) as full:
            (self.mount / "probe").write_bytes(b"x" * 4096)
        assert full.value.errno == errno.ENOSPC
        self.fillers.mkdir()
        with contextlib.suppress(OSError):  # and every inode: no file or directory made either
            for n in range(10_000):
                (self.fillers / str(n)).touch()
        with pytest.raises(OSError) as full:
            (self.mount / "probe-dir").mkdir()
        assert full.value.errno == errno.ENOSPC

    def empty(self) -> None:
        self.filler.unlink()
        shutil.rmtree(self.fillers)


@pytest.fixture
def disk() -> Iterator[Disk]:
    if os.geteuid() != 0:  # a developer's machine; CI runs as root, where this never skips
        pytest.skip("mounting a tmpfs needs root")
    mount = Path(tempfile.mkdtemp(prefix="act-test-full-disk-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,nr_inodes=200,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        mount.rmdir()
        pytest.fail(
            f"root, but cannot mount a tmpfs for the full-disk tests: {done.stderr.strip()}"
        )
    try:
        yield Disk(mount)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def local(tmp_path: Path, workdir: Path) -> tuple[LocalBackend, CE]:
    settings = Settings.model_validate({"root": str(tmp_path / "root")})
    backend = make_backend("local", settings=settings, db=None, log=LOG)
    assert isinstance(backend, LocalBackend)
    options = {"slots": 2, "grace": 1, "workdir": str(workdir)}
    return backend, CE("local1", CESettings(backend="local", options=options))


def test_a_runner_waits_for_room_to_record_the_end(tmp_path: Path, disk: Disk) -> None:
    be, ce = local(tmp_path, disk.mount / "ce")
    (result,) = be.submit(
        ce, [SubmitRequest(1, "token-1", json.dumps({"executable": "sleep", "arguments": ["1"]}))]
    )
    assert result.ce_job_id and result.error is None, result
    state_file = disk.mount / "ce" / "jobs" / result.ce_job_id / "state.json"

    def state() -> dict[str, Any]:
        data: dict[str, Any] = json.loads(state_file.read_text())
        return data

    wait_for(lambda: state()["state"] == "running", what="payload running")
    disk.fill()
    wait_for(lambda: not alive(state()["pid"]), what="payload ended")
    running = be.status(ce, [result.ce_job_id])[result.ce_job_id]
    assert running is not None and running.state is CEReportedState.RUNNING, running
    assert alive(state()["runner_pid"])  # waiting for room, not dead
    disk.empty()
    wait_for(lambda: state()["state"] == "finished", 30, "the end recorded")
    ended = be.status(ce, [result.ce_job_id])[result.ce_job_id]
    assert ended is not None and ended.state is CEReportedState.FINISHED, ended


def test_a_submission_on_a_full_disk_is_retried_not_rejected(tmp_path: Path, disk: Disk) -> None:
    be, ce = local(tmp_path, disk.mount / "ce")
    be.submit(ce, [])  # the work directory made while there is room
    disk.fill()
    description = json.dumps({"executable": "true"})
    (result,) = be.submit(ce, [SubmitRequest(1, "token-1", description)])
    assert result.ce_job_id is None and not result.permanent, result
    assert "No space left on device" in str(result.error)
    assert list((disk.mount / "ce" / "jobs").iterdir()) == []  # nothing half-made left
    disk.empty()
    (result,) = be.submit(ce, [SubmitRequest(2, "token-2", description)])
    assert result.ce_job_id and result.error is None, result


def test_the_ce_fetcher_leaves_a_job_for_later_on_a_full_disk(
    db: Database, tmp_path: Path, disk: Disk, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings.model_validate(
        {
            "root": str(tmp_path / "root"),
            "engine": {
                "ces": {"local1": {"backend": "local", "options": {"slots": 2, "grace": 1}}},
                "fetch": {"dir": str(disk.mount / "ce-jobs")},
            },
        }
    )
    contexts = {name: context(db, settings, name) for name in ("submitter", "poller", "ce_fetcher")}
    description = {
        "executable": "/bin/sh",
        "arguments": ["-c", "head -c 8192 /dev/zero > out.bin"],
        "outputs": ["out.bin"],
    }
    job = requested(db, description, 21)
    try:
        submitter.run_once(contexts["submitter"])

        def finished() -> bool:
            set_columns(db, job, next_check_at=None)
            poller.run_once(contexts["poller"])
            return bool(row_of(db, job)["state"] == "finished")

        wait_for(finished, 30, "job finished")
        disk.fill()
        caplog.set_level(logging.WARNING)
        for _ in range(2):
            fetcher.run_once(contexts["ce_fetcher"])
            assert row_of(db, job)["state"] == "finished", history(db, job)
        lines = [r for r in caplog.records if r.name.startswith("act")]
        assert len(lines) == 2, [r.getMessage() for r in lines]  # one line per job and try
        assert all("No space left on device" in r.getMessage() for r in lines)
        assert all(r.exc_info is None for r in lines)  # the cause, not a traceback
        disk.empty()
        fetcher.run_once(contexts["ce_fetcher"])
        done = row_of(db, job)
        assert done["state"] == "done", history(db, job)
        assert (Path(done["output_dir"]) / "out.bin").stat().st_size == 8192
    finally:
        for ctx in contexts.values():
            pool(ctx).close()


def test_a_dead_runners_job_is_reported_lost_on_a_full_disk(tmp_path: Path, disk: Disk) -> None:
    """The back end cannot record the end it found (no room): it reports it all the same."""
    be, ce = local(tmp_path, disk.mount / "ce")
    description = json.dumps({"executable": "sleep", "arguments": ["60"]})
    (result,) = be.submit(ce, [SubmitRequest(1, "token-1", description)])
    assert result.ce_job_id, result
    jobdir = disk.mount / "ce" / "jobs" / result.ce_job_id
    wait_for(lambda: json.loads((jobdir / "state.json").read_text()).get("pgid"), what="running")
    state = json.loads((jobdir / "state.json").read_text())
    for group in (state["runner_pid"], state["pgid"]):
        os.killpg(group, signal.SIGKILL)
    wait_for(lambda: not alive(state["runner_pid"]) and not alive(state["pid"]), what="gone")
    (jobdir / "state.json").unlink()  # and its runner never started, as far as the CE knows
    job = json.loads((jobdir / "job.json").read_text())
    (jobdir / "job.json").write_text(
        json.dumps({**job, "submitted_at": "2020-01-01T00:00:00+00:00"})
    )
    disk.fill()
    found = be.status(ce, [result.ce_job_id])[result.ce_job_id]
    assert found is not None and found.state is CEReportedState.FAILED and found.lost, found
    assert not (jobdir / "state.json").exists()
    disk.empty()
    found = be.status(ce, [result.ce_job_id])[result.ce_job_id]
    assert found is not None and found.lost, found
    assert json.loads((jobdir / "state.json").read_text())["lost"] is True
