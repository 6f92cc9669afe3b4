"""Helpers for the HTCondor back end's tests: a back end on a FakeSchedd (the test double; no
HTCondor daemons can run here) or on the real schedd named by ``ACT_TEST_SCHEDD``, and the
submit descriptions the translator makes for both CE flavours."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from act.atlas.queues import QueueCE
from act.atlas.translate import TranslationError, to_condor
from act.condor import schedd as schedd_access
from act.condor.backend import CondorBackend
from act.condor.fake_schedd import FakeSchedd
from act.condor.options import CondorOptions
from act.condor.schedd import ScheddLike, open_schedd
from act.engine.backend import CE
from act.engine.settings import CESettings
from act.service.settings import Settings
from tests.support.translate_cases import ARC_CE, CONDOR_CE, cases

#: ``ACT_TEST_SCHEDD``: "local" for the local schedd, else a schedd name located through the
#: collector ``ACT_TEST_COLLECTOR`` (or the configured one).
ENV = "ACT_TEST_SCHEDD"
WEB = Path("/var/www/act/jobs/2026-11-22/ANALY_EXAMPLE")
ARC_VIA_CONDOR = QueueCE(
    flavour="arc", endpoint="arc.example.org", ce_queue="mcore", state="ACTIVE"
)
FLAVOURS = {"condor": CONDOR_CE, "arc": ARC_VIA_CONDOR, "arc-url": ARC_CE}


def real_options() -> dict[str, Any]:
    name = os.environ.get(ENV, "")
    if name in ("", "local"):
        return {}
    return {"schedd": name, "collector": os.environ.get("ACT_TEST_COLLECTOR") or None}


def settings(tmp_path: Path, **engine: Any) -> Settings:
    return Settings.model_validate({"root": str(tmp_path / "root"), "engine": engine})


def make_ce(name: str = "condor1", **options: Any) -> CE:
    return CE(name, CESettings(backend="condor", url="ce01.example.org:9619", options=options))


@dataclass
class Bench:
    """A back end, its CE, and the fake schedd behind it (None on a real schedd)."""

    backend: CondorBackend
    ce: CE
    fake: FakeSchedd | None
    tmp_path: Path


def install_fake(
    monkeypatch: pytest.MonkeyPatch,
    fake: FakeSchedd | None = None,
    others: dict[str, FakeSchedd] | None = None,
) -> FakeSchedd:
    """Make every CondorBackend of this test use ``fake`` as its schedd, or ``others[name]`` for
    a CE whose ``options.schedd`` is ``name``."""
    fake = fake or FakeSchedd()
    named = others or {}

    def opener(options: CondorOptions) -> ScheddLike:
        return named.get(options.schedd or "", fake)

    monkeypatch.setattr(schedd_access, "open_schedd", opener)
    return fake


def bench(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **options: Any) -> Bench:
    if kind == "real":
        if not os.environ.get(ENV):
            pytest.skip(f"{ENV} is not set: no real schedd to test against")
        options = {**real_options(), **options}
        open_schedd(CondorOptions.model_validate(options))  # fails loudly if unreachable
        fake = None
    else:
        fake = install_fake(monkeypatch)
    backend = CondorBackend(
        settings=settings(tmp_path), db=None, log=logging.getLogger("act.test.condor")
    )
    return Bench(backend, make_ce(**options), fake, tmp_path)


def descriptions(flavour: str = "condor") -> list[tuple[int, str]]:
    """(panda_id, description) of every translation case the condor translator accepts."""
    out: list[tuple[int, str]] = []
    for case in cases():
        job = case.job
        try:
            translation = to_condor(
                job,
                FLAVOURS[flavour],
                input_dir=Path(f"/var/lib/act/inputs/{job.panda_id}"),
                web_dir=WEB,
            )
        except TranslationError:
            continue
        out.append((job.panda_id, translation.description))
    assert out, "no translation case is truepilot"
    return out


def sh(panda_id: int, web: Path, command: str = "true", resource: str | None = None) -> str:
    """A small grid-universe description with its logs in ``web`` (made here); on a real schedd
    the CE does not exist, so the job stays idle."""
    grid = resource or "condor ce.invalid ce.invalid:9619"
    web.mkdir(parents=True, exist_ok=True)
    return (
        f"universe = grid\ngrid_resource = {grid}\nexecutable = /bin/sh\n"
        f"arguments = \"-c '{command}'\"\ntransfer_executable = false\n"
        f"output = {web}/{panda_id}.out\nerror = {web}/{panda_id}.err\nlog = {web}/{panda_id}.log\n"
        f"+PandaID = {panda_id}\nqueue 1\n"
    )
