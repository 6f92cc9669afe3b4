"""The shipped systemd units, sysusers file and cron entry, checked by the real tools.

``systemd-analyze verify`` loads each unit as systemd would and checks that its ExecStart
binaries exist, so the units are copied to a scratch directory with one change: ``/opt/act/bin``
(where the unit comments install act) becomes the bin directory of the Python running the tests
(which holds actd and act-daemon). Nothing else in the units is rewritten.
"""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from act.common import exitcodes, migrate
from act.common.db import Database
from act.common.timeutil import utcnow
from tests.support.procs import ACT_DAEMON, REPO, env, write_config

SYSTEMD = REPO / "systemd"
UNITS = sorted([*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.timer")])
INSTALL_BIN = "/opt/act/bin"


def _tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/bin:/usr/sbin")
    if path is None:
        pytest.fail(f"{name} is missing: install {package} (apt-get install {package}) to test")
    return path


def _unit(path: Path) -> configparser.ConfigParser:
    """A unit file's sections; a key given twice keeps its last value (enough for these tests)."""
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(path)
    return parser


def test_the_units_are_those_expected() -> None:
    assert [p.name for p in UNITS] == ["act-weblogs.service", "act-weblogs.timer", "act.service"]


def test_systemd_analyze_verify_passes_on_every_unit_without_warnings(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze", "systemd")
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "actd").exists() and (bin_dir / "act-daemon").exists()
    for unit in UNITS:
        text = unit.read_text()
        (tmp_path / unit.name).write_text(text.replace(INSTALL_BIN, str(bin_dir)))
    done = subprocess.run(
        [analyze, "verify", "--man=no", "--generators=no"]
        + [str(tmp_path / unit.name) for unit in UNITS],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # Unknown keys, bad values and missing binaries are reported with the unit's name (an
    # unknown key even with exit code 0): none may be.
    ours = [line for line in output.splitlines() if any(u.name in line for u in UNITS)]
    assert not ours, output


def test_systemd_analyze_verify_reports_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key and a missing binary are reported."""
    analyze = _tool("systemd-analyze", "systemd")
    broken = tmp_path / "act.service"
    missing = tmp_path / "not-installed"
    text = (SYSTEMD / "act.service").read_text().replace(INSTALL_BIN, str(missing))
    broken.write_text(text.replace("Restart=on-failure", "Restartt=on-failure"))
    done = subprocess.run(
        [analyze, "verify", "--man=no", "--generators=no", str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert "Unknown key 'Restartt'" in output
    assert done.returncode != 0 and f"{missing}/actd is not executable" in output


def test_act_service_has_what_the_issue_asks_for() -> None:
    service = _unit(SYSTEMD / "act.service")["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["Restart"] == "on-failure"
    assert service["KillMode"] == "mixed"
    assert service["User"] == service["Group"] == "act"
    assert service["ExecStart"] == f"{INSTALL_BIN}/actd"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    writable = service["ReadWritePaths"].split()
    assert {"/var/lib/act", "/var/log/act"} <= set(writable)
    # The example config's web area, optional ("-"): act publishes job logs there.
    web_dir = yaml.safe_load((REPO / "etc" / "act.yaml").read_text())["weblogs"]["dir"]
    assert f"-{web_dir}" in writable
    assert service["PrivateTmp"] == "yes"
    # Invalid configuration (3) and a second actd (5): restarting cannot help.
    assert set(service["RestartPreventExitStatus"].split()) == {
        str(exitcodes.CONFIG),
        str(exitcodes.LOCKED),
    }


def test_the_weblogs_timer_runs_one_weblogs_cycle_daily_with_the_same_hardening() -> None:
    timer = _unit(SYSTEMD / "act-weblogs.timer")
    assert timer["Timer"]["OnCalendar"] == "daily" and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"
    service = _unit(SYSTEMD / "act-weblogs.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == f"{INSTALL_BIN}/act-daemon weblogs --once"
    main = _unit(SYSTEMD / "act.service")["Service"]
    for key in ("User", "Group", "Environment", "NoNewPrivileges", "ProtectSystem", "PrivateTmp"):
        assert service[key] == main[key], key
    assert set(service["ReadWritePaths"].split()) <= set(main["ReadWritePaths"].split())


def test_sysusers_creates_the_dedicated_user(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers", "systemd")
    (tmp_path / "etc").mkdir()
    done = subprocess.run(
        [sysusers, f"--root={tmp_path}", str(SYSTEMD / "act.sysusers.conf")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (user,) = [
        line.split(":")
        for line in (tmp_path / "etc" / "passwd").read_text().splitlines()
        if line.startswith("act:")
    ]
    assert user[5] == "/var/lib/act" and user[6].endswith("nologin")
    assert re.search(r"^act:x:\d+:", (tmp_path / "etc" / "group").read_text(), re.MULTILINE)


def _cron_command() -> list[str]:
    """The command of etc/cron.d/act-weblogs's one job line (checked to run daily, as act)."""
    jobs = [
        line.split()
        for line in (REPO / "etc" / "cron.d" / "act-weblogs").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(jobs) == 1
    minute, hour, *daily, user = jobs[0][:6]
    assert minute.isdigit() and hour.isdigit() and daily == ["*", "*", "*"] and user == "act"
    return jobs[0][6:]


def test_the_cron_entry_and_the_timer_service_run_the_same_command() -> None:
    service = _unit(SYSTEMD / "act-weblogs.service")["Service"]
    cron = _cron_command()
    assert cron[: len(shlex.split(service["ExecStart"]))] == shlex.split(service["ExecStart"])
    text = (REPO / "etc" / "cron.d" / "act-weblogs").read_text()
    assert "ACT_CONFIG=/etc/act/act.yaml" in text.splitlines()


def test_the_cron_command_removes_expired_days_with_weblogs_disabled_under_actd(
    tmp_path: Path,
) -> None:
    """The documented set-up: daemons.weblogs kept with enabled: false (actd leaves it alone),
    the cron line's command run as is (the installed act-daemon replaced by this checkout's)."""
    root, web = tmp_path / "root", tmp_path / "web"
    database = Database(f"sqlite:///{root / 'act.db'}")
    migrate.upgrade(database)
    database.dispose()
    old = web / (utcnow() - timedelta(days=40)).strftime("%Y-%m-%d")
    fresh = web / utcnow().strftime("%Y-%m-%d")
    for day in (old, fresh):
        (day / "QUEUE").mkdir(parents=True)
        (day / "QUEUE" / "1.out").write_text("pilot log\n")
    config = write_config(
        tmp_path / "act.yaml",
        {
            "root": str(root),
            "weblogs": {"dir": str(web), "retention_days": 30},
            "daemons": {"weblogs": {"enabled": False}},
        },
    )
    command = _cron_command()
    assert command[0] == f"{INSTALL_BIN}/act-daemon"
    log_file = tmp_path / "log" / "weblogs.log"
    args = [a.replace("/var/log/act/weblogs.log", str(log_file)) for a in command[1:]]
    done = subprocess.run(
        [*ACT_DAEMON, *args],
        env=env(root, ACT_CONFIG=str(config)),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == exitcodes.OK, done.stderr + log_file.read_text()
    assert not old.exists() and (fresh / "QUEUE" / "1.out").exists()
    assert f"removed {old} (older than 30 days)" in log_file.read_text()
