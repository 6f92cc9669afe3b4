"""The demo's pilot: a stand-in for a native-mode ATLAS pilot (pilot3), run by the local CE in the
job's working directory (the queue's ``pilot_wrapper``, through a small wrapper script the demo
writes). It reads and writes the files pilot3 reads and writes, in pilot3's formats
(tests/test_demo_pilot.py holds them against pilot3's own reader and writers):

1. read the job act shipped, ``pandaJobData.out``, as pilot3's ``get_job_definition_from_file``
   does: the URL-encoded key=value form of the legacy getJob reply (``parse_qsl``), or in Harvester
   mode (pilot3's ``is_harvester_mode``: ``HARVESTER_ID``/``HARVESTER_WORKER_ID`` in the
   environment with ``--harvester-submit-mode PUSH``) the JSON ``{"<PandaID>": {...job...}}``;
2. "run the payload" in the job directory ``PanDA_Pilot-<PandaID>/``: sleep a short random time
   (``--sleep MIN-MAX`` seconds, default 0.5-3) so that the demo's progress display shows jobs
   running, write ``payload.stdout`` and, as an ATLAS transform does, ``jobReport.json`` there;
3. "stage out" each output file of ``outFiles`` (the log last) as pilot3's ``mv`` copytool does
   in native mode: leave it in the launch directory and write ``output.list`` with one line per
   file, ``LFN TURL:checksumtype=adler32:checksumvalue=HEX``, the TURL in the ``file://`` storage
   directory ``--storage-dir`` (``<storage>/<scope>/<lfn>``). The CE uploads them there (the
   local CE as an ARC CE's data staging does, :mod:`act.local.stageout`);
4. write the log tarball named the spec's ``logFile`` as pilot3's ``create_log`` lays it out: one
   directory ``tarball_PandaJob_<PandaID>_<queue>`` holding the job directory's files and
   ``pilotlog.txt``;
5. leave ``heartbeat.json``, the final update pilot3 writes in native mode
   (``get_data_structure``, ``write_heartbeat_to_file``): ``jobId`` as a string, ``startTime``/
   ``endTime`` as epoch floats, ``timestamp`` (ISO 8601), ``xml`` the output report ``{lfn:
   {guid, fsize, adler32, surl}}`` as a JSON text, ``metaData`` the jobReport.json text, the
   error codes, ``pilotTiming``, ``pilotID`` (``GTAG|PR|version``), ``schedulerID``
   (``PANDA_JSID``), ``siteName``, ``node``, ``coreCount``, the CPU time and its unit.

With ``--fail-fraction F`` (default 0) a share F of the jobs fails on purpose: evenly spread over
consecutive PandaIDs (job ``n`` fails when ``floor(n*F) > floor((n-1)*F)``); such a payload exits
65 (its jobReport.json says why), no output is staged out, only the log, and the pilot reports
``failed`` with pilotErrorCode 1305 (pilot3's PAYLOADEXECUTIONFAILURE). Output GUIDs: the spec's
``logGUID`` for the log, a UUID derived from the LFN for the others (a transform makes them up;
these are stable across reruns).

Standard library only, no act import: it runs where a pilot runs, with the CE's environment.
Arguments it does not know (the pilot wrapper's ``-j managed ...``) are ignored.
Usage: ``python -I -S .../act/demo/pilot.py --storage-dir DIR [--sleep 0.5-3] [--fail-fraction F]
[-q QUEUE]`` (``-S``: no site-packages to scan at start-up; it needs none).
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
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import parse_qsl

# Not imported at run time: typing costs a few ms of every pilot's start (the annotations are
# strings, never evaluated).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

JOB_SPEC = "pandaJobData.out"
HEARTBEAT = "heartbeat.json"
OUTPUT_LIST = "output.list"
JOB_REPORT = "jobReport.json"
PILOT_LOG = "pilotlog.txt"
PAYLOAD_STDOUT = "payload.stdout"
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
VERSION = "act-demo"
#: pilot3's PAYLOADEXECUTIONFAILURE
FAILED_CODE = 1305
FAILED_DIAG = "demo pilot: payload failed on purpose (actctl demo --failures)"
#: The exit code of a payload that fails on purpose (a transform's "non-zero return code").
PAYLOAD_FAILED_EXIT = 65
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


def fails(panda_id: int, fraction: float) -> bool:
    """Whether job ``panda_id`` fails on purpose: a share ``fraction`` of consecutive ids."""
    return fraction > 0 and math.floor(panda_id * fraction) > math.floor((panda_id - 1) * fraction)


def adler32_of(data: bytes) -> str:
    return f"{zlib.adler32(data) & 0xFFFFFFFF:08x}"


def harvester_mode(submit_mode: str, environ: Mapping[str, str]) -> bool:
    """pilot3's ``is_harvester_mode`` for a pilot started by a CE (no Harvester directories)."""
    has_ids = "HARVESTER_ID" in environ or "HARVESTER_WORKER_ID" in environ
    return has_ids and submit_mode.lower() == "push"


