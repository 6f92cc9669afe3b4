"""The local back end: CE jobs run as processes on this machine (the embedded default; the demo).

A CE of this back end (``engine.ces.<name>.backend: local``) takes these ``options``:

* ``slots``: jobs (cores) running at once; default: the machine's CPU count;
* ``workdir``: where the job directories are; default ``<root>/local-ce/<ce name>``;
* ``grace``: seconds between SIGTERM and SIGKILL when a job is killed (default 5);
* ``start_timeout``: seconds a submission waits for its runner to start (default 30);
* ``upload_timeout``, ``upload_attempts``, ``upload_credential``, ``upload_ca``: how the outputs a
  job's output list names are uploaded (:mod:`act.local.stageout`): seconds per XRootD call and
  copy (default 120), tries per file (default 3), an X.509 proxy and a CA directory for
  ``roots://`` / GSI storage (default none: the process environment's).

Jobs are described in the JSON format of :mod:`act.local.description`. Each runs under its own
detached runner (:mod:`act.local.runner`), forked by the CE's spawner (:mod:`act.local.spawner`,
one long-lived process per work directory, started on demand), so it outlives the daemon that
submitted it (and the spawner), and all state is in files (:mod:`act.local.jobfiles`): any process
can ask for its status later (read by :mod:`act.local.jobstate`). What a job writes (its state
file, its outputs) is treated as untrusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from pydantic import ValidationError

from act.common.config import ConfigError
from act.common.logs import job_log
from act.common.safe_paths import UnsafePath
from act.engine.backend import (
    CE,
    BackendFactory,
    CEUnavailable,
    Fetched,
    JobStatus,
    Limits,
    Outcome,
    SubmitRequest,
    Submitted,
)
from act.local import jobfiles as jf
from act.local import jobstate, spawner, staging
from act.local.description import DescriptionError, LocalJob
from act.local.options import LocalOptions

#: A runner being started: the spawner's connection, or a runner process of its own.
Starting: TypeAlias = socket.socket | subprocess.Popen[bytes]

if TYPE_CHECKING:
    from act.common.db import Database
    from act.engine.config import EngineConfig as Settings

#: Variables of the submitting process a payload gets (plus its description's ``environment``).
BASE_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "USER", "LOGNAME", "SHELL")
#: Seconds without the spawner (one runner process per job) after it could not be reached.
SPAWNER_RETRY = 60.0
#: A job directory being removed is first renamed to this prefix + its name (no job ID matches
#: it): a cleaner killed half-way leaves no half-deleted job behind, only a directory that the
#: next clean sweeps away.
REMOVING = ".removing-"


def token_prefix(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class LocalBackend:
    """Runs CE jobs as local processes (see the module docstring)."""

    def __init__(self, *, settings: Settings, db: Database | None, log: logging.Logger) -> None:
        self.settings = settings
        self.log = log
        self._options: dict[str, LocalOptions] = {}
        self._spawner_retry_at = 0.0

    # -- configuration and layout -----------------------------------------------------------

    def options(self, ce: CE) -> LocalOptions:
        found = self._options.get(ce.name)
        if found is None:
            try:
                found = LocalOptions.model_validate(ce.settings.options)
            except ValidationError as error:
                problems = [
                    f"engine.ces.{ce.name}.options.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in error.errors()
                ]
                raise ConfigError(self.settings.source, problems) from None
            self._options[ce.name] = found
        return found

    def workdir(self, ce: CE) -> Path:
        configured = self.options(ce).workdir
        return Path(configured) if configured else Path(self.settings.root) / "local-ce" / ce.name

    def _jobs(self, ce: CE) -> Path:
        jobs = self.workdir(ce) / jf.JOBS
        try:
            jobs.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.workdir(ce) / jf.SLOTS).mkdir(exist_ok=True, mode=0o700)
        except OSError as error:
            raise CEUnavailable(
                ce.name, f"work directory {jobs}: {error.strerror}", maybe_sent=False
            ) from None
        return jobs

    def _jobdir(self, ce: CE, ce_job_id: str) -> Path | None:
        """The directory of a known job, None for an unknown or malformed id."""
        if not jf.JOB_ID.fullmatch(ce_job_id):
            return None
        jobdir = self._jobs(ce) / ce_job_id
        return jobdir if (jobdir / jf.JOB).is_file() else None

    def limits(self, ce: CE) -> Limits:
        return Limits(
            submit_batch=50,
            status_batch=1000,
            refresh_seconds=1.0,
            can_restart=False,
            extras={"slots": self.options(ce).slots},
        )

    # -- submit -------------------------------------------------------------------------------

    def submit(self, ce: CE, jobs: Sequence[SubmitRequest]) -> list[Submitted]:
        """Prepare each job's directory and have the CE's spawner fork its runner (all requests
        are sent first, then the answers read: the runners start in parallel)."""
        options = self.options(ce)
        root = self._jobs(ce)
        started: list[tuple[SubmitRequest, Path, Starting] | Submitted] = []
        for request in jobs:
            log = job_log(self.log, panda_id=request.panda_id, ce=ce.name)
            try:
                job = LocalJob.parse(request.description)
                if job.cores > options.slots:
                    raise DescriptionError("cores", f"{job.cores} > the CE's {options.slots} slots")
            except DescriptionError as error:
                log.warning("rejected: %s", error)
                started.append(Submitted(request.job_id, None, str(error), permanent=True))
                continue
            ce_job_id = f"{token_prefix(request.token)}-{secrets.token_hex(6)}"
            jobdir = root / ce_job_id
            try:
                self._prepare(jobdir, job, request, options, root.parent / jf.SLOTS)
                starting = self._start_runner(root.parent, jobdir, options)
            except staging.InputError as error:
                shutil.rmtree(jobdir, ignore_errors=True)
                log.warning("rejected: %s", error)
                started.append(Submitted(request.job_id, None, str(error), permanent=True))
                continue
            except OSError as error:
                shutil.rmtree(jobdir, ignore_errors=True)
                log.warning("cannot start the job: %s", error)
                started.append(Submitted(request.job_id, None, f"cannot start the job: {error}"))
                continue
            started.append((request, jobdir, starting))
        return [self._started(ce, item, options) for item in started]

    def _start_runner(self, workdir: Path, jobdir: Path, options: LocalOptions) -> Starting:
        """Ask the CE's spawner for the job's runner; without a spawner (it cannot be started
        here), one ``python -m act.local.runner`` process per job, as before."""
        if time.monotonic() >= self._spawner_retry_at:
            try:
                return spawner.request(workdir, jobdir, self._runner_env(), options.start_timeout)
            except spawner.SpawnerError as error:
                self.log.warning(
                    "%s; one runner process per job for the next %.0fs", error, SPAWNER_RETRY
                )
                self._spawner_retry_at = time.monotonic() + SPAWNER_RETRY
        return subprocess.Popen(
            [sys.executable, "-S", "-m", "act.local.runner", str(jobdir)],
            env=self._runner_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=jobdir,
            close_fds=True,
        )

    def _started(
        self,
        ce: CE,
        item: tuple[SubmitRequest, Path, Starting] | Submitted,
        options: LocalOptions,
    ) -> Submitted:
        """Wait for a runner to have recorded itself; the result of one submission."""
        if isinstance(item, Submitted):
            return item
        request, jobdir, starting = item
        log = job_log(self.log, panda_id=request.panda_id, ce=ce.name)
        if isinstance(starting, socket.socket):
            code = 0 if spawner.started(starting, options.start_timeout) else -1
        else:
            try:
                code = starting.wait(timeout=options.start_timeout)
            except subprocess.TimeoutExpired:
                starting.kill()
                starting.wait()
                code = -1
        if code != 0:
            detail = staging.tail(jobdir / jf.RUNNER_LOG, 500) or f"exit status {code}"
            jobstate.stop(jobdir, signal.SIGKILL)
            shutil.rmtree(jobdir, ignore_errors=True)
            log.warning("the job's runner did not start: %s", detail)
            return Submitted(request.job_id, None, f"the job's runner did not start: {detail}")
        log.info("submitted as %s", jobdir.name)
        return Submitted(request.job_id, jobdir.name)

    def _prepare(
        self,
        jobdir: Path,
        job: LocalJob,
        request: SubmitRequest,
        options: LocalOptions,
        slots_dir: Path,
    ) -> None:
        work = jobdir / jf.WORK
        work.mkdir(parents=True, mode=0o700)
        for name in job.inputs:
            staging.copy_input(request.input_dir, name, work)
        jf.write_json(
            jobdir / jf.JOB,
            {
                "token": request.token,
                "job_id": request.job_id,
                "panda_id": request.panda_id,
                "submitted_at": jf.now_iso(),
                "description": job.model_dump(mode="json"),
                "slots": options.slots,
                "slots_dir": str(slots_dir),
                "grace": options.grace,
                "upload": {
                    "timeout": options.upload_timeout,
                    "attempts": options.upload_attempts,
                    "credential": options.upload_credential,
                    "ca": options.upload_ca,
                },
                "base_env": {k: os.environ[k] for k in BASE_ENV if k in os.environ},
            },
        )

    @staticmethod
    def _runner_env() -> dict[str, str]:
        env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
        package_root = str(Path(__file__).resolve().parent.parent.parent)
        env["PYTHONPATH"] = package_root  # the runner (python -S: no site) imports act.local
        return env

    # -- status and find ----------------------------------------------------------------------

    def status(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, JobStatus | None]:
        return {ce_job_id: self._status(ce, ce_job_id) for ce_job_id in ce_job_ids}

    def _status(self, ce: CE, ce_job_id: str) -> JobStatus | None:
        jobdir = self._jobdir(ce, ce_job_id)
        return None if jobdir is None else jobstate.job_status(ce_job_id, jobstate.current(jobdir))

    def find(self, ce: CE, tokens: Sequence[str]) -> dict[str, str]:
        """Scan the work directory for jobs carrying ``tokens`` (the newest one per token).

        The CE has a job once its job.json is written; a job found without a runner (its
        submitter was killed between writing job.json and starting the runner) gets its runner
        now, so every job the CE has runs (a runner that was on its way after all finds the
        job taken and exits: one runner per job).
        """
        found = self._find(ce, tokens)
        options = self.options(ce)
        root = self._jobs(ce)
        for ce_job_id in found.values():
            jobdir = root / ce_job_id
            if (jobdir / jf.STATE).exists():
                continue
            log = job_log(self.log, panda_id=jobstate.panda_id_of(jobdir), ce=ce.name)
            try:
                starting = self._start_runner(root.parent, jobdir, options)
            except OSError as error:
                log.warning("found %s without a runner, cannot start one: %s", ce_job_id, error)
                continue
            if isinstance(starting, socket.socket):
                ok = spawner.started(starting, options.start_timeout)
            else:
                try:
                    ok = starting.wait(timeout=options.start_timeout) == 0
                except subprocess.TimeoutExpired:
                    ok = False
            if ok:
                log.info("found %s without a runner (its submitter died): started now", ce_job_id)
            else:
                log.warning("found %s without a runner; its runner did not start", ce_job_id)
        return found

    def _find(self, ce: CE, tokens: Sequence[str]) -> dict[str, str]:
        root = self._jobs(ce)
        found: dict[str, tuple[str, str]] = {}
        for token in tokens:
            for jobdir in root.glob(f"{token_prefix(token)}-*"):
                if not jf.JOB_ID.fullmatch(jobdir.name):
                    continue
                job = jf.read_json(jobdir / jf.JOB)
                if job is None or job.get("token") != token:
                    continue
                when = str(job.get("submitted_at", ""))
                if token not in found or when > found[token][0]:
                    found[token] = (when, jobdir.name)
        return {token: ce_job_id for token, (_, ce_job_id) in found.items()}

    # -- kill, clean, restart -----------------------------------------------------------------

    def kill(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        """SIGTERM to each job's runner and payload group, SIGKILL after the grace period."""
        grace = self.options(ce).grace
        results: dict[str, Outcome] = {}
        pending: list[tuple[str, Path]] = []
        for ce_job_id in ce_job_ids:
            jobdir = self._jobdir(ce, ce_job_id)
            if jobdir is None:
                results[ce_job_id] = Outcome(ce_job_id, ok=False, gone=True)
                continue
            if jobstate.current(jobdir).get("state") in jf.ENDED:
                results[ce_job_id] = Outcome(ce_job_id, ok=True)  # nothing left to kill
                continue
            jf.update_state(jobdir, kill_requested=True)  # so the runner records "killed"
            jobstate.stop(jobdir, signal.SIGTERM)
            pending.append((ce_job_id, jobdir))
        deadline = time.monotonic() + grace + 1.0  # the runner escalates itself after grace
        while (
            pending and time.monotonic() < deadline and any(jobstate.running(d) for _, d in pending)
        ):
            time.sleep(0.05)
        for ce_job_id, jobdir in pending:
            if jobstate.running(jobdir):
                jobstate.stop(jobdir, signal.SIGKILL)
            with jf.locked(jobdir):
                state = jf.read_json(jobdir / jf.STATE) or {}
                if state.get("state") not in jf.ENDED:
                    jf.write_json(jobdir / jf.STATE, jf.ended(state, jf.KILLED, ["killed by act"]))
            job_log(self.log, panda_id=jobstate.panda_id_of(jobdir), ce=ce.name).info(
                "killed %s", ce_job_id
            )
            results[ce_job_id] = Outcome(ce_job_id, ok=True)
        return {ce_job_id: results[ce_job_id] for ce_job_id in ce_job_ids}

    def clean(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        """Remove the directories of jobs that ended (a job still running is an error)."""
        results: dict[str, Outcome] = {}
        root = self._jobs(ce)
        for stale in root.glob(f"{REMOVING}*"):  # left by a cleaner killed while removing
            shutil.rmtree(stale, ignore_errors=True)
        for ce_job_id in ce_job_ids:
            jobdir = self._jobdir(ce, ce_job_id)
            if jobdir is None:
                results[ce_job_id] = Outcome(ce_job_id, ok=False, gone=True)
                continue
            state = jobstate.current(jobdir).get("state")
            if state not in jf.ENDED:
                results[ce_job_id] = Outcome(
                    ce_job_id, ok=False, error=f"the job is {state}: kill it before cleaning"
                )
                continue
            # Renamed first (atomic): the CE holds the whole job or nothing of it, even if this
            # process dies inside rmtree (a job without its state.json would read as queued).
            removing = jobdir.with_name(REMOVING + jobdir.name)
            try:
                jobdir.rename(removing)
            except OSError as error:
                results[ce_job_id] = Outcome(ce_job_id, ok=False, error=f"cannot remove: {error}")
                continue
            shutil.rmtree(removing, ignore_errors=True)  # what is left, the next clean sweeps
            results[ce_job_id] = Outcome(ce_job_id, ok=True)
        return results

    def restart(self, ce: CE, ce_job_ids: Sequence[str]) -> dict[str, Outcome]:
        return {
            ce_job_id: Outcome(ce_job_id, ok=False, error="the local back end cannot restart jobs")
            for ce_job_id in ce_job_ids
        }

    # -- fetch --------------------------------------------------------------------------------

    def fetch(self, ce: CE, ce_job_id: str, dest: Path, *, failed: bool) -> Fetched:
        """Copy the declared outputs (from ``work/``) plus stdout and stderr into ``dest``; a
        symbolic link the payload left among them is never followed: the fetch fails naming the
        job and the link (:mod:`act.local.staging`)."""
        jobdir = self._jobdir(ce, ce_job_id)
        if jobdir is None:
            return Fetched(ce_job_id, gone=True, error="the CE does not know the job")
        job = jf.read_json(jobdir / jf.JOB) or {}
        try:
            outputs = LocalJob.model_validate(job.get("description")).outputs
        except ValidationError:
            return Fetched(ce_job_id, error="job.json is unreadable")
        caps = self.settings.engine.fetch
        plan: list[tuple[Path, str, int]] = []  # (directory, file below it, size)
        notes: list[str] = []
        for name in (jf.STDOUT, jf.STDERR):
            with contextlib.suppress(OSError):
                info = (jobdir / name).lstat()
                if stat.S_ISREG(info.st_mode):
                    plan.append((jobdir, name, info.st_size))
        written: list[str] = []
        size = 0
        try:
            for name in outputs:
                work = jobdir / jf.WORK
                try:
                    plan.extend((work, path, n) for path, n in staging.collect(work, name, notes))
                except UnsafePath as error:
                    raise staging.UnsafeOutput(staging.refused(f"output {name!r}", error)) from None
            if len(plan) > caps.max_files:
                raise staging.UnsafeOutput(
                    f"{len(plan)} files exceed engine.fetch.max_files={caps.max_files}"
                )
            total = sum(n for _, _, n in plan)
            if total > caps.max_bytes:
                raise staging.UnsafeOutput(
                    f"{total} bytes exceed engine.fetch.max_bytes={caps.max_bytes}"
                )
            for root, relative, _ in plan:
                try:
                    size += staging.copy_file(
                        root, relative, dest / relative, caps.max_bytes - size
                    )
                except UnsafePath as error:
                    raise staging.UnsafeOutput(staging.refused("output", error)) from None
                written.append(relative)
        except (staging.UnsafeOutput, OSError) as error:
            return Fetched(ce_job_id, tuple(written), size, error=f"job {ce_job_id}: {error}")
        state = jobstate.current(jobdir)
        errors = state.get("errors")
        diagnostics = [str(e) for e in errors] if isinstance(errors, list) else []
        diagnostics += notes
        if failed:
            diagnostics.append(staging.tail(jobdir / jf.STDERR, 2000))
        text = "\n".join(d for d in diagnostics if d) or None
        return Fetched(ce_job_id, tuple(written), size, diagnostics=text)

    def close(self) -> None:
        self._options.clear()


#: What make_backend builds this back end with (BACKENDS names LocalBackend), declared so that mypy
#: checks it (make check): built with the engine's keywords, it is a Backend. A method missing or
#: of another signature fails the type check, not the first daemon that calls it.
backend_factory: BackendFactory = LocalBackend
