"""FakeSchedd: a TEST DOUBLE of ``htcondor2.Schedd``, in memory.

No HTCondor daemons can be installed here (Debian has no package, the PyPI wheels ship no
``condor_schedd``; see research/storage.md), so the back end's tests run on this fake, and on a real
schedd when ``ACT_TEST_SCHEDD`` names one. What is real in it: every description is the text
``htcondor2.Schedd.submit`` would send, parsed by the real ``htcondor2.Submit``, with item data
expanded by it; every constraint and projection is evaluated on a real ``classad2.ClassAd``. What
is not: the job ads hold only the attributes the back end reads, and jobs move only when a
test moves them (:meth:`FakeSchedd.idle`, :meth:`running`, :meth:`hold`, :meth:`complete`,
:meth:`remove`, :meth:`to_history`), or through :meth:`act` (remove, release, hold) as a
schedd would.
:meth:`FakeSchedd.fail` makes every call raise ``HTCondorException``, as an unreachable schedd;
``refuse[token] = message`` makes a submission holding that job fail as a whole (nothing made).
Not modelled: HTCondor's merging of ``environment`` across the procs of a cluster (checked with
HTCondor itself in tests/test_condor_classad.py), file transfer, the grid manager.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ITEM_SEPARATOR = "\x1f"


@dataclass
class FakeJob:
    cluster: int
    proc: int
    submit: dict[str, str]  # the job's submit keys, item data expanded
    ad: Any  # classad2.ClassAd


@dataclass
class FakeSchedd:
    """In-memory schedd double; see the module docstring."""

    jobs: dict[str, FakeJob] = field(default_factory=dict)  # the queue, by "<cluster>.<proc>"
    gone: dict[str, FakeJob] = field(default_factory=dict)  # history
    calls: list[tuple[str, Any]] = field(default_factory=list)
    unreachable: str | None = None
    refuse: dict[str, str] = field(default_factory=dict)  # token -> the schedd's error message
    _clusters: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    # ----------------------------------------------------------- test controls ---
    def fail(self, message: str | None = "Failed to connect to schedd <127.0.0.1:9618>") -> None:
        """Every call raises HTCondorException(message) until ``fail(None)``."""
        self.unreachable = message

    def _check(self, call: str, detail: Any) -> None:
        self.calls.append((call, detail))
        if self.unreachable is not None:
            import htcondor2

            raise htcondor2.HTCondorException(self.unreachable)

    def job(self, job_id: str) -> FakeJob:
        return self.jobs.get(job_id) or self.gone[job_id]

    def _set(self, job_id: str, status: int, **attrs: Any) -> None:
        ad = self.jobs[job_id].ad
        ad["JobStatus"] = status
        ad["EnteredCurrentStatus"] = int(time.time())
        for key, value in attrs.items():
            ad[key] = value

    def idle(self, job_id: str, *, unavailable_since: int | None = None) -> None:
        self._set(job_id, 1)
        if unavailable_since is not None:
            self.jobs[job_id].ad["GridResourceUnavailableTime"] = unavailable_since
        else:
            self.jobs[job_id].ad.pop("GridResourceUnavailableTime", None)

    def running(self, job_id: str, *, grid: str = "RUNNING", host: str = "wn1.example.org") -> None:
        self._set(job_id, 2, GridJobStatus=grid, RemoteHost=host, JobStartDate=int(time.time()))

    def hold(self, job_id: str, reason: str, code: int, subcode: int = 0) -> None:
        holds = self.jobs[job_id].ad.get("NumHolds", 0) + 1
        self._set(
            job_id,
            5,
            HoldReason=reason,
            HoldReasonCode=code,
            HoldReasonSubCode=subcode,
            NumHolds=holds,
        )

    def complete(self, job_id: str, exit_code: int = 0, *, to_history: bool = True) -> None:
        self._set(
            job_id, 4, ExitCode=exit_code, ExitBySignal=False, CompletionDate=int(time.time())
        )
        if to_history:
            self.to_history(job_id)

    def remove(
        self, job_id: str, reason: str = "via condor_rm", *, to_history: bool = True
    ) -> None:
        self._set(job_id, 3, RemoveReason=reason)
        if to_history:
            self.to_history(job_id)

    def to_history(self, job_id: str) -> None:
        self.gone[job_id] = self.jobs.pop(job_id)

    # ----------------------------------------------------- the schedd's methods ---
    def submit(
        self,
        description: Any,
        count: int = 0,
        spool: bool = False,
        itemdata: Iterator[dict[str, str]] | None = None,
    ) -> Any:
        import classad2
        import htcondor2

        items = list(itemdata) if itemdata is not None else [{}] * max(count, 1)
        self._check("submit", len(items))
        text = "".join(f"{key} = {value}\n" for key, value in description.items())
        cluster = next(self._clusters)
        made: list[FakeJob] = []
        for proc, item in enumerate(items):
            if any(ITEM_SEPARATOR in v or "\n" in v for v in item.values()):
                raise htcondor2.HTCondorException("bad item data")
            macros = "".join(f"{key} = {value}\n" for key, value in item.items())
            job_submit = htcondor2.Submit(macros + text)
            expanded = {key: str(job_submit.expand(key)) for key in description if key not in item}
            refusal = self.refuse.get(expanded.get("MY.ActToken", "").strip('"'))
            if refusal is not None:
                raise htcondor2.HTCondorException(refusal)
            ad = classad2.ClassAd()
            ad["ClusterId"] = cluster
            ad["ProcId"] = proc
            ad["JobStatus"] = 1
            ad["EnteredCurrentStatus"] = int(time.time())
            ad["JobUniverse"] = 9 if expanded.get("universe", "").lower() == "grid" else 5
            for key, attr in (
                ("grid_resource", "GridResource"),
                ("initialdir", "Iwd"),
                ("output", "Out"),
                ("error", "Err"),
                ("log", "UserLog"),
                ("x509userproxy", "x509userproxy"),
            ):
                if key in expanded:
                    ad[attr] = expanded[key]
            for key, value in expanded.items():
                if key.startswith("MY."):
                    ad[key[3:]] = classad2.ExprTree(value).eval()
            made.append(FakeJob(cluster, proc, expanded, ad))
        for job in made:  # one transaction: all or nothing
            self.jobs[f"{cluster}.{job.proc}"] = job
        return _Result(cluster, len(made))

    def _match(self, pool: dict[str, FakeJob], constraint: Any, projection: list[str]) -> list[Any]:
        import classad2

        expression = classad2.ExprTree(str(constraint if constraint is not None else "True"))
        out = []
        for job in pool.values():
            if expression.eval(job.ad) is not True:
                continue
            if projection:
                out.append(classad2.ClassAd({k: job.ad[k] for k in projection if k in job.ad}))
            else:
                out.append(classad2.ClassAd(dict(job.ad.items())))
        return out

    def query(
        self, constraint: str = "True", projection: list[str] | None = None, limit: int = -1
    ) -> list[Any]:
        self._check("query", constraint)
        found = self._match(self.jobs, constraint, projection or [])
        return found if limit < 0 else found[:limit]

    def history(
        self, constraint: str | None = None, projection: list[str] | None = None, match: int = -1
    ) -> list[Any]:
        self._check("history", (constraint, match))
        newest_first = dict(reversed(list(self.gone.items())))
        found = self._match(newest_first, constraint, projection or [])
        return found if match < 0 else found[:match]

    def act(self, action: Any, job_spec: list[str] | str, reason: str | None = None) -> Any:
        import classad2
        import htcondor2

        self._check("act", (action.name, job_spec))
        ids = job_spec if isinstance(job_spec, list) else [job_spec]
        done = not_found = bad_status = 0
        for job_id in ids:
            job = self.jobs.get(job_id)
            if job is None:
                not_found += 1
                continue
            status = job.ad["JobStatus"]
            if action == htcondor2.JobAction.Remove and status != 3:
                self._set(job_id, 3, RemoveReason=reason or "removed")
                if status != 5:  # a grid job leaves the queue once the CE confirms
                    self.to_history(job_id)
                done += 1
            elif action == htcondor2.JobAction.Release and status == 5:
                self._set(job_id, 1)
                done += 1
            elif action == htcondor2.JobAction.Hold and status in (1, 2):
                self.hold(job_id, reason or "via condor_hold", 1)
                done += 1
            else:
                bad_status += 1
        return classad2.ClassAd(
            {"TotalSuccess": done, "TotalNotFound": not_found, "TotalBadStatus": bad_status}
        )


class _Result:
    """What ``htcondor2.SubmitResult`` gives the back end."""

    def __init__(self, cluster: int, procs: int) -> None:
        self._cluster = cluster
        self._procs = procs

    def cluster(self) -> int:
        return self._cluster

    def first_proc(self) -> int:
        return 0

    def num_procs(self) -> int:
        return self._procs
