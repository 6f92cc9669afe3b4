"""The ARC back end, its REST client and delegations against a real ARC CE (A-REX 6.17).

Start the CE first: ``sudo tests/harness/arc-ce start`` (``make test`` does). The jobs are tiny
shell commands on the CE's fork batch system; each test waits for terminal states, which the CE
reports after its info provider's next run (every 5 s on the test CE).
"""

from __future__ import annotations

import logging
import secrets
import subprocess
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from act.arc.backend import ArcBackend
from act.arc.delegation import Delegations
from act.arc.proxy import load_credential
from act.common.db import Database
from act.common.schema import delegations
from act.common.timeutil import utcnow
from act.engine.backend import (
    CE,
    TERMINAL,
    CEReportedState,
    CEUnavailable,
    JobStatus,
    SubmitRequest,
)
from act.engine.settings import CESettings, EngineSettings, FetchSettings
from act.service.settings import Settings
from tests.support.arc_real import HARNESS, RealArc, arc_ce
from tests.support.procs import wait_for

__all__ = ["arc_ce"]  # the session fixture, imported for pytest
pytestmark = pytest.mark.arc
LOG = logging.getLogger("act.test.arc")


def make_ce(arc: RealArc, name: str = "arc1", **changes: Any) -> CE:
    fields: dict[str, Any] = {
        "backend": "arc",
        "url": arc.url,
        "queue": "fork",
        "credential": arc.proxy,
        "ca": arc.ca_dir,
        "timeout": 30.0,
    }
    fields.update(changes)
    return CE(name, CESettings(**fields))


def make_settings(tmp_path: Path, *ces: CE) -> Settings:
    return Settings(
        root=str(tmp_path / "root"),
        engine=EngineSettings(ces={ce.name: ce.settings for ce in ces}),
    )


@pytest.fixture
def ce(arc_ce: RealArc) -> CE:
    return make_ce(arc_ce)


@pytest.fixture
def arc_backend(tmp_path: Path, ce: CE, sqlite_db: Database) -> Iterator[ArcBackend]:
    arc = ArcBackend(settings=make_settings(tmp_path, ce), db=sqlite_db, log=LOG)
    yield arc
    arc.close()


def request(description: str, input_dir: Path | None = None) -> SubmitRequest:
    return SubmitRequest(
        job_id=secrets.randbelow(1 << 30),
        token=secrets.token_hex(8),
        description=description,
        input_dir=input_dir,
        panda_id=4242,
    )


def wait_terminal(
    arc_backend: ArcBackend, ce: CE, ids: Sequence[str], timeout: float = 300.0
) -> dict[str, JobStatus]:
    deadline = time.monotonic() + timeout
    while True:
        states = arc_backend.status(ce, ids)
        done = {i: s for i, s in states.items() if s is not None and s.state in TERMINAL}
        if len(done) == len(ids) or time.monotonic() > deadline:
            assert len(done) == len(ids), f"not terminal after {timeout}s: {states}"
            return done
        time.sleep(1.0)


def sh(command: str, **extra: str) -> str:
    """An xRSL description running ``command`` with /bin/sh in the session directory."""
    relations = "".join(f"({k}={v})" for k, v in extra.items())
    quoted = command.replace('"', '""')
    return f'&(executable="/bin/sh")(arguments="-c" "{quoted}"){relations}'


