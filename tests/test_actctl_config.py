"""``actctl config check`` and the README's site walkthrough, which must be a valid config."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from act.common import exitcodes
from act.ctl.cli import cli
from act.ctl.config_check import check
from act.service.settings import Settings
from tests.support.readme import README

CRIC: dict[str, Any] = {
    "SITE_MCORE": {
        "name": "SITE_MCORE",
        "state": "ACTIVE",
        "status": "online",
        "corecount": 8,
        "type": "production",
        "copytools": {"mv": {}},
        "queues": [
            {
                "ce_flavour": "ARC-CE",
                "ce_endpoint": "https://arc1.example.org:443/arex",
                "ce_queue_name": "mcore",
                "ce_state": "ACTIVE",
            },
            {
                "ce_flavour": "HTCONDOR-CE",
                "ce_endpoint": "htc1.example.org:9619",
                "ce_queue_name": "mcore",
                "ce_state": "ACTIVE",
            },
        ],
    }
}


def _site_walkthrough() -> dict[str, Any]:
    """The YAML blocks of the README's "Configuring a real site", merged."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Configuring a real site", 1)[1].split("\n## ", 1)[0]
    merged: dict[str, Any] = {}
    for block in re.findall(r"```yaml\n(.*?)```", section, flags=re.S):
        part = yaml.safe_load(block)
        assert not set(part) & set(merged), f"README walkthrough repeats {set(part) & set(merged)}"
        merged.update(part)
    return merged


def _write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "act.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_the_readme_site_walkthrough_is_one_valid_configuration(tmp_path: Path) -> None:
    config = _site_walkthrough()
    assert {"db", "panda", "queues", "engine", "storage", "weblogs", "daemons"} <= set(config)
    cric = tmp_path / "cric.json"
    cric.write_text(json.dumps(CRIC))
    config["queues"]["cric_file"] = str(cric)
    settings = Settings.model_validate(config)
    found = check(settings)
    assert found.problems == []
    assert found.queues == {"SITE_MCORE": ["arc1", "htc1"]}
    assert found.ces == {"arc1": "arc", "htc1": "condor"}
    assert "metrics" in found.daemons and "validator" in found.daemons
    assert not [w for w in found.warnings if "stop_timeout" in w]


def test_config_check_reports_the_queue_to_ce_mapping(tmp_path: Path) -> None:
    config = {
        "root": str(tmp_path / "root"),
        "engine": {"ces": {"local1": {"backend": "local"}}},
        "queues": {"serve": {"Q1": {"ces": [{"flavour": "arc", "endpoint": "local1"}]}}},
        "daemons": {"panda_fetcher": {}},
    }
    result = CliRunner().invoke(cli, ["--config", str(_write(tmp_path, config)), "config", "check"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output.splitlines()[0]
    assert re.search(r"Q1\s+local1", result.output)

    as_json = CliRunner().invoke(
        cli, ["--config", str(_write(tmp_path, config)), "config", "check", "--json"]
    )
    data = json.loads(as_json.output)
    assert data["ok"] is True and data["queues"] == {"Q1": ["local1"]}


def test_a_queue_without_an_engine_ce_is_an_error_naming_it(tmp_path: Path) -> None:
    config = {
        "root": str(tmp_path / "root"),
        "engine": {"ces": {"local1": {"backend": "local"}}},
        "queues": {
            "serve": {"Q2": {"ces": [{"flavour": "arc", "endpoint": "https://nowhere/arex"}]}}
        },
    }
    result = CliRunner().invoke(cli, ["--config", str(_write(tmp_path, config)), "config", "check"])
    assert result.exit_code == exitcodes.CONFIG
    assert "queues.serve.Q2: no engine CE" in result.output
    assert "https://nowhere/arex" in result.output
    assert "no panda_fetcher daemon" in result.output  # and the warning


def test_an_unknown_back_end_and_a_bad_key_are_errors(tmp_path: Path) -> None:
    config = {"root": str(tmp_path / "r"), "engine": {"ces": {"x": {"backend": "slurmish"}}}}
    result = CliRunner().invoke(cli, ["--config", str(_write(tmp_path, config)), "config", "check"])
    assert result.exit_code == exitcodes.CONFIG
    assert "engine.ces.x.backend: unknown back end 'slurmish'" in result.output

    config = {"root": str(tmp_path / "r"), "daemons": {"janitor": {"intervall": 3}}}
    result = CliRunner().invoke(cli, ["--config", str(_write(tmp_path, config)), "config", "check"])
    assert result.exit_code == exitcodes.CONFIG
    assert "daemons.janitor.intervall" in result.output


def test_a_stop_timeout_shorter_than_a_ce_call_is_a_warning(tmp_path: Path) -> None:
    config = {
        "root": str(tmp_path / "r"),
        "supervisor": {"stop_timeout": 200},
        "engine": {"ces": {"slow": {"backend": "local", "timeout": 240}}},
    }
    result = CliRunner().invoke(
        cli, ["--config", str(_write(tmp_path, config)), "config", "check", "--json"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True
    (warning,) = [w for w in data["warnings"] if "stop_timeout" in w]
    assert "200s is not longer than engine.ces.slow.timeout (240s)" in warning
