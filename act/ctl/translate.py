"""``actctl translate SPEC``: what act would submit for one PanDA job, without submitting it.

An operator's dry run, on the translator daemon's own code: the spec is read as the fetcher
reads PanDA's replies (:func:`act.atlas.spool.parse_jobs`: the job object of /api/v1, its whole
``acquire_jobs`` reply, a legacy getJob reply URL-encoded or JSON), the queue's CEs are matched
to the engine CEs (:func:`act.atlas.translate.build.match_ces`) and the job described by the
translator's pure builder (:func:`act.atlas.translate.build.build`: one CE job goes to the CEs
that share the most common description); ``--out`` writes the shipped files
(:func:`act.atlas.input_files.write_files`). No database, no PanDA: event ranges, which the
translator fetches from PanDA for an event-service job, come from ``--event-ranges FILE`` or
are left out (and the output says so). CRIC comes from ``queues.cric_file``, else the
``cric_cache`` copy when there is one, else ``cric_url`` (fetched, the cache left alone).

The descriptions name the input directory the translator would use (``<root>/jobs/<panda_id>/
input``) and, for HTCondor, the day directory of the web area, exactly as act would submit them;
``--out DIR`` writes the shipped files into DIR instead of those places.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from act.atlas import events, spool
from act.atlas.fetcher import log_url
from act.atlas.input_files import write_files
from act.atlas.panda_id import spec_int
from act.atlas.queues import Queue, QueueConfigError, load_queues
from act.atlas.translate import JobInput, TranslationError
from act.atlas.translate.build import QueueError, build, match_ces, no_engine_ce
from act.atlas.translate.common import plan
from act.common import exitcodes
from act.common.timeutil import utcnow
from act.ctl import output
from act.ctl.options import json_flag
from act.service.settings import Settings


class DryRunError(Exception):
    """A spec, queue or CE that cannot be used: ``message`` and the exit ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(frozen=True)
class CEResult:
    name: str
    backend: str
    description: str
    #: Whether the CE job act makes has this CE among its candidates.
    used: bool


@dataclass
class DryRun:
    panda_id: int
    queue: str
    spec_format: str
    harvester: bool
    input_dir: Path
    ces: list[CEResult]
    files: dict[str, bytes]
    notes: list[str] = field(default_factory=list)

    def to_json(self, out: Path | None) -> dict[str, Any]:
        return {
            "panda_id": self.panda_id,
            "queue": self.queue,
            "spec_format": self.spec_format,
            "pilot_mode": "harvester" if self.harvester else "normal",
            "input_dir": str(self.input_dir),
            "ces": [
                {"name": c.name, "backend": c.backend, "used": c.used, "description": c.description}
                for c in self.ces
            ],
            "files": {name: len(data) for name, data in self.files.items()},
            "out": str(out) if out is not None else None,
            "notes": self.notes,
        }


def read_spec(text: str) -> spool.SpooledJob:
    """The one job of ``text``: an /api/v1 job object or ``acquire_jobs`` reply, or a legacy
    getJob reply (URL-encoded or JSON). DryRunError (usage) naming what is wrong."""
    stripped = text.strip()
    if not stripped:
        raise DryRunError("SPEC: empty", exitcodes.USAGE)
    api = "legacy"
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except ValueError as error:
            raise DryRunError(f"SPEC: not JSON ({error})", exitcodes.USAGE) from None
        if isinstance(document, dict) and isinstance(document.get("success"), bool):
            api = "new"  # the {success, message, data} envelope of /api/v1
    try:
        found = spool.parse_jobs(api, stripped)
    except ValueError as error:
        raise DryRunError(f"SPEC: {error}", exitcodes.USAGE) from None
    jobs = [job for job in found if isinstance(job, spool.SpooledJob)]
    refused = [reason for reason, _raw in (j for j in found if isinstance(j, tuple))]
    if refused:
        raise DryRunError(f"SPEC: PandaID: {refused[0]}", exitcodes.USAGE)
    if not jobs:
        raise DryRunError("SPEC: PandaID: no job in it (no PandaID field)", exitcodes.USAGE)
    if len(jobs) > 1:
        ids = ", ".join(str(job.panda_id) for job in jobs)
        raise DryRunError(f"SPEC: {len(jobs)} jobs ({ids}): give one", exitcodes.USAGE)
    return jobs[0]


