"""The PanDA reply spool: ``acquire_jobs`` replies on disk until their jobs are committed.

A reply is written as one JSON file (``<root>/spool/panda/<time>-<queue>-<random>.json``:
``{"queue", "api", "prod_source_label", "reply"}``, the reply text verbatim) with write + fsync +
rename + fsync of the directory, so that a file either is complete or does not exist (a writer
killed before its rename leaves a temporary that :func:`recover` finishes or puts aside). Reading
it back (:func:`read_reply`) is tolerant: a job without a valid PandaID is put aside in
``rejected/`` with the reason, the others are returned; a reply that cannot be read at all is
put aside whole. Nothing PanDA handed out is ever deleted unseen.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl

from act.atlas.panda_id import panda_id_of
from act.atlas.rawjson import raw_array_items
from act.common.atomic import atomic_write, fsync_dir

EXCERPT = 200
SUFFIX = ".json"
#: Seconds after which a temporary spool file that is not a whole document is put aside.
PARTIAL_AGE = 60.0


@dataclass(frozen=True)
class SpooledJob:
    panda_id: int
    spec: dict[str, Any]
    #: The job's text exactly as PanDA sent it (the whole reply for a legacy single-job reply).
    raw: str
    spec_format: Literal["json", "form"]


@dataclass
class SpooledReply:
    path: Path
    queue: str
    api: str
    prod_source_label: str
    call: str
    jobs: list[SpooledJob] = field(default_factory=list)
    #: Jobs put aside (reason, raw text); logged by the caller.
    rejected: list[tuple[str, str]] = field(default_factory=list)
    #: Set when the reply as a whole could not be read (it is put aside in ``rejected/``).
    error: str | None = None


def excerpt(text: str, limit: int = EXCERPT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def spool_dir(root: str | Path) -> Path:
    return Path(root) / "spool" / "panda"


def write_reply(directory: Path, *, queue: str, api: str, label: str, reply: str) -> Path:
    """Store one reply durably; returns its path."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    safe_queue = "".join(c if c.isalnum() or c in "-_." else "_" for c in queue)[:64]
    name = f"{time.time_ns():020d}-{safe_queue}-{secrets.token_hex(4)}{SUFFIX}"
    document = {"queue": queue, "api": api, "prod_source_label": label, "reply": reply}
    atomic_write(directory / name, json.dumps(document).encode("utf-8"), durable=True)
    return directory / name


def pending(directory: Path) -> list[Path]:
    """Spooled replies not yet ingested, oldest first (after :func:`recover`)."""
    if not directory.is_dir():
        return []
    recover(directory)
    return sorted(p for p in directory.iterdir() if p.is_file() and p.name.endswith(SUFFIX))


def recover(directory: Path, *, now: float | None = None) -> list[Path]:
    """Finish the writes of a fetcher killed inside :func:`write_reply`; the spool files made.

    A fetcher killed after writing a reply's temporary file but before its rename (e.g. during
    the fsync, which can take long on a loaded disk) leaves ``.<name>.<random>.tmp``: PanDA
    handed those jobs out, so they must not be lost. A temporary that holds a whole spool
    document (it parses, with every key) was written completely (``write()`` returned: the
    data is in the page cache) and is made durable and renamed to its spool name now. One that
    does not parse was cut short while written: once older than :data:`PARTIAL_AGE` (so never
    a file another process still writes), it is put aside in ``rejected/`` (what PanDA sent of
    it stays readable there), never deleted unseen.
    """
    now = time.time() if now is None else now
    made = []
    for path in sorted(directory.glob(f".*{SUFFIX}.*.tmp")):
        final = directory / path.name[1:].rsplit(".", 2)[0]
        try:
            data = path.read_bytes()
            age = now - path.stat().st_mtime
        except OSError:
            continue
        if _complete(data):
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
            os.chmod(path, 0o600)
            os.replace(path, final)
            fsync_dir(directory)
            made.append(final)
        elif age > PARTIAL_AGE:
            _reject(final, data, "incomplete spool file: the fetcher died while writing it")
            path.unlink(missing_ok=True)
    return made


def _complete(data: bytes) -> bool:
    try:
        document = json.loads(data)
    except ValueError:
        return False
    keys = ("queue", "api", "prod_source_label", "reply")
    return isinstance(document, dict) and all(key in document for key in keys)


