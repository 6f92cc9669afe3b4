"""Parse job descriptions with ARC's own parser (run by Debian's /usr/bin/python3, not the venv).

Reads a JSON list on stdin, each an xRSL string or ``{"text": ..., "language": ...}`` (e.g.
``"emies:adl"`` for the ADL HTCondor's ARC grid type writes); writes a JSON list with, per text,
either {"error": ...} or the fields tests check. Used by tests/test_translate.py and
tests/test_condor_classad.py in one subprocess each.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import arc  # python3-nordugrid-arc: tests/harness/ensure-arc-python installs it


def _fields(text: str, language: str = "nordugrid:xrsl") -> dict[str, Any]:
    descriptions = arc.JobDescriptionList()
    result = arc.JobDescription.Parse(text, descriptions, language)
    if not result or len(descriptions) != 1:
        return {"error": "ARC parser refused the description"}
    job = descriptions[0]
    app = job.Application
    res = job.Resources
    return {
        "executable": app.Executable.Path,
        "arguments": list(app.Executable.Argument),
        "environment": [[pair[0], pair[1]] for pair in app.Environment],
        "slots": res.SlotRequirement.NumberOfSlots,
        "slots_per_host": res.SlotRequirement.SlotsPerHost,
        "memory": res.IndividualPhysicalMemory.max,
        "walltime_seconds": res.TotalWallTime.range.max,
        "cputime_seconds": res.TotalCPUTime.range.max,
        "queue": res.QueueName,
        "runtime_environments": [str(s) for s in res.RunTimeEnvironment.getSoftwareList()],
        "priority": app.Priority,
        "stdout": app.Output,
        "jobname": job.Identification.JobName,
        "inputs": [[f.Name, [s.fullstr() for s in f.Sources]] for f in job.DataStaging.InputFiles],
        "outputs": [
            [f.Name, [t.fullstr() for t in f.Targets]] for f in job.DataStaging.OutputFiles
        ],
    }


def main() -> None:
    texts = json.load(sys.stdin)
    out = [
        _fields(item["text"], item["language"]) if isinstance(item, dict) else _fields(item)
        for item in texts
    ]
    json.dump(out, sys.stdout)
    sys.stdout.flush()
    os._exit(0)  # the ARC library can hang at interpreter exit


if __name__ == "__main__":
    main()
