"""Unit tests (no CE) of the ARC REST quirks, on reply shapes recorded from A-REX 6.17.

The replies below were copied from the real test CE (tests/harness/arc-ce); the CSR in
tests/data/arc is one the CE handed out for a delegation.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from act.arc import adl, xrsl
from act.arc.backend import ArcBackend
from act.arc.download import FetchError, _open_below, _safe_relative
from act.arc.jobstate import job_status
from act.arc.proxy import (
    PROXY_CERT_INFO,
    Credential,
    ProxyError,
    load_credential,
    parse_csr,
    sign_request,
)
from act.arc.rest import _path, as_list, job_result, parse_jobs
from act.common.timeutil import utcnow
from act.engine.backend import CE, CEReportedState, CEUnavailable
from act.engine.settings import CESettings, EngineSettings
from act.service.settings import Settings

DATA = Path(__file__).parent / "data" / "arc"
CSR = (DATA / "delegation-csr-arc-6.17.pem").read_bytes()

# POST /jobs?action=new with one description: an object, "status-code" a string.
ONE_CREATED = {
    "job": {
        "status-code": "201",
        "reason": "Created",
        "id": "SHzNDmcPQpAoOSAtDmABFKDmABFKDmABFKDmbiKKDmABFKDmVO6sUn",
        "state": "ACCEPTING",
    }
}
# One description A-REX cannot accept: HTTP 201 around a per-job 500.
ONE_REFUSED = {
    "job": {
        "status-code": "500",
        "reason": "nordugrid:xrsl parsing error:\nValue of 'count' attribute must be an integer",
    }
}
# Bulk status: a list; an unknown job is a per-job 404 with state "None".
BULK_STATUS = {
    "job": [
        {"status-code": "200", "reason": "OK", "id": "a1", "state": "FINISHED"},
        {"status-code": "404", "reason": "Job not found", "id": "b2", "state": "None"},
    ]
}
FAILED_INFO: dict[str, Any] = {
    "status-code": "200",
    "reason": "OK",
    "id": "TS1NDmcP",
    "info_document": {
        "ComputingActivity": {
            "Name": "x2 act:0123abcd",
            "State": [
                "nordugrid:FAILED::INLRMS",
                "file:inlrms",
                "bes:Failed",
                "arcrest:FAILED",
                "emies:terminal",
                "emiesattr:processing-failure",
            ],
            "RestartState": [
                "nordugrid:INLRMS",
                "file:inlrms",
                "bes:Running",
                "arcrest:OTHER",
                "emies:processing-running",
                "emiesattr:app-running",
            ],
            "ExitCode": "3",
            "Error": "LRMS error: (3) Job finished with wrong exit code - 3 != 0",
            "ExecutionNode": "vm",
            "UsedTotalWallTime": "2",
            "UsedTotalCPUTime": "1",
            "UsedMainMemory": "3",
            "StartTime": "2026-11-22T17:20:05Z",
            "ComputingManagerEndTime": "2026-11-22T17:20:06Z",
        }
    },
}


def test_one_element_lists_come_as_objects_and_empty_ones_as_nothing() -> None:
    assert as_list({"id": "x"}) == [{"id": "x"}]
    assert as_list([{"id": "x"}, {"id": "y"}]) == [{"id": "x"}, {"id": "y"}]
    assert as_list(None) == [] and as_list("") == []
    assert [r.id for r in parse_jobs(ONE_CREATED)] == [ONE_CREATED["job"]["id"]]
    assert [r.id for r in parse_jobs(BULK_STATUS)] == ["a1", "b2"]
    assert parse_jobs(None) == [] and parse_jobs("") == []


def test_per_job_status_codes_inside_a_201_reply() -> None:
    [created] = parse_jobs(ONE_CREATED)
    assert created.code == 201 and created.ok and created.state == "ACCEPTING"
    [refused] = parse_jobs(ONE_REFUSED)
    assert refused.code == 500 and not refused.ok and refused.id == ""
    assert "must be an integer" in refused.reason
    found, missing = parse_jobs(BULK_STATUS)
    assert found.ok and found.state == "FINISHED"
    assert missing.gone and missing.state is None  # "None" is no state
    with pytest.raises(ValueError):
        parse_jobs({"job": ["not an object"]})
    assert job_result({"status-code": "junk", "id": "z"}).code == 0


def test_a_failed_jobs_info_maps_to_failed_with_the_ces_error() -> None:
    status = job_status(job_result(FAILED_INFO))
    assert status.state is CEReportedState.FAILED and status.raw_state == "FAILED"
    assert status.exit_code == 3
    assert status.errors == ("LRMS error: (3) Job finished with wrong exit code - 3 != 0",)
    assert status.worker_node == "vm"
    assert (status.cpu_seconds, status.wall_seconds, status.max_rss_kb) == (1, 2, 3 * 1024)
    assert status.started_at is not None and status.ended_at is not None
    assert not status.restartable  # it failed in the LRMS, not while staging
    assert xrsl.token_of(FAILED_INFO["info_document"]["ComputingActivity"]["Name"]) == "0123abcd"


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("ACCEPTING", CEReportedState.SUBMITTED),
        ("ACCEPTED", CEReportedState.SUBMITTED),
        ("PREPARING", CEReportedState.SUBMITTED),
        ("SUBMITTING", CEReportedState.SUBMITTED),
        ("QUEUING", CEReportedState.SUBMITTED),
        ("RUNNING", CEReportedState.RUNNING),
        ("EXITINGLRMS", CEReportedState.RUNNING),
        ("FINISHING", CEReportedState.FINISHING),
        ("FINISHED", CEReportedState.FINISHED),
        ("FAILED", CEReportedState.FAILED),
        ("KILLED", CEReportedState.CANCELLED),
    ],
)
def test_rest_states_map_onto_engine_states(raw: str, state: CEReportedState) -> None:
    reply = job_result({"status-code": "200", "id": "j", "state": raw})
    assert job_status(reply).state is state


def test_finished_with_a_nonzero_exit_code_is_failed_and_wiped_is_unknown() -> None:
    info = {"ComputingActivity": {"State": ["arcrest:FINISHED"], "ExitCode": "1"}}
    reply = job_result({"status-code": "200", "id": "j", "info_document": info})
    assert job_status(reply).state is CEReportedState.FAILED
    with pytest.raises(ValueError, match="gone"):
        job_status(job_result({"status-code": "200", "id": "j", "state": "WIPED"}))
    with pytest.raises(ValueError, match="unknown ARC state"):
        job_status(job_result({"status-code": "200", "id": "j", "state": "SPINNING"}))


def test_staging_failures_are_restartable() -> None:
    info = {
        "ComputingActivity": {
            "State": ["arcrest:FAILED"],
            "RestartState": ["nordugrid:PREPARING", "arcrest:PREPARING"],
        }
    }
    status = job_status(job_result({"status-code": "200", "id": "j", "info_document": info}))
    assert status.state is CEReportedState.FAILED and status.restartable


# ------------------------------------------------------------------------- xRSL ---
def test_prepare_puts_the_token_in_the_name_and_replaces_queue_and_delegation() -> None:
    text = (
        '&(executable="run.sh")(jobName="pilot ""x""")(queue=old)(DelegationID="d0")'
        '(inputfiles=("run.sh" "")("spec.json" "/in/spec.json")("data" "rucio://x/y"))'
    )
    ready = xrsl.prepare(text, token="tok-1", queue="fork", delegation_id="d1")
    names = [r.name for r in xrsl.relations(ready.description)]
    assert names.count("jobname") == 1 and names.count("queue") == 1
    assert names.count("delegationid") == 1
    assert ready.name == 'pilot "x" act:tok-1'
    assert xrsl.token_of(ready.name) == "tok-1"
    assert '(queue="fork")' in ready.description and '(delegationid="d1")' in ready.description
    assert ready.uploads == (("run.sh", ""), ("spec.json", "/in/spec.json"))
    # Local sources go to the CE empty (the client uploads them); URLs stay.
    assert '("spec.json" "")' in ready.description
    assert '("data" "rucio://x/y")' in ready.description
    assert xrsl.prepare("&(executable=x)", token="t").name == "act:t"