def read_job(path: Path, *, harvester: bool) -> dict[str, Any]:
    """The job in ``path`` as pilot3's ``get_job_definition_from_file`` returns it."""
    text = path.read_text(encoding="utf-8")
    if harvester and text[:4].strip().startswith("{"):  # pilot3's is_json()
        jobs = json.loads(text)
        for jobid, job in jobs.items():  # pilot3 takes the first one
            return {"jobid": jobid, **job}
        raise ValueError(f"{path}: no job in the Harvester job file")
    return dict(parse_qsl(text, keep_blank_values=True))


def _listing(job: Mapping[str, Any], key: str) -> list[str]:
    value = job.get(key)
    if not isinstance(value, str) or value in ("", "NULL"):
        return []
    return [item.strip() for item in value.split(",")]


def _int(value: Any, default: int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        return default


def _scopes(job: Mapping[str, Any], lfns: Sequence[str], log_file: str) -> dict[str, str]:
    """Scope of each output: ``scopeLog`` for the log, ``scopeOut`` (aligned with the outputs
    other than the log, as pilot3 pairs them) for the others."""
    log_scope = str(job.get("scopeLog") or "demo")
    others = [lfn for lfn in lfns if lfn != log_file]
    out_scopes = _listing(job, "scopeOut")
    scopes = {log_file: log_scope}
    for index, lfn in enumerate(others):
        scopes[lfn] = out_scopes[index] if index < len(out_scopes) else log_scope
    return scopes


def _tarball(top: str, files: Mapping[str, bytes]) -> bytes:
    """A gzip tarball of one directory ``top`` holding ``files`` (create_log's layout)."""
    buffer = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        directory = tarfile.TarInfo(top)
        directory.type, directory.mode, directory.mtime = tarfile.DIRTYPE, 0o755, now
        tar.addfile(directory)
        for name, data in files.items():
            member = tarfile.TarInfo(f"{top}/{name}")
            member.size, member.mode, member.mtime = len(data), 0o644, now
            tar.addfile(member, io.BytesIO(data))
    return buffer.getvalue()


def _payload(panda_id: int, lfn: str, rng: random.Random) -> bytes:
    """Some bytes standing for an output file (a few KiB, different per file)."""
    head = f"demo output {lfn} of PanDA job {panda_id}\n".encode()
    return head + rng.randbytes(rng.randint(1024, 8192))


def _stage(workdir: Path, storage: Path, scope: str, lfn: str, data: bytes) -> str:
    """Leave ``data`` as ``workdir/<lfn>`` for the CE to upload; its TURL on the storage,
    ``<storage>/<scope>/<lfn>`` as a file:// URL."""
    _write(workdir / lfn, data)
    return (storage / scope / lfn).resolve().as_uri()


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def time_stamp() -> str:
    """pilot3's ``time_stamp()``: local time, ISO 8601 with the UTC offset."""
    zone = time.timezone
    hours = int(zone / 3600)
    sign = "-" if zone > 0 else "+"
    minutes = int(zone / 60 - hours * 60)
    local = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
    return f"{local}{sign}{abs(hours):02d}:{minutes:02d}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return "unknown"


def _job_report(
    job: Mapping[str, Any], outputs: Mapping[str, Mapping[str, Any]], exit_code: int
) -> dict[str, Any]:
    """A small jobReport.json of the shape ATLAS transforms write (the keys pilot3 and act read:
    exitCode, exitMsg, files.output[].subFiles[] with name, file_guid, file_size)."""
    return {
        "reportVersion": "2.1.0",
        "name": str(job.get("transformation") or "demo"),
        "exitCode": exit_code,
        "exitAcronym": "OK" if exit_code == 0 else "TRF_EXEC_FAIL",
        "exitMsg": "OK" if exit_code == 0 else FAILED_DIAG,
        "files": {
            "output": [
                {
                    "type": "DEMO",
                    "subFiles": [
                        {"name": lfn, "file_guid": info["guid"], "file_size": info["fsize"]}
                        for lfn, info in outputs.items()
                    ],
                }
            ]
        },
        "resource": {"transform": {"wallTime": 0, "cpuTime": 0}},
    }


def run(
    workdir: Path,
    storage: Path,
    *,
    sleep: tuple[float, float] = (0.5, 3.0),
    fail_fraction: float = 0.0,
    out: Any = None,
    queue: str = "",
    harvester: bool = False,
) -> dict[str, Any]:
    """Do the job of ``workdir/pandaJobData.out``; returns the heartbeat written."""
    out = out if out is not None else sys.stdout
    started = time.time()
    job = read_job(workdir / JOB_SPEC, harvester=harvester)
    panda_id = int(job["PandaID"])
    log_file = str(job["logFile"])
    node = os.environ.get("PANDA_HOSTNAME") or os.uname().nodename  # pilot3's get_node_name
    rng = random.Random(panda_id)
    log: list[str] = []

    def say(message: str) -> None:
        line = f"{time.strftime(TIME_FORMAT, time.gmtime())} | demo-pilot | {message}"
        log.append(line)
        print(line, file=out, flush=True)

    say(f"PanDA job {panda_id} ({job.get('transformation', '?')}) on {node}")
    say(f"job name {job.get('jobName', '?')}, attempt {job.get('attemptNr', '?')}")
    jobdir = workdir / f"PanDA_Pilot-{panda_id}"
    jobdir.mkdir(exist_ok=True)
    duration = random.uniform(*sleep)
    say(f"running the payload for {duration:.1f} s (a sleep: this is the demo pilot)")
    time.sleep(duration)
    payload_ran = time.time()
    failed = fails(panda_id, fail_fraction)
    lfns = _listing(job, "outFiles") or [log_file]
    if log_file not in lfns:
        lfns.append(log_file)
    if failed:
        say(f"ERROR: payload failed: {FAILED_DIAG}")
        lfns = [log_file]  # a failed payload leaves no outputs, only the pilot's log
    scopes = _scopes(job, lfns, log_file)
    report: dict[str, dict[str, Any]] = {}
    for lfn in (name for name in lfns if name != log_file):
        data = _payload(panda_id, lfn, rng)
        surl = _stage(workdir, storage, scopes[lfn], lfn, data)
        guid = str(uuid.uuid5(_GUID_NAMESPACE, lfn))
        report[lfn] = {"guid": guid, "fsize": len(data), "adler32": adler32_of(data), "surl": surl}
        say(f"stage-out {lfn}: {len(data)} bytes, adler32 {report[lfn]['adler32']} -> {surl}")
    exit_code = PAYLOAD_FAILED_EXIT if failed else 0
    payload_out = f"demo payload of PanDA job {panda_id}: exit code {exit_code}\n".encode()
    (jobdir / PAYLOAD_STDOUT).write_bytes(payload_out)
    job_report = json.dumps(_job_report(job, report, exit_code))
    (jobdir / JOB_REPORT).write_text(job_report, encoding="utf-8")
    say(f"job {'failed' if failed else 'finished'}; log tarball {log_file}")
    tarball = _tarball(
        f"tarball_PandaJob_{panda_id}_{queue}",
        {
            PAYLOAD_STDOUT: payload_out,
            JOB_REPORT: job_report.encode(),
            PILOT_LOG: ("\n".join(log) + "\n").encode(),
        },
    )
    (workdir / log_file).write_bytes(tarball)
    surl = (storage / scopes[log_file] / log_file).resolve().as_uri()
    log_guid = str(job.get("logGUID") or uuid.uuid5(_GUID_NAMESPACE, log_file))
    report[log_file] = {
        "guid": log_guid,
        "fsize": len(tarball),
        "adler32": adler32_of(tarball),
        "surl": surl,
    }
    stamp = time.strftime(TIME_FORMAT, time.gmtime())
    print(f"{stamp} | demo-pilot | stage-out {log_file}: {len(tarball)} bytes -> {surl}", file=out)
    out.flush()
    _write(
        workdir / OUTPUT_LIST,
        "".join(
            f"{lfn} {info['surl']}:checksumtype=adler32:checksumvalue={info['adler32']}\n"
            for lfn, info in report.items()
        ).encode(),
    )
    ended = time.time()
    cores = _int(job.get("coreCount"), 1)
    heartbeat: dict[str, Any] = {
        "jobId": str(job.get("jobid") or panda_id),
        "state": "failed" if failed else "finished",
        "timestamp": time_stamp(),
        "siteName": queue or None,
        "node": node,
        "attemptNr": _int(job.get("attemptNr"), 0),
        "schedulerID": os.environ.get("PANDA_JSID", "unknown"),
        "pilotID": f"{os.environ.get('GTAG', 'unknown')}|PR|{VERSION}",
        "startTime": started,
        "xml": json.dumps(report),
        "metaData": job_report,
        "coreCount": cores if cores > 0 else 1,
        "cpuConsumptionTime": max(1, round(time.process_time())),
        "cpuConversionFactor": 1.0,
        "cpuConsumptionUnit": f"s+{_cpu_model()}",
        "pilotTiming": f"0|0|{round(payload_ran - started)}|0|0|0",
        "pilotLog": "\n".join(log[-5:])[:1024] if failed else "",
        "endTime": ended,
        "pilotErrorCode": FAILED_CODE if failed else 0,
        "pilotErrorDiag": FAILED_DIAG if failed else "",
        "transExitCode": exit_code,
        "exeErrorCode": exit_code,
        "exeErrorDiag": FAILED_DIAG if failed else "",
    }
    _write(workdir / HEARTBEAT, json.dumps(heartbeat).encode())
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
    # pilot3's own options that the demo pilot uses (the wrapper passes them)
    parser.add_argument("-q", "--queue", default="", help="the PanDA queue (pilot3's -q)")
    parser.add_argument("--harvester-submit-mode", default="PULL", dest="submit_mode")
    args, _pilot_wrapper_args = parser.parse_known_args(argv)
    if not 0 <= args.fail_fraction <= 1:
        parser.error("--fail-fraction must be within 0..1")
    run(
        Path.cwd(),
        args.storage_dir,
        sleep=args.sleep,
        fail_fraction=args.fail_fraction,
        queue=args.queue,
        harvester=harvester_mode(args.submit_mode, os.environ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
