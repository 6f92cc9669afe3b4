"""The real ARC CE the ``arc`` tests run against (started by ``tests/harness/arc-ce start``).

The session fixture :func:`arc_ce` fails (never skips) with the command to run when the CE is not
up. Paths come from ``tests/harness/arc-ce env``.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from act.arc.rest import ArcRest
from act.engine.backend import CEUnavailable

HARNESS = Path(__file__).resolve().parents[1] / "harness" / "arc-ce"
START = f"sudo {HARNESS.relative_to(HARNESS.parents[2])} start"


@dataclass(frozen=True)
class RealArc:
    url: str  # https://localhost:8443/arex
    rest: str
    ca_dir: str
    ca_file: str
    proxy: str
    user_cert: str
    user_key: str

    def client(self, **kwargs: Any) -> ArcRest:
        options: dict[str, Any] = {"credential": self.proxy, "ca": self.ca_dir, "timeout": 30.0}
        options.update(kwargs)
        return ArcRest(self.url, name="arc-test", **options)


def environment() -> dict[str, str]:
    out = subprocess.run(
        [str(HARNESS), "env"], check=True, capture_output=True, text=True, timeout=30
    ).stdout
    values = {}
    for line in out.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export ") :].partition("=")
            values[key] = value
    return values


def find_ce() -> RealArc:
    """The running test CE, or a pytest failure saying how to start it."""
    try:
        env = environment()
        ce = RealArc(
            url=env["ACT_ARC_URL"],
            rest=env["ACT_ARC_REST"],
            ca_dir=env["ACT_ARC_CA_DIR"],
            ca_file=env["ACT_ARC_CA_FILE"],
            proxy=env["ACT_ARC_PROXY"],
            user_cert=env["ACT_ARC_USER_CERT"],
            user_key=env["ACT_ARC_USER_KEY"],
        )
    except (OSError, subprocess.SubprocessError, KeyError) as error:
        pytest.fail(f"the test ARC CE's settings are not available ({error}); run: {START}")
    if not os.access(ce.proxy, os.R_OK):
        pytest.fail(f"the test ARC CE's proxy {ce.proxy} is not readable; run: {START}")
    client = ce.client(timeout=10.0)
    try:
        versions = client.versions()
    except CEUnavailable as error:
        pytest.fail(f"the test ARC CE is not up at {ce.url} ({error.cause}); run: {START}")
    finally:
        client.close()
    if "1.0" not in versions and "1.1" not in versions:
        pytest.fail(f"the test ARC CE at {ce.url} offers REST {versions}, not 1.0/1.1")
    return ce


@pytest.fixture(scope="session")
def arc_ce() -> RealArc:
    """The real ARC CE; fails loudly with the start command when it is not up."""
    return find_ce()
