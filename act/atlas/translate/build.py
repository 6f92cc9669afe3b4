"""A PanDA job's CE job description, built from the job, its queue and the CE configuration.

:func:`build` is a pure function of a :class:`JobInput` (the job spec, its queue, its event
ranges), the queue's engine CEs (:func:`match_ces`) and act's configuration (``root``, the web
area, ``engine.ces``): it asks nothing of PanDA, reads and writes no database and writes no file.
The translator daemon (:mod:`act.atlas.translator`) and ``actctl translate`` (the dry run,
:mod:`act.ctl.translate`) both build with it; the daemon then makes the web area's day directory
and writes the shipped files (:mod:`act.atlas.input_files`), ``actctl translate --out`` writes
them elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from act.atlas import web_area
from act.atlas.config import AtlasConfig
from act.atlas.queues import Queue, QueueCE
from act.atlas.translate.common import JobInput, Translation
from act.atlas.translate.condor import to_condor
from act.atlas.translate.errors import TranslationError
from act.atlas.translate.local import to_local
from act.atlas.translate.xrsl import to_xrsl
from act.engine.settings import CESettings

#: (engine CE name, queue CE, engine CE): a queue CE that has an engine CE.
Matched = tuple[str, QueueCE, CESettings]


class QueueError(ValueError):
    """The job's queue cannot take it (no engine CE, a name unusable as a directory); the
    message names the field. A configuration problem, not the job's."""


def match_ces(queue: Queue, configured: Mapping[str, CESettings]) -> list[Matched]:
    """The queue's active CEs that have an engine CE: (engine name, queue CE, engine CE)."""
    found = []
    for qce in queue.active_ces():
        if qce.endpoint in configured:
            found.append((qce.endpoint, qce, configured[qce.endpoint]))
            continue
        for name, ce in sorted(configured.items()):
            if ce.url == qce.endpoint and (ce.queue or None) == (qce.ce_queue or None):
                found.append((name, qce, ce))
                break
    return found


def unconfigured_ces(queue: Queue, matched: list[Matched]) -> list[QueueCE]:
    """The queue's active CEs that ``matched`` (:func:`match_ces`) has no engine CE for."""
    return [qce for qce in queue.active_ces() if not any(m[1] is qce for m in matched)]


def no_engine_ce(queue: Queue) -> QueueError:
    """The error for a queue none of whose CEs is an engine CE."""
    return QueueError(f"queue.ces: none of queue {queue.name}'s CEs is configured in engine.ces")


def describe(
    job: JobInput, qce: QueueCE, ce: CESettings, *, input_dir: Path, web_dir: Path | None = None
) -> Translation:
    """The description for the engine CE's back end.

    ``web_dir``: the job's day directory in the web area (``<web root>/<date>/<queue>``), where
    HTCondor writes the pilot's stdout as ``<panda_id>.out`` (the GTAG file), its stderr as
    ``.err`` and the job's event log as ``.log``; without it they go to ``input_dir``.
    """
    if ce.backend == "local":
        return to_local(job, input_dir=input_dir)
    if ce.backend == "condor":
        return to_condor(job, qce, input_dir=input_dir, web_dir=web_dir)
    if ce.backend == "arc":
        return to_xrsl(job, qce, input_dir=input_dir)
    raise TranslationError(job.panda_id, "engine.ces.backend", f"{ce.backend}: no translator")


@dataclass(frozen=True)
class Described:
    """One job described for a queue's engine CEs, as the translator makes its CE job."""

    #: (engine CE name, engine CE, its translation), for every matched engine CE in order.
    translations: list[tuple[str, CESettings, Translation]]
    #: The CE job's back end and description: the one most of the engine CEs share ...
    backend: str
    description: str
    #: ... and those engine CEs, the CE job's candidates.
    candidates: list[str]
    #: The files shipped with the job (the same for every CE: from one plan).
    files: Mapping[str, bytes]


def describe_for(
    job: JobInput,
    matched: list[Matched],
    *,
    input_dir: Path,
    web_dir: Path | None = None,
) -> Described:
    """The description for each of ``matched`` (:func:`match_ces`), and the one the CE job gets:
    a CE job goes to every candidate CE whose description is identical (same back end, same
    text), the largest such group. Raises TranslationError (and ValueError without CEs)."""
    if not matched:
        raise ValueError("no engine CE to describe the job for")
    translations = []
    groups: dict[tuple[str, str], list[str]] = {}
    for name, qce, ce in matched:
        translation = describe(job, qce, ce, input_dir=input_dir, web_dir=web_dir)
        translations.append((name, ce, translation))
        groups.setdefault((ce.backend, translation.description), []).append(name)
    (backend, description), names = max(groups.items(), key=lambda item: len(item[1]))
    return Described(translations, backend, description, names, translations[0][2].files)


def input_dir_of(settings: AtlasConfig, panda_id: int) -> Path:
    """Where a job's shipped files go: ``<root>/jobs/<panda_id>/input``."""
    return Path(settings.root) / "jobs" / str(panda_id) / "input"


@dataclass(frozen=True)
class Built:
    """A job built for its queue's engine CEs, and the places its description names."""

    described: Described
    #: The directory the shipped files (``described.files``) are to be written to.
    input_dir: Path
    #: For HTCondor: the web area's day directory the job's logs go to (to be made), else None.
    web_dir: Path | None


def build(
    job: JobInput, matched: list[Matched], settings: AtlasConfig, *, created_at: datetime
) -> Built:
    """The job described for ``matched`` (:func:`match_ces` of its queue; ``created_at``: when
    act received it, which dates its web files). Raises :class:`QueueError` for a queue that
    cannot take it and TranslationError for a job that cannot be described."""
    if not matched:
        raise no_engine_ce(job.queue)
    web_dir: Path | None = None
    if any(ce.backend == "condor" for _, _, ce in matched):
        try:
            stem = web_area.relative_stem(
                log_url=job.log_url or None,
                queue=job.queue.name,
                panda_id=job.panda_id,
                created_at=created_at,
            )
        except ValueError as error:
            raise QueueError(f"queue: {error}") from None
        web_dir = web_area.day_path(settings, stem)
    input_dir = input_dir_of(settings, job.panda_id)
    described = describe_for(job, matched, input_dir=input_dir, web_dir=web_dir)
    return Built(described, input_dir, web_dir)