def read_reply(path: Path) -> SpooledReply:
    """Parse a spool file; bad jobs (and an unreadable reply) are moved to ``rejected/``."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        queue, api = str(document["queue"]), str(document["api"])
        label, text = str(document["prod_source_label"]), document["reply"]
        if not isinstance(text, str):
            raise TypeError("reply is not text")
    except (ValueError, KeyError, TypeError, OSError) as error:
        reply = SpooledReply(path, "?", "?", "?", "acquire_jobs", error=f"spool file: {error}")
        _reject(path, path.read_bytes() if path.exists() else b"", reply.error or "")
        return reply
    call = "getJob" if api == "legacy" else "pilot/acquire_jobs"
    reply = SpooledReply(path, queue, api, label, call)
    try:
        jobs = parse_jobs(api, text)
    except ValueError as error:
        reply.error = f"{error}; reply: {excerpt(text)!r}"
        _reject(path, text.encode("utf-8"), reply.error)
        return reply
    for index, job in enumerate(jobs):
        if isinstance(job, SpooledJob):
            reply.jobs.append(job)
        else:
            reason, raw = job
            reply.rejected.append(job)
            _reject(path, raw.encode("utf-8"), reason, index=index)
    return reply


def parse_jobs(api: str, text: str) -> list[SpooledJob | tuple[str, str]]:
    """The jobs of a PanDA reply (``api`` "new" or "legacy"), in order: each a SpooledJob, or
    (reason, raw text) for one without a valid PandaID. ValueError when the reply as a whole
    cannot be read. ``actctl translate`` reads a job spec file with it too."""
    raws, form = _job_texts(api, text)
    found: list[SpooledJob | tuple[str, str]] = []
    for raw in raws:
        try:
            spec = dict(parse_qsl(raw, keep_blank_values=True)) if form else json.loads(raw)
            if not isinstance(spec, dict):
                raise ValueError("a job is not an object")
            panda_id = _panda_id(spec)
        except ValueError as error:
            found.append((f"{error}; job: {excerpt(raw)!r}", raw))
            continue
        found.append(SpooledJob(panda_id, spec, raw, "form" if form else "json"))
    return found


def _job_texts(api: str, text: str) -> tuple[list[str], bool]:
    """The exact text of each job in a reply, and whether they are URL-encoded."""
    stripped = text.strip()
    if api != "legacy":
        try:
            envelope = json.loads(stripped)
        except ValueError:
            raise ValueError("not JSON") from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("success"), bool):
            raise ValueError("no {success, message, data} envelope")
        data = envelope.get("data")
        if not envelope["success"] or not isinstance(data, dict) or "jobs" not in data:
            return [], False  # no jobs, or a refusal (the client reports it)
        return _items(stripped, ("data", "jobs")), False
    if stripped.startswith("{"):
        try:
            reply = json.loads(stripped)
        except ValueError:
            raise ValueError("not JSON") from None
        if not isinstance(reply, dict):
            raise ValueError("not an object")
        if "jobs" in reply:
            return _items(stripped, ("jobs",)), False
        return ([stripped], False) if "PandaID" in reply else ([], False)
    fields = dict(parse_qsl(stripped, keep_blank_values=True))
    if "jobs" in fields:
        return _items(fields["jobs"], ()), False
    return ([stripped], True) if "PandaID" in fields else ([], False)


def _items(text: str, path: tuple[str, ...]) -> list[str]:
    try:
        return raw_array_items(text, path)
    except ValueError as error:
        raise ValueError(f"cannot read the job list ({error})") from None


def _panda_id(spec: Mapping[str, Any]) -> int:
    panda_id = panda_id_of(spec)
    if panda_id is None:
        raise ValueError(f"no valid PandaID ({spec.get('PandaID')!r})")
    return panda_id


def _reject(path: Path, data: bytes, reason: str, *, index: int | None = None) -> Path:
    """Keep ``data`` in ``rejected/`` next to a ``.reason`` file; returns its path."""
    directory = path.parent / "rejected"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = path.name.removesuffix(SUFFIX) + ("" if index is None else f".job{index}")
    target = directory / f"{stem}.txt"
    atomic_write(target, data, durable=True)
    atomic_write(directory / f"{stem}.reason", (reason + "\n").encode("utf-8"), durable=True)
    return target


def remove(path: Path) -> None:
    """Delete an ingested spool file (after the commit of its jobs)."""
    path.unlink(missing_ok=True)
    fsync_dir(path.parent)
