"""What the real pilot (pilot3) needs on a worker node, made by a test: the end-to-end tests of
``tests/test_pilot3_e2e.py`` run it on the real ARC CE and on act's local CE.

A :class:`Worker` is a world-readable directory (the ARC CE's jobs run as another user) with

* ``pilot3.tar.gz``: pilot3 as the wrapper unpacks it (``pilot3/pilot.py``, ``pilot3/pilot/``,
  ``pilot3/PILOTVERSION``), from the sdist ``tests/harness/ensure-pilot3`` installed;
* ``runpilot2-wrapper.sh``: a STAND-IN for the real wrapper (which sets ATLAS software up from
  CVMFS/ALRB, absent here). It takes the wrapper's own options as the real one does, unpacks the
  tarball (shipped by the CE, else the one beside it: act's local CE ships none) and runs
  ``python3 pilot3/pilot.py -q Q -i PR -j LABEL`` with the other arguments. In place of CVMFS it
  points the pilot at the test's CRIC queue stand-in (``LOCAL_AGIS_SCHEDCONF``) and at a pilot3
  configuration with short waits (``HARVESTER_PILOT_CONFIG``); for truepilot jobs it gives the
  pilot the production-role proxy and the PanDA server's CA, as a site's CE would. It prints when
  the pilot started and ended and when it wrote its heartbeat (``act-e2e-timing:`` lines, on its
  stdout and in ``timing/``: the ARC CE keeps only the outputs the description names).
  It never runs the pilot as root (:data:`PILOT_USER` instead, given the job's directory):
  pilot3's ATLAS clean-up before the log tarball (``remove_redundant_files``) joins ``/work``,
  ``/cores``, ``/panda_pilot*``, ``/venv`` and ``/pilot3`` to the job directory with
  ``os.path.join`` (the absolute path wins) and deletes them; as root it deleted this project's
  working tree (a hand run, December 2026). On the ARC CE jobs run as its unprivileged job user;
  act's local CE runs them as act's own user, root in these tests;
* ``cric_pandaqueues.json``: pilot3's CRIC queue description, the same document act reads as
  its CRIC data (``queues.cric_file``): one entry per queue, as :func:`cric_entry` writes it;
  and ``schedconfig/<queue>.all.json``, each entry where pilot3 looks for PanDA's copy of it
  (its ``--queuedata-url``; PanDA's web cache in production). A native job's pilot reads the
  ``queuedata.json`` act ships; a truepilot job gets none and reads this one;
* ``cric_ddmendpoints.json``: pilot3's storage description (CRIC ``ddmendpoints``, given to the
  pilot with its ``--storagedata-url`` option): the endpoint the queue's ``astorages`` name, with
  the real XRootD server's root:// URL for every write and read activity;
* ``sw/``: a STAND-IN ATLAS software area (the queue's ``appdir``): ``scripts/asetup.sh``, which
  the pilot sources before a release's transformation and which here only puts ``sw/bin`` on
  the PATH, and ``bin/act-e2e-trf``, the test's transformation: it writes the output file named
  by ``--out`` and a ``jobReport.json`` as ATLAS transforms do (pilot3's ATLAS user fails a job
  without one, 1187), and exits with ``--exit`` (default 0).

pilot3's own waits made short (:data:`SHORT_WAITS`, in its configuration file): no memory monitor
(prmon comes from CVMFS: without it pilot3 naps 20 x 3 s after the payload waiting for its
summary), 2 s instead of 120 s between server update attempts. What cannot be shortened is listed
in tests/test_pilot3_e2e.py.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.pilot3 import Pilot3

#: Lines of pilot3's default.cfg replaced (section Pilot): see the module docstring.
SHORT_WAITS = {
    "utility_after_payload_started": "",
    "update_sleep": "2",
}
#: The DDM endpoint of the test queues' outputs and logs.
DDM_ENDPOINT = "ACT_TEST_XROOTD"
TRANSFORMATION = "act-e2e-trf"
#: Who runs the pilot when the CE would run it as root (act's local CE in these tests).
PILOT_USER, PILOT_GROUP = "nobody", "nogroup"

WRAPPER = """#!/bin/bash
# STAND-IN for runpilot2-wrapper.sh, written by act's tests (tests/support/pilot3_worker.py).
# The real wrapper sets up ATLAS software from CVMFS/ALRB, which this machine does not have.
# Like the real one, it takes its own options and passes the others to pilot3/pilot.py.
if [ "$(id -u)" = 0 ]; then
  # Never the pilot as root: pilot3's ATLAS clean-up (remove_redundant_files) deletes /work,
  # /cores, /panda_pilot*, /venv and /pilot3 at the filesystem root. act's local CE runs jobs as
  # act's own user (root in these tests): the job's directory goes to @USER@, and so does the rest.
  if ! chmod o+x .. ../.. || ! chown -R @USER@: .; then
    echo "wrapper: cannot hand the job to @USER@"; exit 64
  fi
  exec setpriv --reuid=@USER@ --regid=@GROUP@ --init-groups -- "$0" "$@"