@pytest.mark.parametrize(
    "bad",
    [
        '&(executable="/bin/true"',
        '(executable="x")',
        '&(executable="x)',
        "&",
        '&(inputfiles=("../../etc/passwd" ""))',
    ],
)
def test_prepare_refuses_what_does_not_parse(bad: str) -> None:
    with pytest.raises(xrsl.XrslError):
        xrsl.prepare(bad, token="t")


def test_prepare_refuses_an_unsafe_token() -> None:
    with pytest.raises(xrsl.XrslError):
        xrsl.prepare("&(executable=x)", token='a")(executable="evil')


# ------------------------------------------------------------------- delegation ---
def test_the_version_2_csr_of_arc_6_17_is_read_without_cryptographys_loader() -> None:
    with pytest.raises(x509.InvalidVersion):  # what cryptography >= 38 says about this CSR
        x509.load_pem_x509_csr(CSR)
    request = parse_csr(CSR)
    assert request.version == 2
    assert isinstance(request.public_key, rsa.RSAPublicKey)


def test_a_tampered_csr_is_refused() -> None:
    lines = CSR.decode().splitlines()
    body = list(lines[2])
    body[10] = "A" if body[10] != "A" else "B"  # a byte of the public key
    lines[2] = "".join(body)
    with pytest.raises(ProxyError):
        parse_csr("\n".join(lines).encode())
    with pytest.raises(ProxyError):
        parse_csr(b"not a csr")


def _credential(tmp_path: Path, hours: float) -> Credential:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test"),
            x509.NameAttribute(NameOID.COMMON_NAME, "user"),
        ]
    )
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(hours=hours))
        .sign(key, hashes.SHA256())
    )
    path = tmp_path / "proxy.pem"
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return load_credential(str(path))


