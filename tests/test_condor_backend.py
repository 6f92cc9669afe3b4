"""The HTCondor back end over a schedd: on FakeSchedd (the in-memory test double; no HTCondor
daemons can be installed here) always, and on a real schedd when ``ACT_TEST_SCHEDD`` names one
(the tests parametrised with ``kind``; see README "Tests against a real HTCondor schedd").

Every description submitted is parsed by the real ``htcondor2.Submit``; every constraint the back
end writes is evaluated by the real ``classad2`` (in the fake) or by the schedd.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import classad2
import htcondor2
import pytest

from act.condor.ads import ids_constraint, job_status, tokens_constraint
from act.condor.fake_schedd import FakeSchedd
from act.condor.options import CondorOptions
from act.condor.schedd import ScheddUnavailable, open_schedd
from act.condor.submission import combine, env_names, prepare
from act.engine.backend import CEReportedState, CEUnavailable, SubmitRequest
from tests.support.condor import Bench, bench, descriptions, make_ce, sh

KINDS = ["fake", "real"]
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def fake_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Bench:
    return bench("fake", tmp_path, monkeypatch)


def _fake(b: Bench) -> FakeSchedd:
    assert b.fake is not None
    return b.fake


def _requests(pairs: list[tuple[int, str]]) -> list[SubmitRequest]:
    return [
        SubmitRequest(i, f"tok-{panda_id}-{i}", text, panda_id=panda_id)
        for i, (panda_id, text) in enumerate(pairs)
    ]


# ------------------------------------------------------------------- any schedd ---
@pytest.mark.parametrize("kind", KINDS)
def test_submit_find_status_kill_clean(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = bench(kind, tmp_path, monkeypatch)
    web = tmp_path / "web"
    jobs = [
        SubmitRequest(i, f"t{os.getpid()}x{time.time_ns()}x{i}", sh(100 + i, web)) for i in range(3)
    ]
    submitted = b.backend.submit(b.ce, jobs)
    ids = [s.ce_job_id for s in submitted]
    assert all(ids) and [s.error for s in submitted] == [None] * 3
    clusters = {i.split(".")[0] for i in ids if i}
    assert len(clusters) == 1  # one transaction, one cluster
    try:
        assert b.backend.find(b.ce, [j.token for j in jobs] + ["not-there"]) == {
            j.token: i for j, i in zip(jobs, ids, strict=True)
        }
        states = b.backend.status(b.ce, [i for i in ids if i])
        assert {s.state for s in states.values() if s} <= {
            CEReportedState.SUBMITTED,
            CEReportedState.FAILED,
        }
        iwd = b.backend.iwd_base(b.ce) / jobs[0].token
        assert iwd.is_dir()
    finally:
        killed = b.backend.kill(b.ce, [i for i in ids if i])
        assert all(o.ok for o in killed.values())
        cleaned = b.backend.clean(b.ce, [i for i in ids if i])
    assert all(o.ok for o in cleaned.values())
    assert not iwd.exists()
    after = b.backend.status(b.ce, [i for i in ids if i])
    assert all(s is None or s.state is CEReportedState.CANCELLED for s in after.values())


# --------------------------------------------------------------------- submit ---
@pytest.mark.parametrize("flavour", ["condor", "arc", "arc-url"])
def test_a_batch_is_one_transaction_and_each_job_keeps_its_description(
    fake_bench: Bench, flavour: str
) -> None:
    fake = _fake(fake_bench)
    # The same environment variable names (see test_only_jobs_with_the_same_environment_...).
    pairs = [
        (panda_id, text) for panda_id, text in descriptions(flavour) if "HARVESTER" not in text
    ]
    assert len(pairs) > 1
    requests = _requests(pairs)
    results = fake_bench.backend.submit(fake_bench.ce, requests)
    assert [r.ce_job_id for r in results] == [f"1.{n}" for n in range(len(pairs))]
    assert [name for name, _ in fake.calls] == ["submit"]
    for request, result in zip(requests, results, strict=True):
        assert result.ce_job_id is not None
        job = fake.job(result.ce_job_id)
        original = dict(htcondor2.Submit(request.description).items())
        for key, value in original.items():  # nothing rewritten: output, error, log included
            assert job.submit[key] == value, key
        assert job.ad["ActToken"] == request.token
        assert job.ad["ActCE"] == fake_bench.ce.name
        assert job.ad["JobUniverse"] == 9
        assert job.ad["Iwd"] == str(fake_bench.backend.iwd_base(fake_bench.ce) / request.token)
        assert job.ad["Out"] == f"/var/www/act/jobs/2026-11-22/ANALY_EXAMPLE/{request.panda_id}.out"
        resource = job.ad["GridResource"]
        assert resource.startswith("arc https://" if flavour != "condor" else "condor ce01")


def test_every_produced_description_parses_with_the_real_submit(tmp_path: Path) -> None:
    prepared = [
        prepare(
            text,
            token=f"tok{n}",
            ce_name="c1",
            iwd=f"/iwd/tok{n}",
            default_grid_resource=None,
            proxy="/tmp/x509up",
            token_file="/tmp/bt",
        )
        for n, (_, text) in enumerate(descriptions("condor") + descriptions("arc"))
    ]
    batches = combine(prepared)
    # Per CE flavour (their key sets differ), one cluster with and one without HARVESTER_*:
    # the truepilot cases, 2 with Harvester ids and 4 without.
    assert sorted(len(b.indices) for b in batches) == [2, 2, 4, 4]
    for batch in batches:
        submit = htcondor2.Submit(batch.text)
        assert submit["universe"] == "grid"
        assert submit["scitokens_file"] == "/tmp/bt" and submit["x509userproxy"] == "/tmp/x509up"
        assert len(batch.items) == (len(batch.indices) if len(batch.indices) > 1 else 0)


def test_only_jobs_with_the_same_environment_names_share_a_cluster() -> None:
    """HTCondor merges ``environment`` from one proc into the next (tests/test_condor_classad)."""

    def keys(environment: str) -> dict[str, str]:
        return {"universe": "grid", "environment": environment}

    batches = combine(
        [
            keys("\"A=1 B='x y'\""),
            keys('"B=2 A=3"'),
            keys('"A=1"'),
            keys("A=1;B=2"),  # old syntax: only with the very same value
            keys("A=1;B=2"),
            keys("A=1;B=3"),
            keys('"A=\'unbalanced"'),
        ]
    )
    assert sorted(b.indices for b in batches) == [(0, 1), (2,), (3, 4), (5,), (6,)]
    assert env_names("\"A=1 B='x y' C=it''s D\"") == ("A", "B", "C", "D")
    assert env_names("A=1;B=2") is None


def test_proxy_and_token_file_are_added_when_the_description_names_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = tmp_path / "proxy"
    proxy.write_text("x")
    proxy.chmod(0o600)
    b = bench("fake", tmp_path, monkeypatch, token_file="/etc/act/token")
    ce = make_ce(token_file="/etc/act/token")
    ce = type(ce)(ce.name, ce.settings.model_copy(update={"credential": str(proxy)}))
    [result] = b.backend.submit(ce, [SubmitRequest(1, "tok1", sh(1, tmp_path / "web"))])
    assert result.ce_job_id is not None
    job = _fake(b).job(result.ce_job_id)
    assert job.submit["x509userproxy"] == str(proxy)
    assert job.submit["scitokens_file"] == "/etc/act/token"
    proxy.chmod(0o644)
    with pytest.raises(CEUnavailable, match="chmod 600"):
        b.backend.submit(ce, [SubmitRequest(2, "tok2", sh(2, tmp_path / "web"))])


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("universe = vanilla\nexecutable = /bin/true\nqueue 1\n", "only grid"),
        ("universe = grid\nexecutable = /bin/true\nqueue 5\n", "one job"),
        ("universe = grid\ninitialdir = /tmp\nexecutable = /bin/true\n", "initialdir is set"),
        ('universe = grid\n+ActToken = "other"\nexecutable = /bin/true\n', "ActToken is set"),
        ("universe = grid\nexecutable = /bin/true\nqueue 1 from (\n", "one job"),
        ("universe = grid\nexecutable = /bin/true\nqueue 1\nqueue 2\n", "one job"),
        ("universe = grid\nthis is not a command\n", "not a valid submit description"),
    ],
)
def test_bad_descriptions_are_refused_permanently_and_the_rest_goes(
    fake_bench: Bench, text: str, why: str
) -> None:
    good = sh(7, fake_bench.tmp_path / "web")
    results = fake_bench.backend.submit(
        fake_bench.ce, [SubmitRequest(1, "bad", text), SubmitRequest(2, "good", good)]
    )
    assert results[0].ce_job_id is None and results[0].permanent
    assert why in (results[0].error or "")
    assert results[1].ce_job_id == "1.0"


def test_a_job_the_schedd_refuses_fails_alone_after_a_token_check(fake_bench: Bench) -> None:
    fake = _fake(fake_bench)
    fake.refuse["t2"] = "unable to read proxy file"
    web = fake_bench.tmp_path / "web"
    jobs = [SubmitRequest(i, f"t{i}", sh(i, web)) for i in range(1, 4)]
    results = fake_bench.backend.submit(fake_bench.ce, jobs)
    assert [r.ce_job_id is not None for r in results] == [True, False, True]
    assert "unable to read proxy file" in (results[1].error or "")
    assert not results[1].permanent
    assert fake_bench.backend.find(fake_bench.ce, ["t1", "t2", "t3"]).keys() == {"t1", "t3"}
    assert not (fake_bench.backend.iwd_base(fake_bench.ce) / "t2").exists()
    assert (
        "history",
        ('isString(ActToken) && member(ActToken, {"t1", "t2", "t3"})', 3),
    ) in fake.calls


def test_an_unreachable_schedd_raises_ce_unavailable_everywhere(fake_bench: Bench) -> None:
    [ok] = fake_bench.backend.submit(
        fake_bench.ce, [SubmitRequest(1, "t1", sh(1, fake_bench.tmp_path / "web"))]
    )
    assert ok.ce_job_id is not None
    _fake(fake_bench).fail()
    b, ce = fake_bench.backend, fake_bench.ce
    calls: list[Callable[[], object]] = [
        lambda: b.submit(ce, [SubmitRequest(2, "t2", sh(2, fake_bench.tmp_path / "web"))]),
        lambda: b.status(ce, ["1.0"]),
        lambda: b.find(ce, ["t1"]),
        lambda: b.fetch(ce, "1.0", fake_bench.tmp_path / "out", failed=False),
        lambda: b.kill(ce, ["1.0"]),
        lambda: b.clean(ce, ["1.0"]),
        lambda: b.restart(ce, ["1.0"]),
    ]
    for call in calls:
        with pytest.raises(CEUnavailable, match="Failed to connect"):
            call()


def test_no_local_schedd_here_is_unavailable_with_the_real_bindings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.environ.get("ACT_TEST_SCHEDD"):
        pytest.skip("a real schedd is configured")
    monkeypatch.setenv("CONDOR_CONFIG", "/dev/null")
    with pytest.raises(ScheddUnavailable, match="local schedd"):
        open_schedd(CondorOptions())
    b = bench("fake", tmp_path, monkeypatch)
    monkeypatch.undo()
    monkeypatch.setenv("CONDOR_CONFIG", "/dev/null")
    with pytest.raises(CEUnavailable, match="cannot locate"):
        b.backend.status(b.ce, ["1.0"])


# --------------------------------------------------------------------- status ---
def _ad(**attrs: object) -> classad2.ClassAd:
    return classad2.ClassAd({"ClusterId": 1, "ProcId": 0, **attrs})


@pytest.mark.parametrize(
    ("attrs", "state", "raw", "errors"),
    [
        ({"JobStatus": 1}, CEReportedState.SUBMITTED, "idle", ()),
        (
            {"JobStatus": 2, "GridJobStatus": "RUNNING"},
            CEReportedState.RUNNING,
            "running (grid: RUNNING)",
            (),
        ),
        (
            {"JobStatus": 2, "GridJobStatus": "COMPLETED"},
            CEReportedState.FINISHING,
            "running (grid: COMPLETED)",
            (),
        ),
        (
            {"JobStatus": 2, "GridJobStatus": "FINISHING"},
            CEReportedState.FINISHING,
            "running (grid: FINISHING)",
            (),
        ),
        (
            {"JobStatus": 3, "RemoveReason": "via condor_rm"},
            CEReportedState.CANCELLED,
            "removed",
            ("removed: via condor_rm",),
        ),
        ({"JobStatus": 4, "ExitCode": 0}, CEReportedState.FINISHED, "completed", ()),
        ({"JobStatus": 4, "ExitCode": 3}, CEReportedState.FAILED, "completed", ("exit code 3",)),
        (
            {"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9},
            CEReportedState.FAILED,
            "completed",
            ("killed by signal 9",),
        ),
        (
            {
                "JobStatus": 5,
                "HoldReason": "Transfer output files failure",
                "HoldReasonCode": 12,
                "HoldReasonSubCode": 2,
            },
            CEReportedState.FAILED,
            "held",
            ("held: Transfer output files failure (code 12, subcode 2)",),
        ),
        ({"JobStatus": 6}, CEReportedState.FINISHING, "transferring_output", ()),
        ({"JobStatus": 7}, CEReportedState.RUNNING, "suspended", ()),
    ],
)
def test_job_status_maps_htcondor_states(
    attrs: dict[str, object], state: CEReportedState, raw: str, errors: tuple[str, ...]
) -> None:
    status = job_status("1.0", _ad(**attrs), now=NOW, stale=1800)
    assert (status.state, status.raw_state, status.errors) == (state, raw, errors)
    assert status.restartable == (attrs["JobStatus"] == 5)
    assert status.exit_code == (attrs.get("ExitCode") if attrs["JobStatus"] == 4 else None)


def test_an_unreachable_grid_resource_fails_the_job_only_after_a_while() -> None:
    since = int((NOW - timedelta(seconds=600)).timestamp())
    recent = job_status(
        "1.0", _ad(JobStatus=1, GridResourceUnavailableTime=since), now=NOW, stale=1800
    )
    assert recent.state is CEReportedState.SUBMITTED and "unavailable" in recent.raw_state
    old = job_status("1.0", _ad(JobStatus=1, GridResourceUnavailableTime=since), now=NOW, stale=300)
    assert old.state is CEReportedState.FAILED
    assert old.errors == ("grid resource unavailable since 2026-11-22T11:50:00Z",)


def test_a_job_held_too_often_is_not_restartable() -> None:
    ad = _ad(JobStatus=5, HoldReason="x", HoldReasonCode=13, NumHolds=4)
    assert not job_status("1.0", ad, now=NOW, stale=1, max_holds=3).restartable
    assert job_status("1.0", ad, now=NOW, stale=1, max_holds=4).restartable


def test_status_reads_history_for_jobs_gone_from_the_queue_bounded_and_batched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = bench("fake", tmp_path, monkeypatch, status_batch=2)
    fake = _fake(b)
    web = tmp_path / "web"
    b.backend.submit(b.ce, [SubmitRequest(i, f"t{i}", sh(i, web)) for i in range(5)])
    fake.complete("1.1", 0)
    fake.complete("1.3", 2)
    fake.calls.clear()
    found = b.backend.status(b.ce, ["1.0", "1.1", "1.2", "1.3", "1.4", "7.0", "junk"])
    assert found["1.1"] is not None and found["1.1"].state is CEReportedState.FINISHED
    assert found["1.3"] is not None and found["1.3"].state is CEReportedState.FAILED
    assert found["1.0"] is not None and found["1.0"].state is CEReportedState.SUBMITTED
    assert found["7.0"] is None and "junk" not in found
    queries = [detail for name, detail in fake.calls if name == "query"]
    assert queries == [
        ids_constraint(["1.0", "1.1"]),
        ids_constraint(["1.2", "1.3"]),
        ids_constraint(["1.4", "7.0"]),
    ]
    histories = [detail for name, detail in fake.calls if name == "history"]
    assert histories == [
        (ids_constraint(["1.1"]), 1),
        (ids_constraint(["1.3"]), 1),
        (ids_constraint(["7.0"]), 1),
    ]


def test_constraints_are_real_classad_expressions() -> None:
    ad = _ad(ActToken="abc", ProcId=4, ClusterId=12)
    assert classad2.ExprTree(ids_constraint(["12.4", "13.0"])).eval(ad) is True
    assert classad2.ExprTree(ids_constraint(["12.5"])).eval(ad) is False
    assert classad2.ExprTree(tokens_constraint(["x", "abc"])).eval(ad) is True
    assert tokens_constraint(['a" || true || "']) == "False"  # never quoted into a constraint
    assert tokens_constraint(["..", "."]) == "False"  # nor made a directory
    assert ids_constraint(["1.0) || (true"]) == "False"


# ---------------------------------------------------------------------- fetch ---
def _ended_job(b: Bench, *, held: bool = False) -> tuple[str, Path]:
    [result] = b.backend.submit(b.ce, [SubmitRequest(1, "tokf", sh(1, b.tmp_path / "web"))])
    assert result.ce_job_id is not None
    iwd = b.backend.iwd_base(b.ce) / "tokf"
    if held:
        _fake(b).hold(result.ce_job_id, "Transfer output files failure", 12, 2)
    else:
        _fake(b).complete(result.ce_job_id, 0)
    return result.ce_job_id, iwd


def test_fetch_copies_regular_files_and_never_follows_links(fake_bench: Bench) -> None:
    job_id, iwd = _ended_job(fake_bench)
    (iwd / "heartbeat.json").write_text("{}")
    (iwd / "sub").mkdir()
    (iwd / "sub" / "log.tgz").write_bytes(b"x" * 10)
    secret = fake_bench.tmp_path / "secret"
    secret.write_text("do not copy")
    (iwd / "link").symlink_to(secret)
    (iwd / "dirlink").symlink_to(fake_bench.tmp_path)
    os.mkfifo(iwd / "fifo")
    dest = fake_bench.tmp_path / "dest"
    fetched = fake_bench.backend.fetch(fake_bench.ce, job_id, dest, failed=False)
    assert fetched.error is None and not fetched.gone
    assert fetched.files == ("heartbeat.json", "sub/log.tgz") and fetched.size == 12
    assert sorted(p.name for p in dest.rglob("*")) == ["heartbeat.json", "log.tgz", "sub"]


def test_fetch_respects_the_caps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = bench("fake", tmp_path, monkeypatch)
    b.backend.settings = b.backend.settings.model_copy(
        update={
            "engine": b.backend.settings.engine.model_copy(
                update={
                    "fetch": b.backend.settings.engine.fetch.model_copy(
                        update={"max_files": 2, "max_bytes": 100}
                    )
                }
            )
        }
    )
    job_id, iwd = _ended_job(b)
    for n in range(3):
        (iwd / f"f{n}").write_text("x")
    fetched = b.backend.fetch(b.ce, job_id, tmp_path / "d1", failed=False)
    assert fetched.error == "more than 2 files in the initialdir"
    for n in range(3):
        (iwd / f"f{n}").unlink()
    (iwd / "big").write_bytes(b"x" * 101)
    fetched = b.backend.fetch(b.ce, job_id, tmp_path / "d2", failed=False)
    assert "max_bytes" in (fetched.error or "")


def test_fetch_of_a_held_job_gives_the_hold_reason_and_a_lost_job_is_gone(
    fake_bench: Bench,
) -> None:
    job_id, _ = _ended_job(fake_bench, held=True)
    fetched = fake_bench.backend.fetch(
        fake_bench.ce, job_id, fake_bench.tmp_path / "d", failed=True
    )
    assert fetched.diagnostics == "held: Transfer output files failure (code 12, subcode 2)"
    assert fetched.files == () and fetched.error is None
    gone = fake_bench.backend.fetch(fake_bench.ce, "99.0", fake_bench.tmp_path / "e", failed=True)
    assert gone.gone


def test_fetch_refuses_an_initialdir_that_is_not_acts_own(fake_bench: Bench) -> None:
    job_id, _ = _ended_job(fake_bench)
    _fake(fake_bench).job(job_id).ad["Iwd"] = "/etc"
    fetched = fake_bench.backend.fetch(
        fake_bench.ce, job_id, fake_bench.tmp_path / "d", failed=False
    )
    assert fetched.error == "no initialdir of act's own" and fetched.files == ()


# ------------------------------------------------------- kill, clean, restart ---
def test_restart_releases_held_jobs_only(fake_bench: Bench) -> None:
    fake = _fake(fake_bench)
    web = fake_bench.tmp_path / "web"
    fake_bench.backend.submit(
        fake_bench.ce, [SubmitRequest(i, f"t{i}", sh(i, web)) for i in range(2)]
    )
    fake.hold("1.0", "Error connecting to schedd", 0)
    outcomes = fake_bench.backend.restart(fake_bench.ce, ["1.0", "1.1", "5.0"])
    assert outcomes["1.0"].ok and fake.job("1.0").ad["JobStatus"] == 1
    assert not outcomes["1.1"].ok and outcomes["1.1"].error == "not held (idle)"
    assert outcomes["5.0"].gone and not outcomes["5.0"].ok


def test_kill_and_clean_of_jobs_unknown_or_held(fake_bench: Bench) -> None:
    fake = _fake(fake_bench)
    web = fake_bench.tmp_path / "web"
    fake_bench.backend.submit(
        fake_bench.ce, [SubmitRequest(i, f"t{i}", sh(i, web)) for i in range(2)]
    )
    fake.hold("1.1", "policy", 3)
    killed = fake_bench.backend.kill(fake_bench.ce, ["1.0", "8.8"])
    assert killed["1.0"].ok and not killed["1.0"].gone
    assert killed["8.8"].ok and killed["8.8"].gone
    cleaned = fake_bench.backend.clean(fake_bench.ce, ["1.0", "1.1"])
    assert cleaned["1.0"].ok and cleaned["1.1"].ok
    assert fake.job("1.1").ad["JobStatus"] == 3  # the held job was removed from the queue
    base = fake_bench.backend.iwd_base(fake_bench.ce)
    assert not (base / "t0").exists() and not (base / "t1").exists()