fi
q=""; i="PR"; j="managed"; args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --mute|--container|--localpy) shift ;;
    --pilotversion|--pythonversion|--piloturl|--pandaenvtag|-r|-s) shift 2 ;;
    -q) q=$2; shift 2 ;;
    -i) i=$2; shift 2 ;;
    -j) j=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
tarball=pilot3.tar.gz
[ -f "$tarball" ] || tarball=@WORKER@/pilot3.tar.gz
tar -xzf "$tarball" || { echo "wrapper: cannot unpack $tarball"; exit 64; }
export LOCAL_AGIS_SCHEDCONF=@WORKER@/cric_pandaqueues.json
export HARVESTER_PILOT_CONFIG=@WORKER@/pilot3.cfg
@CREDENTIALS@
timing=@WORKER@/timing/pilot-$$.txt
echo "act-e2e-timing: pilot start $(date +%s.%N)" | tee -a "$timing"
python3 pilot3/pilot.py -q "$q" -i "$i" -j "$j" "${args[@]}"
code=$?
echo "act-e2e-timing: pilot end $(date +%s.%N) exit $code" | tee -a "$timing"
if [ -f heartbeat.json ]; then
  echo "act-e2e-timing: heartbeat written $(stat -c %.6Y heartbeat.json)" | tee -a "$timing"
fi
exit $code
"""

ASETUP = """# STAND-IN for ATLAS's asetup (from CVMFS), written by act's tests: the pilot sources
# it with the job's release before the transformation; this one only puts the test's
# transformation on the PATH.
echo "asetup stand-in: $*"
export PATH="@WORKER@/sw/bin:$PATH"
"""

TRANSFORM = """#!/bin/sh
# The test's transformation (act's tests/support/pilot3_worker.py): writes the output file named
# by --out and a jobReport.json as ATLAS transforms do, then exits with --exit (default 0).
out=""; code=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --exit) code=$2; shift 2 ;;
    *) shift ;;
  esac
done
[ -n "$out" ] || { echo "act-e2e-trf: no --out"; exit 2; }
echo "act-e2e-trf: writing $out in $(pwd)"
head -c 65536 /dev/urandom > "$out"
guid=$(cat /proc/sys/kernel/random/uuid)
size=$(stat -c %s "$out")
message=OK
[ "$code" = 0 ] || message="act-e2e-trf failed on purpose"
cat > jobReport.json <<EOF
{"exitCode": $code, "exitMsg": "$message", "files": {"output": [{"subFiles": [
 {"name": "$out", "file_guid": "$guid", "file_size": $size, "nentries": 10}]}]}}
