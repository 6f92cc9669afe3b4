"""The demo's pilot: a stand-in for a native-mode ATLAS pilot, run by the local CE in the job's
working directory (the queue's ``pilot_wrapper``, through a small wrapper script the demo writes).

What a native pilot does, in miniature, and nothing else:

1. read the job spec PanDA sent (``pandaJobData.out``);
2. "run the payload": sleep a short random time (``--sleep MIN-MAX`` seconds, default 0.5-3) so
   that the demo's progress display shows jobs running;
3. write a log tarball named the spec's ``logFile`` holding ``pilotlog.txt``, and each output
   file of ``outFiles`` (the log first, as PanDA lists it), to the ``file://`` storage directory
   given by ``--storage-dir``, as ``<storage>/<scope>/<lfn>``;
4. leave ``heartbeat.json`` with the fields of the final report it would have sent to PanDA:
   jobId, state, transExitCode, pilotErrorCode, node, cpuConsumptionTime, startTime/endTime and
   ``xml``, the output report ``{lfn: {surl, fsize, adler32, guid}}`` as a JSON text, which act's
   validator checks against storage.

With ``--fail-fraction F`` (default 0) a share F of the jobs fails on purpose: evenly spread over
consecutive PandaIDs (job ``n`` fails when ``floor(n*F) > floor((n-1)*F)``), such a job writes its
log tarball only and reports ``failed`` with pilotErrorCode 1305 (the pilot's
PAYLOADEXECUTIONFAILURE) and a diagnosis. Output GUIDs: the spec's ``logGUID`` for the log, a UUID
derived from the LFN for the others (a pilot makes them up; these are stable across reruns).

Standard library only, no act import: it runs where a pilot runs, with the CE's environment.
Arguments it does not know (the pilot wrapper's ``-q QUEUE -j managed ...``) are ignored.
Usage: ``python -I -S .../act/demo/pilot.py --storage-dir DIR [--sleep 0.5-3] [--fail-fraction F]``
(``-S``: no site-packages to scan at start-up; it needs none).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import random
import sys
import tarfile
import time
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path

# Not imported at run time: typing costs a few ms of every pilot's start (the annotations are
# strings, never evaluated).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

JOB_SPEC = "pandaJobData.out"
HEARTBEAT = "heartbeat.json"
PILOT_LOG = "pilotlog.txt"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
#: pilot3's PAYLOADEXECUTIONFAILURE
FAILED_CODE = 1305
FAILED_DIAG = "demo pilot: payload failed on purpose (actctl demo --failures)"
_GUID_NAMESPACE = uuid.UUID("6f1c1f3e-7d43-4f0b-9a59-3c5b8d4c2a10")


def parse_sleep(text: str) -> tuple[float, float]:
    """'MIN-MAX' or one number of seconds -> (low, high)."""
    low, _, high = text.partition("-")
    try:
        bounds = (float(low), float(high or low))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds as MIN-MAX or N") from None
    if not 0 <= bounds[0] <= bounds[1] or not math.isfinite(bounds[1]):
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= MIN <= MAX")
    return bounds


def fails(pandaid: int, fraction: float) -> bool:
    """Whether job ``pandaid`` fails on purpose: a share ``fraction`` of consecutive ids."""
    return fraction > 0 and math.floor(pandaid * fraction) > math.floor((pandaid - 1) * fraction)


def adler32_of(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def _listing(spec: dict[str, Any], key: str) -> list[str]:
    value = spec.get(key)
    if not isinstance(value, str) or value in ("", "NULL"):
        return []
    return [item.strip() for item in value.split(",")]


def _scopes(spec: dict[str, Any], lfns: Sequence[str], log_file: str) -> dict[str, str]:
    """Scope of each output: ``scopeLog`` for the log, ``scopeOut`` (aligned with the outputs
    after the log) for the others."""
    log_scope = str(spec.get("scopeLog") or "demo")
    others = [lfn for lfn in lfns if lfn != log_file]
    out_scopes = _listing(spec, "scopeOut")
    scopes = {log_file: log_scope}
    for index, lfn in enumerate(others):
        scopes[lfn] = out_scopes[index] if index < len(out_scopes) else log_scope
    return scopes


def _tarball(log_file: str, lines: Sequence[str]) -> bytes:
    text = ("\n".join(lines) + "\n").encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        directory = tarfile.TarInfo(log_file.removesuffix(".tgz").replace(".tgz.", "."))
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
        tar.addfile(directory)
        member = tarfile.TarInfo(f"{directory.name}/{PILOT_LOG}")
        member.size, member.mode, member.mtime = len(text), 0o644, int(time.time())
        tar.addfile(member, io.BytesIO(text))
    return buffer.getvalue()


def _payload(pandaid: int, lfn: str, rng: random.Random) -> bytes:
    """Some bytes standing for an output file (a few KiB, different per file)."""
    head = f"demo output {lfn} of PanDA job {pandaid}\n".encode()
    return head + rng.randbytes(rng.randint(1024, 8192))


def _store(storage: Path, scope: str, lfn: str, data: bytes) -> str:
    """Write ``data`` as ``<storage>/<scope>/<lfn>`` (atomically); its file:// URL."""
    where = storage / scope
    where.mkdir(parents=True, exist_ok=True)
    tmp = where / f".{lfn}.{os.getpid()}.part"
    tmp.write_bytes(data)
    os.replace(tmp, where / lfn)
    return (where / lfn).resolve().as_uri()