def served(settings: Settings, notes: list[str]) -> dict[str, Queue]:
    """The served queues, read without writing anything (see the module docstring)."""
    queues = settings.queues
    if queues.cric_url and queues.cric_cache and Path(queues.cric_cache).is_file():
        queues = queues.model_copy(update={"cric_url": None, "cric_file": queues.cric_cache})
        notes.append(f"CRIC: the cached copy {queues.cric_file} (not fetched)")
    elif queues.cric_url:
        queues = queues.model_copy(update={"cric_cache": None})
        notes.append(f"CRIC: fetched from {queues.cric_url}")
    try:
        return load_queues(queues, warnings=notes)
    except QueueConfigError as error:
        raise DryRunError(f"queues: {error}", exitcodes.CONFIG) from None
    except OSError as error:
        raise DryRunError(f"queues: cannot read CRIC: {error}", exitcodes.CONFIG) from None


def _queue(queues: dict[str, Queue], wanted: str | None, spec: dict[str, Any]) -> Queue:
    names = ", ".join(sorted(queues)) or "none"
    if wanted is not None:
        if wanted not in queues:
            raise DryRunError(
                f"queue {wanted} is not served (queues.serve: {names})", exitcodes.NOT_FOUND
            )
        return queues[wanted]
    site = spec.get("computingSite")
    if isinstance(site, str) and site in queues:
        return queues[site]
    if len(queues) == 1:
        return next(iter(queues.values()))
    raise DryRunError(
        f"--queue: the spec names no served queue; give one of: {names}", exitcodes.USAGE
    )


def dry_run(
    settings: Settings,
    text: str,
    *,
    queue: str | None = None,
    ce: str | None = None,
    event_ranges: str | None = None,
) -> DryRun:
    """What the translator would make of the job in ``text`` (see the module docstring)."""
    job = read_spec(text)
    notes: list[str] = []
    target = _queue(served(settings, notes), queue, job.spec)
    matched = match_ces(target, settings.engine.ces)
    if not matched:
        raise DryRunError(str(no_engine_ce(target)), exitcodes.CONFIG)
    if ce is not None:
        chosen = [m for m in matched if m[0] == ce]
        if not chosen:
            names = ", ".join(m[0] for m in matched)
            raise DryRunError(
                f"CE {ce} is not an engine CE of queue {target.name} ({names})",
                exitcodes.NOT_FOUND,
            )
    ranges = _event_ranges(job, event_ranges, notes)
    now = utcnow()
    url = log_url(target, job.panda_id, now)
    job_input = JobInput(
        panda_id=job.panda_id,
        spec=job.spec,
        spec_text=job.raw,
        spec_format=job.spec_format,
        queue=target,
        attempt=spec_int(job.spec.get("attemptNr")) or 0,
        log_url=url or "",
        event_ranges=ranges,
    )
    try:
        built = build(job_input, matched, settings, created_at=now)
    except QueueError as error:
        raise DryRunError(str(error), exitcodes.CONFIG) from None
    except TranslationError as error:
        raise DryRunError(f"cannot be translated: {error}", exitcodes.USAGE) from None
    described = built.described
    results = [
        CEResult(name, engine.backend, t.description, name in described.candidates)
        for name, engine, t in described.translations
        if ce is None or name == ce
    ]
    return DryRun(
        panda_id=job.panda_id,
        queue=target.name,
        spec_format=job.spec_format,
        harvester=plan(job_input).harvester,
        input_dir=built.input_dir,
        ces=results,
        files=dict(described.files),
        notes=notes,
    )