EOF
[ "$code" = 0 ] || echo "act-e2e-trf: failing with $code" >&2
exit "$code"
"""


@dataclass(frozen=True)
class Worker:
    """The files of one worker node (see the module docstring)."""

    root: Path

    @property
    def wrapper(self) -> Path:
        return self.root / "runpilot2-wrapper.sh"

    @property
    def tarball(self) -> Path:
        return self.root / "pilot3.tar.gz"

    @property
    def cric_queues(self) -> Path:
        return self.root / "cric_pandaqueues.json"

    @property
    def ddm_endpoints(self) -> Path:
        return self.root / "cric_ddmendpoints.json"

    @property
    def software(self) -> Path:
        return self.root / "sw"

    @property
    def schedconfig(self) -> Path:
        return self.root / "schedconfig"

    def pilot_args(self) -> str:
        """pilot3 options for act's ``pilot_args``: the storage and PanDA queuedata stand-ins,
        no Rucio traces."""
        return (
            f"--storagedata-url {self.ddm_endpoints}"
            f" --queuedata-url {self.schedconfig}/{{pandaqueue}}.all.json"
            " --use-rucio-traces false"
        )

    def write_cric(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """The CRIC queue document act reads (``queues.cric_file``) and the pilot reads, and
        each queue's entry where pilot3 looks for PanDA's copy (``--queuedata-url``)."""
        _write(self.cric_queues, json.dumps(entries, indent=1, sort_keys=True))
        for name, entry in entries.items():
            _write(self.schedconfig / f"{name}.all.json", json.dumps(entry, sort_keys=True))


def cric_entry(
    queue: str,
    worker: Worker,
    *,
    ce_endpoint: str,
    ce_flavour: str = "ARC-CE",
    ce_queue: str | None = None,
    truepilot: bool = False,
) -> dict[str, Any]:
    """A CRIC pandaqueue entry (the fields real ones carry that act and pilot3 read).

    Native queues have the ``mv`` copytool only (act: no-network, the CE stages the data);
    truepilot queues copy with ``xrdcp`` themselves. Outputs and logs go to
    :data:`DDM_ENDPOINT`; the software area is the worker's stand-in.
    """
    copytool = "xrdcp" if truepilot else "mv"
    ce: dict[str, Any] = {
        "ce_endpoint": ce_endpoint,
        "ce_flavour": ce_flavour,
        "ce_state": "ACTIVE",
        "ce_queue_maxwctime": 1440,
    }
    if ce_queue:
        ce["ce_queue_name"] = ce_queue
    return {
        "name": queue,
        "nickname": queue,
        "panda_resource": queue,
        "atlas_site": "ACT_TEST",
        "site": "ACT_TEST",
        "cloud": "WORLD",
        "type": "production",
        "state": "ACTIVE",
        "status": "online",
        "corecount": 1,
        "maxrss": 4000,
        "maxtime": 86400,
        "maxwdir": 20000,
        "maxinputsize": 14336,
        "is_cvmfs": True,
        "container_type": "",
        "appdir": str(worker.software),
        "copytools": {copytool: {"setup": ""}},
        "acopytools": {"pr": [copytool], "pw": [copytool], "pl": [copytool]},
        "astorages": {"pr": [DDM_ENDPOINT], "pw": [DDM_ENDPOINT], "pl": [DDM_ENDPOINT]},
        "queues": [ce],
        "pilot_version": "3",
    }


def ddm_endpoint(root_url: str, path: str) -> dict[str, Any]:
    """pilot3's description of :data:`DDM_ENDPOINT` (CRIC ddmendpoints): ``root_url`` (the
    XRootD server) and ``path`` (an absolute URL path) for every activity pilot3 asks for."""
    protocol = {"endpoint": root_url.rstrip("/") + "/", "path": path, "flavour": "XROOTD"}
    activities = ("read_lan", "read_wan", "write_lan", "write_wan")
    return {
        DDM_ENDPOINT: {
            "name": DDM_ENDPOINT,
            "type": "DATADISK",
            "token": "ATLASDATADISK",
            "site": "ACT_TEST",
            "state": "ACTIVE",
            "is_deterministic": True,
            "rprotocols": {"0": {**protocol, "activities": [[a, 1] for a in activities]}},
            "arprotocols": {activity: [protocol] for activity in activities},
        }
    }


def short_config(default_cfg: str) -> str:
    """pilot3's default.cfg with :data:`SHORT_WAITS`; a key it no longer has is an error."""
    text = default_cfg
    for key, value in SHORT_WAITS.items():
        text, count = re.subn(rf"(?m)^{key}:.*$", f"{key}: {value}".rstrip(), text)
        if count != 1:
            raise AssertionError(f"pilot3's default.cfg has {count} '{key}:' lines, not 1")
    return text


@contextmanager
def worker_node(
    pilot3: Pilot3,
    *,
    root_url: str,
    se_path: str,
    credentials: Mapping[str, str] | None = None,
) -> Iterator[Worker]:
    """A fresh worker directory under /tmp (world-readable), removed afterwards.

    ``credentials``: variables the wrapper exports (truepilot: ``X509_USER_PROXY``,
    ``X509_CERT_DIR``).
    """
    root = Path(tempfile.mkdtemp(prefix="act-pilot3-worker-", dir="/tmp"))
    try:
        root.chmod(0o755)
        worker = Worker(root)
        exports = "\n".join(f"export {k}={v}" for k, v in sorted((credentials or {}).items()))
        _write(
            worker.wrapper,
            _fill(
                WRAPPER, WORKER=str(root), CREDENTIALS=exports, USER=PILOT_USER, GROUP=PILOT_GROUP
            ),
            0o755,
        )
        _write(worker.software / "scripts" / "asetup.sh", ASETUP.replace("@WORKER@", str(root)))
        _write(worker.software / "bin" / TRANSFORMATION, TRANSFORM, 0o755)
        _write(
            root / "pilot3.cfg",
            short_config((pilot3.src / "pilot" / "util" / "default.cfg").read_text()),
        )
        (root / "timing").mkdir()
        (root / "timing").chmod(0o1777)  # the pilot's user writes there
        _write(worker.ddm_endpoints, json.dumps(ddm_endpoint(root_url, se_path), indent=1))
        with tarfile.open(worker.tarball, "w:gz") as tar:
            for name in ("pilot.py", "pilot", "PILOTVERSION"):
                tar.add(pilot3.src / name, arcname=f"pilot3/{name}", filter=_no_cache)
        worker.tarball.chmod(0o644)
        yield worker
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _fill(template: str, **values: str) -> str:
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    return template


def _no_cache(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "__pycache__" in info.name else info


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def timing(worker: Worker) -> dict[str, float]:
    """When the pilot started and ended and wrote its heartbeat, as the wrapper recorded it
    (one job per worker)."""
    return parse_timing("".join(p.read_text() for p in (worker.root / "timing").glob("*.txt")))


def parse_timing(stdout: str) -> dict[str, float]:
    """The ``act-e2e-timing:`` lines of a wrapper's output."""
    found: dict[str, float] = {}
    for match in re.finditer(
        r"act-e2e-timing: (pilot start|pilot end|heartbeat written) ([\d.]+)", stdout
    ):
        found[match.group(1)] = float(match.group(2))
    return found