def run(
    workdir: Path,
    storage: Path,
    *,
    sleep: tuple[float, float] = (0.5, 3.0),
    fail_fraction: float = 0.0,
    out: Any = None,
) -> dict[str, Any]:
    """Do the job of ``workdir/pandaJobData.out``; returns the heartbeat written."""
    out = out if out is not None else sys.stdout
    started = time.time()
    spec = json.loads((workdir / JOB_SPEC).read_text(encoding="utf-8"))
    pandaid = int(spec["PandaID"])
    log_file = str(spec["logFile"])
    node = os.uname().nodename  # the host name (socket.gethostname), without importing socket
    rng = random.Random(pandaid)
    log: list[str] = []

    def say(message: str) -> None:
        line = f"{time.strftime(TIME_FORMAT, time.gmtime())} | demo-pilot | {message}"
        log.append(line)
        print(line, file=out, flush=True)

    say(f"PanDA job {pandaid} ({spec.get('transformation', '?')}) on {node}")
    say(f"job name {spec.get('jobName', '?')}, attempt {spec.get('attemptNr', '?')}")
    duration = random.uniform(*sleep)
    say(f"running the payload for {duration:.1f} s (a sleep: this is the demo pilot)")
    time.sleep(duration)
    failed = fails(pandaid, fail_fraction)
    lfns = _listing(spec, "outFiles") or [log_file]
    if log_file not in lfns:
        lfns.insert(0, log_file)
    if failed:
        say(f"ERROR: payload failed: {FAILED_DIAG}")
        lfns = [log_file]  # a failed payload leaves no outputs, only the pilot's log
    scopes = _scopes(spec, lfns, log_file)
    report: dict[str, dict[str, Any]] = {}
    for lfn in (name for name in lfns if name != log_file):
        data = _payload(pandaid, lfn, rng)
        surl = _store(storage, scopes[lfn], lfn, data)
        guid = str(uuid.uuid5(_GUID_NAMESPACE, lfn))
        report[lfn] = {"surl": surl, "fsize": len(data), "adler32": adler32_of(data), "guid": guid}
        say(f"stage-out {lfn}: {len(data)} bytes, adler32 {report[lfn]['adler32']} -> {surl}")
    say(f"job {'failed' if failed else 'finished'}; log tarball {log_file}")
    tarball = _tarball(log_file, log)
    (workdir / log_file).write_bytes(tarball)
    surl = _store(storage, scopes[log_file], log_file, tarball)
    log_guid = str(spec.get("logGUID") or uuid.uuid5(_GUID_NAMESPACE, log_file))
    report[log_file] = {
        "surl": surl,
        "fsize": len(tarball),
        "adler32": adler32_of(tarball),
        "guid": log_guid,
    }
    stamp = time.strftime(TIME_FORMAT, time.gmtime())
    print(f"{stamp} | demo-pilot | stage-out {log_file}: {len(tarball)} bytes -> {surl}", file=out)
    out.flush()
    ended = time.time()
    heartbeat: dict[str, Any] = {
        "jobId": pandaid,
        "state": "failed" if failed else "finished",
        "transExitCode": 0,
        "pilotErrorCode": FAILED_CODE if failed else 0,
        "node": node,
        "cpuConsumptionTime": max(1, round(time.process_time())),
        "cpuConsumptionUnit": "s",
        "coreCount": int(spec.get("coreCount") or 1),
        "startTime": time.strftime(TIME_FORMAT, time.gmtime(started)),
        "endTime": time.strftime(TIME_FORMAT, time.gmtime(ended)),
        "xml": json.dumps(report, sort_keys=True),
    }
    if failed:
        heartbeat["pilotErrorDiag"] = FAILED_DIAG
    tmp = workdir / f".{HEARTBEAT}.part"
    tmp.write_text(json.dumps(heartbeat), encoding="utf-8")
    os.replace(tmp, workdir / HEARTBEAT)
    return heartbeat


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="act-demo-pilot",
        description="act's demo pilot (a native pilot stand-in).",
        allow_abbrev=False,
    )
    parser.add_argument("--storage-dir", required=True, type=Path, help="file:// storage root")
    parser.add_argument("--sleep", type=parse_sleep, default=(0.5, 3.0), metavar="MIN-MAX")
    parser.add_argument("--fail-fraction", type=float, default=0.0, metavar="F")
    args, _pilot_wrapper_args = parser.parse_known_args(argv)
    if not 0 <= args.fail_fraction <= 1:
        parser.error("--fail-fraction must be within 0..1")
    run(Path.cwd(), args.storage_dir, sleep=args.sleep, fail_fraction=args.fail_fraction)
    return 0


if __name__ == "__main__":
    sys.exit(main())