def test_submit_finish_fetch_clean(arc_backend: ArcBackend, ce: CE, tmp_path: Path) -> None:
    job = request(
        sh(
            "echo hello from act > out.txt; mkdir -p sub; echo nested > sub/n.txt",
            jobname='"my job"',
            outputfiles='("out.txt" "")("sub/" "")',
        )
    )
    [submitted] = arc_backend.submit(ce, [job])
    assert submitted.error is None and submitted.ce_job_id
    job_id = submitted.ce_job_id
    final = wait_terminal(arc_backend, ce, [job_id])[job_id]
    assert final.state is CEReportedState.FINISHED, final
    assert final.raw_state == "FINISHED"
    assert final.exit_code in (0, None)
    assert final.worker_node
    # The fetch limits of the config hold: too many bytes or files is an error, not a fetch.
    limits: tuple[tuple[dict[str, Any], str], ...] = (
        ({"max_bytes": 5}, "larger than 5 bytes"),
        ({"max_files": 1}, "1 files"),
    )
    for limit, message in limits:
        small = Settings(
            root=str(tmp_path / "root"),
            engine=EngineSettings(ces={ce.name: ce.settings}, fetch=FetchSettings(**limit)),
        )
        capped = ArcBackend(settings=small, db=None, log=LOG)
        refused = capped.fetch(ce, job_id, tmp_path / f"capped-{len(message)}", failed=False)
        assert refused.error and message in refused.error, refused
        capped.close()
    dest = tmp_path / "out"
    fetched = arc_backend.fetch(ce, job_id, dest, failed=False)
    assert fetched.error is None, fetched
    assert "out.txt" in fetched.files and "sub/n.txt" in fetched.files
    assert (dest / "out.txt").read_text() == "hello from act\n"
    assert (dest / "sub" / "n.txt").read_text() == "nested\n"
    assert fetched.size == len("hello from act\n") + len("nested\n")
    cleaned = arc_backend.clean(ce, [job_id])[job_id]
    assert cleaned.ok and not cleaned.gone
    deadline = time.monotonic() + 30  # clean is queued: the job is gone within seconds
    while arc_backend.status(ce, [job_id]) != {job_id: None}:  # then: 404, None
        assert time.monotonic() < deadline, "the CE still knows the job 30s after clean"
        time.sleep(1)
    again = arc_backend.clean(ce, [job_id])[job_id]
    assert again.gone
    assert arc_backend.fetch(ce, job_id, tmp_path / "again", failed=False).gone


def test_a_failing_payload_ends_failed_with_the_ces_error(
    arc_backend: ArcBackend, ce: CE, tmp_path: Path
) -> None:
    [submitted] = arc_backend.submit(ce, [request(sh("echo about to fail; exit 3"))])
    assert submitted.ce_job_id
    final = wait_terminal(arc_backend, ce, [submitted.ce_job_id])[submitted.ce_job_id]
    assert final.state is CEReportedState.FAILED
    assert final.exit_code == 3
    assert any("wrong exit code - 3 != 0" in e for e in final.errors), final.errors
    fetched = arc_backend.fetch(ce, submitted.ce_job_id, tmp_path / "f", failed=True)
    assert fetched.error is None
    assert fetched.diagnostics and "wrong exit code - 3 != 0" in fetched.diagnostics
    arc_backend.clean(ce, [submitted.ce_job_id])


def test_kill(arc_backend: ArcBackend, ce: CE) -> None:
    [submitted] = arc_backend.submit(ce, [request(sh("sleep 317"))])
    assert submitted.ce_job_id
    killed = arc_backend.kill(ce, [submitted.ce_job_id])[submitted.ce_job_id]
    assert killed.ok
    final = wait_terminal(arc_backend, ce, [submitted.ce_job_id])[submitted.ce_job_id]
    assert final.state is CEReportedState.CANCELLED
    assert final.raw_state == "KILLED"
    # ... and the payload is gone (the harness's fork cancel fix): no "sleep 317" left.
    found = subprocess.run(
        ["pgrep", "-f", "sleep 317"], check=False, capture_output=True, text=True
    )
    left = found.stdout
    assert not left.strip(), f"killed job's payload still runs: {left}"
    arc_backend.clean(ce, [submitted.ce_job_id])