def _event_ranges(
    job: spool.SpooledJob, path: str | None, notes: list[str]
) -> list[dict[str, Any]] | None:
    if path is None:
        if events.is_event_service(job.spec):
            notes.append(
                "event service: act fetches event ranges from PanDA before translating; none "
                "here (give --event-ranges FILE), so no eventranges.json"
            )
        return None
    try:
        state = events.load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise DryRunError(f"--event-ranges: {error}", exitcodes.USAGE) from None
    except ValueError as error:
        raise DryRunError(f"--event-ranges: {path}: {error}", exitcodes.USAGE) from None
    if state is None or not state.ranges:
        raise DryRunError(f"--event-ranges: {path}: no event ranges", exitcodes.USAGE)
    if not events.is_event_service(job.spec):
        notes.append("--event-ranges given for a job that is not event service (eventService)")
    return state.ranges


def text(result: DryRun, out: Path | None) -> str:
    mode = (
        "Harvester mode ({PandaID: job} JSON)"
        if result.harvester
        else "normal mode (the legacy getJob key=value form)"
    )
    api = "an /api/v1 JSON job" if result.spec_format == "json" else "a legacy getJob reply"
    lines = [
        f"PanDA job {result.panda_id}, {api}, for queue {result.queue}; pilot3 reads "
        f"pandaJobData.out in {mode}",
    ]
    for ce in result.ces:
        role = "the CE job's candidate" if ce.used else "not used: another description wins"
        lines += ["", f"--- CE {ce.name} ({ce.backend}; {role}) ---", ce.description.rstrip()]
    if out is not None:
        where = f"written to {out}"
    else:
        where = f"give --out DIR to write them; act writes them to {result.input_dir}"
    lines += ["", f"files shipped with the job ({where}):"]
    lines += [f"  {name}  ({len(data)} bytes)" for name, data in result.files.items()]
    lines += [f"note: {note}" for note in result.notes]
    return "\n".join(lines)


def register(cli: click.Group, pass_app: Callable[..., Any], failure: type[Exception]) -> None:
    """Add ``translate`` to actctl's top-level group."""

    @cli.command("translate")
    @click.argument("spec", type=click.File("r", encoding="utf-8"))
    @click.option(
        "--queue", metavar="Q", help="The served queue (default: the only one, or computingSite)."
    )
    @click.option(
        "--ce", metavar="CE", help="Only this engine CE (default: every engine CE of the queue)."
    )
    @click.option(
        "--out",
        type=click.Path(file_okay=False, path_type=Path),
        help="Write the files act would ship with the job into this directory.",
    )
    @click.option(
        "--event-ranges",
        "event_ranges",
        type=click.Path(dir_okay=False),
        help="Event ranges (a JSON list, as PanDA gives them) to ship with an event-service job.",
    )
    @json_flag("text")
    @pass_app
    def translate_command(
        app: Any,
        spec: Any,
        *,
        queue: str | None,
        ce: str | None,
        out: Path | None,
        event_ranges: str | None,
        as_json: bool,
    ) -> None:
        """What act would submit for one PanDA job spec (SPEC: a file, or - for stdin).

        SPEC is a job as PanDA's /api/v1 gives it (the job object, or the whole acquire_jobs
        reply) or a legacy getJob reply (URL-encoded or JSON). Prints the CE description(s) the
        translator would make for the queue's engine CEs and, with --out, writes the files it
        would ship (pandaJobData.out, queuedata.json, eventranges.json) into DIR. Uses no
        database and no PanDA server. Exit 2 when the spec cannot be read or translated (the
        message names the field), 6 for an unknown queue or CE, 3 for a configuration problem.
        """
        try:
            result = dry_run(
                app.settings(), spec.read(), queue=queue, ce=ce, event_ranges=event_ranges
            )
        except DryRunError as error:
            raise failure(error.message, error.code) from None
        except UnicodeDecodeError as error:
            raise failure(f"SPEC: not UTF-8 text ({error})", exitcodes.USAGE) from None
        if out is not None:
            try:
                write_files(out, result.files)
            except OSError as error:
                raise failure(f"--out {out}: {error}", exitcodes.USAGE) from None
        if as_json:
            click.echo(output.to_json(result.to_json(out)))
        else:
            click.echo(text(result, out))
