"""The Prometheus alert rules shipped in etc/prometheus/act-alerts.yml: valid for promtool, firing
and staying quiet as their unit tests (tests/data/act-alerts-tests.yml) say, written for an
operator (for, severity, what to do), and on metrics act really exports; and the metrics added
for them (database size, disk under root, credential lifetimes).

promtool comes from Debian's prometheus package (tests/harness/ensure-promtool, which ``make
test`` runs): without it these tests fail, they never skip."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest

from act.common import migrate
from act.common.db import Database
from act.common.metrics_server import DatabaseCollector, build_registry
from act.common.timeutil import utcnow
from act.service.metrics_daemon import read_families, read_host, read_snapshot
from act.service.settings import Settings
from act.testing.panda import TestCA
from tests.support.panda import write_private

REPO = Path(__file__).resolve().parent.parent
RULES = REPO / "etc" / "prometheus" / "act-alerts.yml"
UNIT_TESTS = REPO / "tests" / "data" / "act-alerts-tests.yml"
SEVERITIES = {"warning", "critical"}
#: PromQL words that look like metric names but are functions, keywords or label names.
METRIC = re.compile(r"\bact_[a-z0-9_]+\b")


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail(
            "promtool not found: run tests/harness/ensure-promtool (Debian's prometheus package)",
            pytrace=False,
        )
    return subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False
    )


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rules_fire_and_stay_quiet_as_their_unit_tests_say() -> None:
    result = _promtool("test", "rules", str(UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_cover_the_main_alerts_firing_and_not() -> None:
    tests = yaml.safe_load(UNIT_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    main = {
        "ActHeartbeatLagHigh",
        "ActCEBreakerOpen",
        "ActDaemonDown",
        "ActDaemonStuck",
        "ActCredentialExpiringSoon",
        "ActRootDiskLow",
        "ActDatabaseGrowing",
        "ActCECallsFailing",
    }
    assert main <= fired
    assert {"ActHeartbeatLagHigh", "ActCEBreakerOpen", "ActDaemonDown"} <= quiet
    # Every alert of the file fires in at least one test.
    assert {rule["alert"] for rule in _rules()} <= fired


def test_every_rule_says_how_long_how_bad_and_what_to_do() -> None:
    rules = _rules()
    assert len(rules) >= 10
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        name = rule["alert"]
        assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"].startswith("act: "), name
        # the description names something to run or check, not just the symptom
        assert re.search(r"`[^`]+`|daemons\.|supervisor\.", annotations["description"]), name


def _exported_names(text: str) -> set[str]:
    """Every sample name an exposition can contain, from its TYPE lines."""
    names: set[str] = set()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        name, kind = match.groups()
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def test_every_metric_the_rules_use_is_one_act_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the metrics daemon serves, built as it builds it: this process's counters and
    histograms (act.common.metrics) and the snapshot (act.service.metrics_daemon). A metric
    renamed there and not here fails this test."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    database = Database(f"sqlite:///{tmp_path / 'act.db'}")
    try:
        migrate.upgrade(database)
        settings = Settings.model_validate({"root": str(tmp_path)})
        collector = DatabaseCollector()
        collector.refresh(partial(read_families, database, settings))
        exported = _exported_names(generate_latest(build_registry(collector)).decode())
    finally:
        database.dispose()
    used = {name for rule in _rules() for name in METRIC.findall(rule["expr"])}
    assert len(used) >= 10
    assert sorted(used - exported) == []


# -- the metrics added for the alerts ---------------------------------------------------------


def test_the_database_size_is_read_on_each_backend(db: Database) -> None:
    with db.read() as conn:
        families = read_snapshot(conn, now=utcnow(), dead_after=60.0, daemons=[])
    (size,) = [f for f in families if f.name == "act_database_size_bytes"]
    (sample,) = size.samples
    assert sample.value > 0  # act's schema alone takes pages


def test_disk_and_credential_lifetimes_are_read_from_the_host(tmp_path: Path) -> None:
    ca = TestCA(tmp_path / "ca")
    panda_proxy = ca.proxy(tmp_path / "panda-proxy", lifetime=timedelta(hours=10))
    ce_proxy = ca.proxy(tmp_path / "ce-proxy", lifetime=timedelta(hours=50))
    broken = write_private(tmp_path / "broken-proxy", "not a proxy\n")
    settings = Settings.model_validate(
        {
            "root": str(tmp_path),
            "panda": {
                "url": "https://panda.example.org",
                "roles": {"production": {"proxy": str(panda_proxy)}},
            },
            "engine": {
                "ces": {
                    "ce1": {
                        "backend": "arc",
                        "url": "https://ce1.example.org/arex",
                        "credential": str(ce_proxy),
                    },
                    "ce2": {
                        "backend": "arc",
                        "url": "https://ce2.example.org/arex",
                        "credential": str(broken),
                    },
                    "local": {"backend": "local"},
                }
            },
        }
    )
    families = {f.name: f for f in read_host(settings, now=utcnow())}
    usage = shutil.disk_usage(tmp_path)
    (free,) = families["act_root_free_bytes"].samples
    (size,) = families["act_root_size_bytes"].samples
    assert size.value == usage.total
    assert abs(free.value - usage.free) < 1e9  # other tests write meanwhile

    def by_name(family: str) -> dict[tuple[str, str], float]:
        return {(s.labels["use"], s.labels["name"]): s.value for s in families[family].samples}

    expiry = by_name("act_credential_expiry_seconds")
    assert set(expiry) == {("panda", "production"), ("ce", "ce1")}
    assert 9.9 * 3600 < expiry["panda", "production"] <= 10 * 3600
    assert 49.9 * 3600 < expiry["ce", "ce1"] <= 50 * 3600
    assert by_name("act_credential_usable") == {
        ("panda", "production"): 1.0,
        ("ce", "ce1"): 1.0,
        ("ce", "ce2"): 0.0,
    }