def test_restart_reruns_a_failed_job(arc_backend: ArcBackend, ce: CE) -> None:
    assert arc_backend.limits(ce).can_restart
    [submitted] = arc_backend.submit(ce, [request(sh("sleep 2; exit 5", rerun="2"))])
    job_id = submitted.ce_job_id
    assert job_id
    assert wait_terminal(arc_backend, ce, [job_id])[job_id].state is CEReportedState.FAILED
    outcome = arc_backend.restart(ce, [job_id])[job_id]
    assert outcome.ok, outcome
    # The CE takes the job back and runs it again. Its REST state may show FAILED throughout
    # (the rerun can end before the info provider's next run), so read the CE's own job log.
    client = arc_backend.client(ce)
    deadline = time.monotonic() + 90
    while "Request to restart job" not in (client.diagnose(job_id, "errors") or ""):
        assert time.monotonic() < deadline, "the CE never restarted the job"
        time.sleep(1)
    wait_terminal(arc_backend, ce, [job_id])
    assert arc_backend.restart(ce, ["nosuchjob0123"])["nosuchjob0123"].gone
    arc_backend.clean(ce, [job_id])


def test_stage_in_upload_of_a_local_input_file(
    arc_backend: ArcBackend, ce: CE, tmp_path: Path
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "in.txt").write_text("shipped by act\n")
    (inputs / "spec.json").write_text('{"PandaID": 4242}\n')
    job = request(
        sh(
            "cat in.txt spec.json > out.txt",
            inputfiles='("in.txt" "")("spec.json" "spec.json")',
            outputfiles='("out.txt" "")',
        ),
        input_dir=inputs,
    )
    [submitted] = arc_backend.submit(ce, [job])
    assert submitted.ce_job_id, submitted
    final = wait_terminal(arc_backend, ce, [submitted.ce_job_id])[submitted.ce_job_id]
    assert final.state is CEReportedState.FINISHED, final
    fetched = arc_backend.fetch(ce, submitted.ce_job_id, tmp_path / "out", failed=False)
    assert (tmp_path / "out" / "out.txt").read_text() == 'shipped by act\n{"PandaID": 4242}\n'
    assert fetched.files == ("out.txt",)
    arc_backend.clean(ce, [submitted.ce_job_id])


def test_an_input_outside_the_input_dir_is_refused(
    arc_backend: ArcBackend, ce: CE, tmp_path: Path
) -> None:
    (tmp_path / "inputs").mkdir()
    job = request(sh("true", inputfiles='("x" "/etc/passwd")'), input_dir=tmp_path / "inputs")
    [result] = arc_backend.submit(ce, [job])
    assert result.ce_job_id is None and result.permanent
    assert "outside the input directory" in (result.error or "")


def found_soon(
    backend: ArcBackend, ce: CE, tokens: Sequence[str], expected: dict[str, Any]
) -> None:
    """``find`` returns ``expected`` within a minute: A-REX writes a job it has just accepted
    (its name, its description) in the background, so on a loaded machine a job may not be
    findable for a moment after its submission. (The submitter asks ``find`` only after a
    crash, a lease later.)"""
    wait_for(
        lambda: backend.find(ce, tokens) == expected, 60, f"find({list(tokens)}) == {expected}"
    )


def test_find_returns_the_job_of_its_token(arc_backend: ArcBackend, ce: CE) -> None:
    job = request(sh("true", jobname='"named"'))
    [submitted] = arc_backend.submit(ce, [job])
    assert submitted.ce_job_id
    found_soon(arc_backend, ce, [job.token, "0123456789abcdef"], {job.token: submitted.ce_job_id})
    wait_terminal(arc_backend, ce, [submitted.ce_job_id])
    arc_backend.clean(ce, [submitted.ce_job_id])


