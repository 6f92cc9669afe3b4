"""Where to look at a job from outside act: ``actctl job`` shows these.

Everything here is derived from the job's rows and the configuration, without a network call:

* the PanDA monitor's page of the job (``panda.monitor_url``);
* the job's ``log_url`` (GTAG: the URL of the pilot's stdout in the web area, as PanDA has it);
* the files in the web area (:mod:`act.atlas.web_area`): ``<panda_id>.out`` (the pilot's stdout),
  ``<panda_id>.log`` (the CE's diagnostics; HTCondor's job event log) and, for a job sent through
  HTCondor, ``<panda_id>.err``; each with its path, its URL (``log_url`` with the other suffix) and
  whether it is there yet;
* per CE job, what its back end offers: ARC's REST URLs of the job's session directory and of
  its ``errors`` diagnostics file, a local CE's job directory, and the directory act fetched the
  job's outputs to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from act.atlas import web_area
from act.ctl.queries import JobDetail, Row
from act.service.settings import Settings

NOT_PUBLISHED = "not yet published"
#: The ARC REST version every A-REX speaks (ARC 6 and 7); used when rest_version is auto.
ARC_BASELINE_REST = "1.0"


def job_links(settings: Settings, detail: JobDetail) -> dict[str, Any]:
    """The links and paths of one job (see the module docstring), JSON-ready."""
    job = detail.panda_job
    backends = {str(ce["backend"]) for ce in detail.ce_jobs}
    return {
        "panda_monitor": settings.panda.monitor_link(int(job["panda_id"])),
        "log_url": job["log_url"],
        "web": _web_files(settings, job, with_err="condor" in backends),
        "ce_jobs": [_ce_links(settings, ce) for ce in detail.ce_jobs],
    }


def _web_files(settings: Settings, job: Row, *, with_err: bool) -> dict[str, Any]:
    """{"out"|"log"|"err": {path, url, published}}, or {"problem": ...} when the job has no
    place in the web area (a queue name unusable as a directory)."""
    try:
        stem = web_area.relative_stem(
            log_url=job["log_url"],
            queue=str(job["queue"]),
            panda_id=int(job["panda_id"]),
            created_at=job["created_at"],
        )
    except ValueError as error:
        return {"problem": str(error)}
    base = web_base_url(job["log_url"], stem.name)
    root = web_area.web_root(settings)
    found: dict[str, Any] = {}
    for suffix in ("out", "err", "log") if with_err else ("out", "log"):
        path = root / stem.parent / f"{stem.name}.{suffix}"
        found[suffix] = {
            "path": str(path),
            "url": f"{base}.{suffix}" if base is not None else None,
            "published": _is_file(path),
        }
    return found


def web_base_url(log_url: str | None, panda_id_name: str) -> str | None:
    """``log_url`` without its ``.out`` when it is the URL of ``<panda_id>.out``, else None."""
    if not log_url or not log_url.endswith(f"/{panda_id_name}.out"):
        return None
    return log_url[: -len(".out")]


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _ce_links(settings: Settings, ce: Row) -> dict[str, Any]:
    backend = str(ce["backend"])
    found: dict[str, Any] = {
        "id": ce["id"],
        "ce": ce["ce_name"],
        "backend": backend,
        "ce_job_id": ce["ce_job_id"],
        "output_dir": ce["output_dir"],
    }
    configured = settings.engine.ces.get(str(ce["ce_name"])) if ce["ce_name"] else None
    job_id = ce["ce_job_id"]
    if configured is None or not job_id:
        return found
    if backend == "arc" and configured.url:
        version = str(configured.options.get("rest_version") or "auto")
        if version == "auto":
            version = ARC_BASELINE_REST
        job = f"{configured.url.rstrip('/')}/rest/{version}/jobs/{quote(str(job_id), safe='')}"
        found["session_url"] = f"{job}/session/"
        found["diagnose_url"] = f"{job}/diagnose/errors"
    elif backend == "local":
        workdir = configured.options.get("workdir")
        ce_dir = Path(workdir) if workdir else Path(settings.root) / "local-ce" / str(ce["ce_name"])
        found["job_dir"] = str(ce_dir / "jobs" / str(job_id))
    return found


def links_text(links: dict[str, Any]) -> str:
    """The links as field/value lines (the ``Links`` part of ``actctl job``)."""
    lines = [("PanDA monitor", links["panda_monitor"]), ("log_url (GTAG)", links["log_url"])]
    web = links["web"]
    if "problem" in web:
        lines.append(("web area", web["problem"]))
    for suffix, item in web.items():
        if suffix == "problem":
            continue
        state = "" if item["published"] else f" ({NOT_PUBLISHED})"
        lines.append((f"web .{suffix}", f"{item['path']}{state}"))
        if item["url"]:
            lines.append((f"web .{suffix} URL", item["url"]))
    for number, ce in enumerate(links["ce_jobs"], 1):
        label = f"CE job {number} ({ce['backend']}, {ce['ce'] or 'no CE yet'})"
        for key in ("session_url", "diagnose_url", "job_dir", "output_dir"):
            if ce.get(key):
                lines.append((f"{label} {key}", ce[key]))
    width = max(len(name) for name, _ in lines)
    return "\n".join(f"{name:{width}}  {value or ''}" for name, value in lines)
