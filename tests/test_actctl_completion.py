"""actctl completion: the scripts, and answers to completion requests as a shell sends them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from act.ctl.cli import cli
from tests.conftest import REPO
from tests.support.procs import write_config

pytestmark = pytest.mark.usefixtures("isolated_config")


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(
        tmp_path / "act.yaml",
        {
            "root": str(tmp_path),
            "engine": {
                "ces": {
                    "arc-one": {"backend": "arc", "url": "https://arc1.example.org/arex"},
                    "condor-two": {"backend": "condor", "url": "ce2.example.org:9619"},
                }
            },
            "queues": {"serve": {"SITE_MCORE": {}, "SITE_SCORE": {}}},
        },
    )


def complete(words: str, *, config_file: Path | None = None) -> list[str]:
    """What actctl answers bash for the command line ``words`` (cursor on its last word)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACT_", "_ACTCTL"))}
    env.update(
        PYTHONPATH=str(REPO),
        ACT_ROOT=env.get("ACT_ROOT", "/nonexistent"),
        _ACTCTL_COMPLETE="bash_complete",
        COMP_WORDS=words,
        COMP_CWORD=str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    )
    if config_file is not None:
        env["ACT_CONFIG"] = str(config_file)
    done = subprocess.run(
        [sys.executable, "-m", "act.ctl.cli"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return [line.split(",", 1)[1] for line in done.stdout.splitlines() if line]


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F _actctl_completion actctl"),
        ("zsh", "#compdef actctl"),
        ("fish", "complete --no-files --command actctl"),
    ],
)
def test_completion_prints_the_script(shell: str, marker: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0, result.output
    assert marker in result.stdout and f"_ACTCTL_COMPLETE={shell}_complete" in result.stdout


def test_an_unknown_shell_is_a_usage_error() -> None:
    assert CliRunner().invoke(cli, ["completion", "tcsh"]).exit_code == 2


def test_subcommands_complete(config_file: Path) -> None:
    found = complete("actctl ", config_file=config_file)
    assert {"report", "status", "jobs", "job", "ces", "completion", "translate"} <= set(found)
    assert complete("actctl rep", config_file=config_file) == ["report"]


def test_ce_and_queue_names_complete_from_the_config(config_file: Path) -> None:
    assert complete("actctl report --ce ", config_file=config_file) == ["arc-one", "condor-two"]
    assert complete("actctl jobs --ce con", config_file=config_file) == ["condor-two"]
    assert complete("actctl ce drain ", config_file=config_file) == ["arc-one", "condor-two"]
    assert complete("actctl report --queue SITE_M", config_file=config_file) == ["SITE_MCORE"]
    # The --config typed on the command line is the one read.
    typed = f"actctl --config {config_file} jobs --queue "
    assert complete(typed) == ["SITE_MCORE", "SITE_SCORE"]
    assert complete("actctl jobs --state run") == ["running"]  # click's own choices
    assert complete("actctl translate job.json --ce ar", config_file=config_file) == ["arc-one"]
    assert complete("actctl translate - --queue SITE_S", config_file=config_file) == ["SITE_SCORE"]


def test_a_broken_config_gives_no_suggestions_and_no_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("engine: [not, a, mapping\n")
    assert complete("actctl report --ce ", config_file=broken) == []
    assert complete(f"actctl --config {tmp_path / 'missing.yaml'} report --ce ") == []