def test_a_bulk_with_one_bad_description_submits_the_others(
    arc_backend: ArcBackend, ce: CE
) -> None:
    good1, good2 = request(sh("true")), request(sh("true"))
    bad = request(sh("true", count='"many"'))  # parses locally; A-REX refuses it
    unparsable = request('&(executable="/bin/true"')
    results = arc_backend.submit(ce, [good1, bad, unparsable, good2])
    assert [r.job_id for r in results] == [
        good1.job_id,
        bad.job_id,
        unparsable.job_id,
        good2.job_id,
    ]
    assert results[0].ce_job_id and results[3].ce_job_id
    assert results[1].ce_job_id is None and "count" in (results[1].error or "")
    assert results[1].permanent
    assert results[2].ce_job_id is None and results[2].permanent
    ids = [results[0].ce_job_id, results[3].ce_job_id]
    assert arc_backend.find(ce, [bad.token]) == {}  # nothing was created for the bad one
    wait_terminal(arc_backend, ce, ids)
    arc_backend.clean(ce, ids)


def test_a_ce_that_is_down_is_unavailable(arc_ce: RealArc, tmp_path: Path) -> None:
    down = make_ce(arc_ce, "down", url="https://localhost:1/arex", timeout=5.0)
    arc = ArcBackend(settings=make_settings(tmp_path, down), db=None, log=LOG)
    with pytest.raises(CEUnavailable) as error:
        arc.status(down, ["abc"])
    assert error.value.ce == "down" and "connection failed" in error.value.cause
    with pytest.raises(CEUnavailable):
        arc.submit(down, [request(sh("true"))])
    with pytest.raises(CEUnavailable):
        arc.kill(down, ["abc"])
    arc.close()


