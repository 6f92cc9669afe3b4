"""The validator against the REAL XRootD storage element (tests/harness/xrootd-server): outputs
over root:// and davs:// (XrdHttp, TLS with the test CA), mismatches named per file, and storage
that goes down and comes back."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from act.atlas.validator import run_once
from act.common.db import Database
from act.common.schema import panda_jobs
from tests.support.pilot3 import Pilot3
from tests.support.pilot3_reports import ce_uploads, pilot3_leaves
from tests.support.validating import Job, context, make_settings
from tests.support.xrootd_real import PrivateXRootD, XRootDServer

pytestmark = pytest.mark.storage


def entry(se: XRootDServer, path: str, data: bytes, *, davs: bool = False) -> dict[str, object]:
    size, adler = se.write(path, data)
    url = se.davs(path) if davs else se.root(path)
    return {"surl": url, "fsize": size, "adler32": adler, "guid": str(uuid.uuid4())}


def test_outputs_over_root_and_davs_all_valid(
    db: Database, tmp_path: Path, xrootd_server: XRootDServer
) -> None:
    settings = make_settings(tmp_path, storage={"ca": str(xrootd_server.ca)})
    job = Job(db, tmp_path, 2001)
    base = f"atlas/v/{uuid.uuid4().hex}"
    outputs = {
        "AOD.root": entry(xrootd_server, f"{base}/AOD.root", b"a" * 70000),
        "HIST.root": entry(xrootd_server, f"{base}/HIST.root", b"h" * 10, davs=True),
        "2001.log.tgz": entry(xrootd_server, f"{base}/2001.log.tgz", b""),
    }
    job.heartbeat(outputs)
    run_once(context(db, settings))
    row = job.row()
    assert row.state == "finished", row.validation_note
    assert json.loads(job.report()["xml"]) == outputs


def test_mismatches_on_both_protocols_are_each_named(
    db: Database, tmp_path: Path, xrootd_server: XRootDServer
) -> None:
    settings = make_settings(tmp_path, storage={"ca": str(xrootd_server.ca)})
    job = Job(db, tmp_path, 2002)
    base = f"atlas/v/{uuid.uuid4().hex}"
    size_bad = entry(xrootd_server, f"{base}/A.root", b"1" * 100)
    xrootd_server.write(f"{base}/A.root", b"1" * 99)  # on storage: one byte short
    sum_bad = entry(xrootd_server, f"{base}/B.root", b"2" * 100, davs=True)
    xrootd_server.write(f"{base}/B.root", b"3" * 100)  # same size, other content
    missing = {**entry(xrootd_server, f"{base}/C.root", b"4")}
    xrootd_server.local(f"{base}/C.root").unlink()
    job.heartbeat({"A.root": size_bad, "B.root": sum_bad, "C.root": missing})
    run_once(context(db, settings, invalid_outputs="fail"))
    row = job.row()
    assert row.state == "failed" and row.error_code == 1137  # the first bad file: size
    diag = job.report()["pilotErrorDiag"]
    assert "3 of 3 output file(s) invalid" in diag
    for lfn in ("A.root", "B.root", "C.root"):
        assert lfn in diag
    assert "100" in diag and "99" in diag


def test_storage_down_then_back_defers_the_job_then_finishes_it(
    db: Database, tmp_path: Path, private_xrootd_server: PrivateXRootD
) -> None:
    se = private_xrootd_server.server
    settings = make_settings(tmp_path, storage={"timeout": 3})
    job = Job(db, tmp_path, 2003)
    job.heartbeat({"E.root": entry(se, "atlas/E.root", b"events")})
    private_xrootd_server.stop()
    ctx = context(db, settings, retry_after=30)
    run_once(ctx)
    row = job.row()
    assert row.state == "tovalidate" and row.validation_deferrals == 1
    assert "unreachable" in row.validation_note

    private_xrootd_server.start()
    db.run(
        lambda c: c.execute(
            sa.update(panda_jobs)
            .where(panda_jobs.c.id == job.panda_job_id)
            .values(validate_after=None)
        )
    )
    run_once(ctx)
    assert job.row().state == "finished"


def test_outputs_pilot3_reported_and_the_ce_uploaded_are_valid_on_real_xrootd(
    db: Database, tmp_path: Path, xrootd_server: XRootDServer, pilot3: Pilot3
) -> None:
    """The real pilot3's reports (tests/support/pilot3_reports.py) naming root:// TURLs; the CE's
    upload of output.list is a TEST DOUBLE writing into the server's export directory (the test
    SE takes no writes over root://), the checks are the real server's."""
    settings = make_settings(tmp_path, storage={"ca": str(xrootd_server.ca)})
    job = Job(db, tmp_path, 2004)
    base = f"atlas/v/{uuid.uuid4().hex}"
    outputs = {"EVNT.2004._000001.pool.root": 70_000, "HIST.2004._000001.root": 10}
    left = pilot3_leaves(pilot3, job.output_dir, 2004, se=xrootd_server.root(base), outputs=outputs)

    def to_xrootd(url: str, content: bytes) -> None:
        assert url.startswith(xrootd_server.root(base))
        xrootd_server.write(url.removeprefix(xrootd_server.root_url + "//"), content)

    assert sorted(ce_uploads(job.output_dir, to_xrootd)) == sorted([*outputs, "2004.log.tgz"])
    run_once(context(db, settings))
    row = job.row()
    assert row.state == "finished", row.validation_note
    assert json.loads(job.report()["xml"]) == left["fileinfo"]
    # a CE that did not upload one of the files output.list names: that file is missing
    other = Job(db, tmp_path, 2005)
    base = f"atlas/v/{uuid.uuid4().hex}"
    pilot3_leaves(pilot3, other.output_dir, 2005, se=xrootd_server.root(base), outputs=outputs)

    def all_but_the_log(url: str, content: bytes) -> None:
        if not url.endswith("2005.log.tgz"):
            to_xrootd(url, content)

    ce_uploads(other.output_dir, all_but_the_log)
    run_once(context(db, settings, invalid_outputs="fail"))
    failed = other.row()
    assert failed.state == "failed" and failed.error_code == 1165
    diag = other.report()["pilotErrorDiag"]
    assert "1 of 3 output file(s) invalid" in diag and "2005.log.tgz" in diag