def test_the_signed_proxy_is_rfc3820_and_never_outlives_the_credential(tmp_path: Path) -> None:
    credential = _credential(tmp_path, hours=2)
    pem, expires = sign_request(CSR, credential, timedelta(days=4))
    chain = x509.load_pem_x509_certificates(pem)
    proxy = chain[0]
    assert chain[1] == credential.cert
    assert proxy.issuer == credential.cert.subject
    assert proxy.subject.rdns[:-1] == credential.cert.subject.rdns
    assert proxy.subject.rdns[-1].rfc4514_string() == f"CN={proxy.serial_number}"
    assert proxy.extensions.get_extension_for_oid(PROXY_CERT_INFO).critical
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert proxy.public_key().public_bytes(*spki) == parse_csr(CSR).public_key.public_bytes(*spki)
    assert expires == credential.not_after
    issuer_key = credential.cert.public_key()
    assert isinstance(issuer_key, rsa.RSAPublicKey)  # the test credential's key
    assert proxy.signature_hash_algorithm is not None
    issuer_key.verify(
        proxy.signature,
        proxy.tbs_certificate_bytes,
        padding.PKCS1v15(),
        proxy.signature_hash_algorithm,
    )


# ------------------------------------------------------------- local safety ---
@pytest.mark.parametrize("name", ["/etc/passwd", "../x", "a/../../x", "", ".", "a\\b"])
def test_unsafe_file_names_from_the_ce_are_refused(name: str) -> None:
    with pytest.raises(FetchError):
        _safe_relative(name)


def test_fetch_never_writes_through_a_symlink(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (dest / "sub").symlink_to(outside)
    (dest / "link.txt").symlink_to(outside / "target.txt")
    with pytest.raises(FetchError, match="not a plain directory"):
        _open_below(dest, PurePosixPath("sub/file.txt"))
    with pytest.raises(FetchError, match="symlink"):
        _open_below(dest, PurePosixPath("link.txt"))
    assert list(outside.iterdir()) == []
    fd = _open_below(dest, PurePosixPath("new/dir/ok.txt"))
    os.close(fd)
    assert (dest / "new" / "dir" / "ok.txt").is_file()


def test_path_segments_are_encoded_and_traversal_refused() -> None:
    assert _path("a b/c%d?e#f") == "a%20b/c%25d%3Fe%23f"
    for bad in ("..", ".", "a/../b"):
        with pytest.raises(ValueError):
            _path(bad)


def _ce(tmp_path: Path, **options: Any) -> tuple[ArcBackend, CE]:
    cred = tmp_path / "cred.pem"
    cred.write_text("x")
    cred.chmod(0o644)
    ce = CE(
        "c1",
        CESettings(backend="arc", url="https://localhost:1/arex", credential=str(cred)),
    )
    ce = CE("c1", ce.settings.model_copy(update={"options": options}))
    settings = Settings(root=str(tmp_path), engine=EngineSettings(ces={"c1": ce.settings}))
    return ArcBackend(settings=settings, db=None, log=logging.getLogger("t")), ce


def test_a_bad_option_is_an_error_naming_the_key(tmp_path: Path) -> None:
    arc, ce = _ce(tmp_path, submit_batchh=5)
    with pytest.raises(ValueError, match=r"engine\.ces\.c1\.options: submit_batchh"):
        arc.limits(ce)
    arc, ce = _ce(tmp_path, submit_batch=10, can_restart=False)
    assert arc.limits(ce).submit_batch == 10 and not arc.limits(ce).can_restart


def test_a_credential_others_can_read_is_refused(tmp_path: Path) -> None:
    arc, ce = _ce(tmp_path)
    with pytest.raises(CEUnavailable, match="readable by group/others"):
        arc.status(ce, ["x"])


def test_adl_prepare_sets_name_queue_delegation_and_lists_uploads() -> None:
    text = (
        '<?xml version="1.0"?><ActivityDescription xmlns="http://www.eu-emi.eu/es/2010/12/adl">'
        "<ActivityIdentification><Name>pilot</Name></ActivityIdentification>"
        "<Application><Executable><Path>run.sh</Path></Executable></Application>"
        "<Resources><QueueName>old</QueueName></Resources><DataStaging>"
        "<InputFile><Name>run.sh</Name></InputFile>"
        "<InputFile><Name>spec.json</Name><Source><URI>/in/spec.json</URI></Source></InputFile>"
        "<InputFile><Name>data</Name><Source><URI>https://x/y</URI></Source></InputFile>"
        "<OutputFile><Name>o</Name><Target><URI>https://x/o</URI></Target></OutputFile>"
        "</DataStaging></ActivityDescription>"
    )
    ready = adl.prepare(text, token="tok", queue="fork", delegation_id="d1")
    assert ready.name == "pilot act:tok"
    assert ready.uploads == (("run.sh", ""), ("spec.json", "/in/spec.json"))
    assert "<QueueName>fork</QueueName>" in ready.description
    assert "old" not in ready.description and "/in/spec.json" not in ready.description
    assert ready.description.count("<DelegationID>d1</DelegationID>") == 2  # data and o
    for bad in ("<x/>", "<ActivityDescription", '<!DOCTYPE x [<!ENTITY a "b">]><x/>'):
        with pytest.raises(adl.AdlError):
            adl.prepare(bad, token="t")
