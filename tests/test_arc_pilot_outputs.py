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
PANDAID = 4242


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
        PANDAID, f"{PANDAID}.log.tgz", f"{PANDAID}.log", native=True, event_service=False
    )
    names = [name for name, _ in outputs]
    assert names == [
        f"{PANDAID}.log",
        "heartbeat.json",
        f"{PANDAID}.log.tgz",
        "output.list",
        f"PanDA_Pilot-{PANDAID}/jobReport.json",
        "jobReport.json",
        "@output.list",
    ]
    relation = " ".join(f"({quote(name)} {quote(target)})" for name, target in outputs)
    # what pilot3 leaves in its launch directory (no output to upload: an empty output.list)
    script = (
        f"mkdir PanDA_Pilot-{PANDAID} && "
        f"echo '{{\"exitCode\": 0}}' > PanDA_Pilot-{PANDAID}/jobReport.json && "
        f'echo \'{{"state": "finished"}}\' > heartbeat.json && '
        f"echo log > {PANDAID}.log.tgz && : > output.list && "
        f"echo scratch > PanDA_Pilot-{PANDAID}/payload.stdout"
    )
    job = SubmitRequest(
        job_id=secrets.randbelow(1 << 30),
        token=secrets.token_hex(8),
        description=sh(script, outputfiles=relation, stdout=f'"{PANDAID}.log"', join='"yes"'),
        input_dir=None,
        pandaid=PANDAID,
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
            f"{PANDAID}.log",  # the pilot's stdout: kept only because outputfiles names it
            "heartbeat.json",
            f"{PANDAID}.log.tgz",
            "output.list",
            f"PanDA_Pilot-{PANDAID}/jobReport.json",
        ]
    )  # and nothing else of the job directory
    report = tmp_path / "out" / f"PanDA_Pilot-{PANDAID}" / "jobReport.json"
    assert report.read_text() == '{"exitCode": 0}\n'
    arc_backend.clean(ce, [job_id])
