"""The outputs act's xRSL asks the REAL ARC CE (A-REX, tests/harness/arc-ce) to keep for a native
job come back where the validator looks for them: pilot3's jobReport.json in its job directory
``PanDA_Pilot-<PandaID>/``, output.list (kept although ``@output.list`` also names it as the list
to upload), heartbeat.json and the log; a listed file the pilot did not write (the top-level
jobReport.json of older pilots) does not fail the job."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from act.arc.backend import ArcBackend
from act.atlas.translate.xrsl import kept_outputs, quote
from act.common.db import Database
from act.engine.backend import CE, CEReportedState, SubmitRequest
from tests.support.arc_real import RealArc, arc_ce
from tests.test_arc_real import LOG, make_ce, make_settings, sh, wait_terminal

__all__ = ["arc_ce"]  # the session fixture, imported for pytest
pytestmark = pytest.mark.arc
PANDA_ID = 4242


@pytest.fixture
def ce(arc_ce: RealArc) -> CE:
    return make_ce(arc_ce)


@pytest.fixture
def arc_backend(tmp_path: Path, ce: CE, sqlite_db: Database) -> Iterator[ArcBackend]:
    arc = ArcBackend(settings=make_settings(tmp_path, ce), db=sqlite_db, log=LOG)
    yield arc
    arc.close()


def test_the_pilots_reports_come_back_from_a_real_arc_ce(
    arc_backend: ArcBackend, ce: CE, tmp_path: Path
) -> None:
    outputs = kept_outputs(
        PANDA_ID, f"{PANDA_ID}.log.tgz", f"{PANDA_ID}.log", native=True, event_service=False
    )
    names = [name for name, _ in outputs]
    assert names == [
        f"{PANDA_ID}.log",
        "heartbeat.json",
        f"{PANDA_ID}.log.tgz",
        "output.list",
        f"PanDA_Pilot-{PANDA_ID}/jobReport.json",
        "jobReport.json",
        "@output.list",
    ]
    relation = " ".join(f"({quote(name)} {quote(target)})" for name, target in outputs)
    # what pilot3 leaves in its launch directory (no output to upload: an empty output.list)
    script = (
        f"mkdir PanDA_Pilot-{PANDA_ID} && "
        f"echo '{{\"exitCode\": 0}}' > PanDA_Pilot-{PANDA_ID}/jobReport.json && "
        f'echo \'{{"state": "finished"}}\' > heartbeat.json && '
        f"echo log > {PANDA_ID}.log.tgz && : > output.list && "
        f"echo scratch > PanDA_Pilot-{PANDA_ID}/payload.stdout"
    )
    job = SubmitRequest(
        job_id=secrets.randbelow(1 << 30),
        token=secrets.token_hex(8),
        description=sh(script, outputfiles=relation, stdout=f'"{PANDA_ID}.log"', join='"yes"'),
        input_dir=None,
        panda_id=PANDA_ID,
    )
    [submitted] = arc_backend.submit(ce, [job])
    assert submitted.error is None and submitted.ce_job_id, submitted
    job_id = submitted.ce_job_id
    final = wait_terminal(arc_backend, ce, [job_id])[job_id]
    assert final.state is CEReportedState.FINISHED, final  # the missing jobReport.json is no error
    fetched = arc_backend.fetch(ce, job_id, tmp_path / "out", failed=False)
    assert fetched.error is None, fetched
    assert sorted(fetched.files) == sorted(
        [
            f"{PANDA_ID}.log",  # the pilot's stdout: kept only because outputfiles names it
            "heartbeat.json",
            f"{PANDA_ID}.log.tgz",
            "output.list",
            f"PanDA_Pilot-{PANDA_ID}/jobReport.json",
        ]
    )  # and nothing else of the job directory
    report = tmp_path / "out" / f"PanDA_Pilot-{PANDA_ID}" / "jobReport.json"
    assert report.read_text() == '{"exitCode": 0}\n'
    arc_backend.clean(ce, [job_id])