def _other_ca(tmp_path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Not the ARC test CA")])
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "other-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_tls_verification_fails_with_a_wrong_ca(
    arc_ce: RealArc, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The environment points requests at the right CA: the configured one must still win.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", arc_ce.ca_file)
    monkeypatch.setenv("CURL_CA_BUNDLE", arc_ce.ca_file)
    wrong = make_ce(arc_ce, "wrongca", ca=str(_other_ca(tmp_path)))
    arc = ArcBackend(settings=make_settings(tmp_path, wrong), db=None, log=LOG)
    with pytest.raises(CEUnavailable) as error:
        arc.status(wrong, ["abc"])
    assert "TLS" in error.value.cause and "certificate verify failed" in error.value.cause
    # The system CAs do not know the test CA either.
    system = make_ce(arc_ce, "systemca", ca=None)
    with pytest.raises(CEUnavailable, match="certificate verify failed"):
        arc.status(system, ["abc"])
    # ... and the right CA file works.
    right = make_ce(arc_ce, "rightca", ca=arc_ce.ca_file)
    assert arc.status(right, ["nosuchjob0123"]) == {"nosuchjob0123": None}
    arc.close()


# ---------------------------------------------------------------- delegations ---
def _rows(db: Database) -> list[Any]:
    with db.read() as conn:
        return list(conn.execute(sa.select(delegations)).all())


def test_delegation_is_created_once_and_reused(arc_ce: RealArc, db: Database) -> None:
    client = arc_ce.client()
    store = Delegations(db, LOG)
    other_process = Delegations(db, LOG)
    first = store.get(client, "arc1", arc_ce.proxy)
    assert store.get(client, "arc1", arc_ce.proxy) == first
    assert other_process.get(client, "arc1", arc_ce.proxy) == first
    [row] = _rows(db)
    assert row.delegation_id == first and row.ce == "arc1" and row.credential == arc_ce.proxy
    assert first in client.delegations()
    # The delegated proxy lives as long as asked, never longer than the credential.
    credential_end = load_credential(arc_ce.proxy).not_after
    assert row.expires_at <= credential_end
    assert row.expires_at > utcnow() + timedelta(hours=23)
    client.delete_delegation(first)
    client.close()


def test_delegation_is_renewed_when_near_expiry(arc_ce: RealArc, db: Database) -> None:
    client = arc_ce.client()
    store = Delegations(db, LOG, lifetime=6 * 3600, renew_margin=3600)
    first = store.get(client, "arc1", arc_ce.proxy)
    [row] = _rows(db)
    # Pretend it is nearly over: the next use renews it at the CE, keeping its id.
    soon = utcnow() + timedelta(minutes=10)
    with db.transaction() as conn:
        conn.execute(delegations.update().values(expires_at=soon))
    assert store.get(client, "arc1", arc_ce.proxy) == first
    [renewed] = _rows(db)
    assert renewed.expires_at > utcnow() + timedelta(hours=5)
    assert renewed.updated_at > row.updated_at
    client.delete_delegation(first)
    client.close()


def test_a_delegation_is_not_renewed_beyond_its_credential(
    arc_ce: RealArc, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    client = arc_ce.client()
    store = Delegations(db, LOG, renew_margin=200 * 3600)  # always "near expiry"
    first = store.get(client, "arc1", arc_ce.proxy)
    [row] = _rows(db)
    assert row.expires_at == load_credential(arc_ce.proxy).not_after  # capped at the credential
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        assert store.get(client, "arc1", arc_ce.proxy) == first
        assert store.get(client, "arc1", arc_ce.proxy) == first
    [after] = _rows(db)
    assert after.updated_at == row.updated_at  # no pointless renewal
    assert sum("renew the credential" in r.getMessage() for r in caplog.records) == 1
    client.delete_delegation(first)
    client.close()


def test_delegation_is_recreated_when_the_ce_lost_it(arc_ce: RealArc, db: Database) -> None:
    client = arc_ce.client()
    store = Delegations(db, LOG, verify_interval=0.001)
    first = store.get(client, "arc1", arc_ce.proxy)
    client.delete_delegation(first)  # as if the CE lost its state
    time.sleep(0.01)
    second = store.get(client, "arc1", arc_ce.proxy)
    assert second != first
    assert [r.delegation_id for r in _rows(db)] == [second]
    assert second in client.delegations() and first not in client.delegations()
    # A renewal after the CE dropped the delegation ends with one the CE knows (A-REX 6.17
    # accepts the renewal of a deleted id; a 404 would make a new one).
    client.delete_delegation(second)
    with db.transaction() as conn:
        conn.execute(delegations.update().values(expires_at=utcnow() + timedelta(seconds=5)))
    third = store.get(client, "arc1", arc_ce.proxy)
    assert third in client.delegations()
    [row] = _rows(db)
    assert row.delegation_id == third and row.expires_at > utcnow() + timedelta(hours=1)
    client.delete_delegation(third)
    client.close()


def test_a_job_runs_with_the_delegated_proxy(
    arc_backend: ArcBackend, ce: CE, tmp_path: Path, sqlite_db: Database
) -> None:
    """The proxy act signed is what A-REX gives the job: RFC 3820, one more CN, accepted."""
    job = request(
        sh(
            'cp "$X509_USER_PROXY" proxy.pem; '
            "openssl x509 -in proxy.pem -noout -subject -nameopt compat > out.txt; "
            "openssl x509 -in proxy.pem -noout -ext proxyCertInfo >> out.txt; rm -f proxy.pem",
            outputfiles='("out.txt" "")',
        )
    )
    [submitted] = arc_backend.submit(ce, [job])
    assert submitted.ce_job_id
    [row] = _rows(sqlite_db)
    client = arc_backend.client(ce)
    job_delegation = client.action("delegations", [submitted.ce_job_id])[submitted.ce_job_id]
    assert job_delegation.raw.get("delegation_id") == row.delegation_id
    final = wait_terminal(arc_backend, ce, [submitted.ce_job_id])[submitted.ce_job_id]
    assert final.state is CEReportedState.FINISHED, final
    arc_backend.fetch(ce, submitted.ce_job_id, tmp_path / "o", failed=False)
    text = (tmp_path / "o" / "out.txt").read_text()
    user = load_credential(ce.settings.credential or "").cert.subject.rfc4514_string()
    assert text.count("CN=") == user.count("CN=") + 1, text  # our proxy's extra CN
    assert "Inherit all" in text or "1.3.6.1.5.5.7.21.1" in text, text
    arc_backend.clean(ce, [submitted.ce_job_id])


def test_submit_recreates_a_delegation_the_ce_lost(
    arc_backend: ArcBackend, ce: CE, sqlite_db: Database
) -> None:
    first = arc_backend.delegation(ce)
    arc_backend.client(ce).delete_delegation(first)
    arc_backend.delegations(ce).verify_interval = 0.001
    time.sleep(0.01)
    [submitted] = arc_backend.submit(ce, [request(sh("true"))])
    assert submitted.ce_job_id
    [row] = _rows(sqlite_db)
    assert row.delegation_id != first
    client = arc_backend.client(ce)
    used = client.action("delegations", [submitted.ce_job_id])[submitted.ce_job_id]
    assert used.raw.get("delegation_id") == row.delegation_id
    wait_terminal(arc_backend, ce, [submitted.ce_job_id])
    arc_backend.clean(ce, [submitted.ce_job_id])


def test_harness_status_reports_the_ce_up(arc_ce: RealArc) -> None:
    out = subprocess.run([str(HARNESS), "status"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "up at https://localhost:8443/arex" in out.stdout


def test_rest_version_is_discovered_or_configured(arc_ce: RealArc, tmp_path: Path) -> None:
    client = arc_ce.client()
    assert client.versions() == ["1.0"]  # ARC 6.17
    assert client.version == "1.0" and client.base == "/rest/1.0"
    client.close()
    # A version the CE does not speak, or a wrong URL, makes the CE unusable, not one job.
    newer = make_ce(arc_ce, "newer", options={"rest_version": "1.1"})
    wrong = make_ce(arc_ce, "wrong", url=arc_ce.url.replace("/arex", "/nothere"))
    arc = ArcBackend(settings=make_settings(tmp_path, newer, wrong), db=None, log=LOG)
    with pytest.raises(CEUnavailable, match="HTTP"):
        arc.status(newer, ["abc"])
    with pytest.raises(CEUnavailable, match="HTTP"):
        arc.status(wrong, ["abc"])
    arc.close()


ADL_JOB = """<?xml version="1.0" encoding="UTF-8"?>
<ActivityDescription xmlns="http://www.eu-emi.eu/es/2010/12/adl">
  <ActivityIdentification><Name>adl job</Name></ActivityIdentification>
  <Application>
    <Executable><Path>/bin/sh</Path><Argument>-c</Argument>
      <Argument>cat in.txt > out.txt; echo adl >> out.txt</Argument></Executable>
  </Application>
  <DataStaging>
    <InputFile><Name>in.txt</Name></InputFile>
    <OutputFile><Name>out.txt</Name></OutputFile>
  </DataStaging>
</ActivityDescription>"""


def test_adl_and_xrsl_in_one_batch(arc_backend: ArcBackend, ce: CE, tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "in.txt").write_text("uploaded\n")
    adl_job = request(ADL_JOB, input_dir=inputs)
    xrsl_job = request(sh("true"))
    results = arc_backend.submit(ce, [adl_job, xrsl_job])
    assert [r.job_id for r in results] == [adl_job.job_id, xrsl_job.job_id]
    ids = [r.ce_job_id for r in results]
    assert all(ids), results
    found_soon(arc_backend, ce, [adl_job.token], {adl_job.token: ids[0]})
    done = wait_terminal(arc_backend, ce, ids)  # type: ignore[arg-type]
    assert all(s.state is CEReportedState.FINISHED for s in done.values()), done
    arc_backend.fetch(ce, ids[0] or "", tmp_path / "out", failed=False)
    assert (tmp_path / "out" / "out.txt").read_text() == "uploaded\nadl\n"
    arc_backend.clean(ce, ids)  # type: ignore[arg-type]
