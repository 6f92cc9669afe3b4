"""Run by tests/test_condor_classad.py in the htcondor<25 venv (tests/harness/ensure-htcondor24),
not in act's: the legacy ``htcondor.Submit(text).jobs()`` turns submit descriptions into full job
ClassAds offline. Reads ``[{"text": ..., "items": [...] | null}]`` as JSON on stdin, writes one
list of job ads (attribute -> value, expressions as text) per request on stdout."""

from __future__ import annotations

import json
import sys

import htcondor


def _plain(value: object) -> bool | int | float | str:
    return value if isinstance(value, (bool, int, float, str)) else str(value)


def main() -> None:
    out = []
    for request in json.load(sys.stdin):
        submit = htcondor.Submit(request["text"])
        items = request.get("items")
        if items:
            ads = submit.jobs(itemdata=iter(items), clusterid=7)
        else:
            ads = submit.jobs(count=1, clusterid=7)
        out.append([{key: _plain(value) for key, value in ad.items()} for ad in ads])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
