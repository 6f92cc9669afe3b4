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
from act.ctl.config_files import Kind, named_files
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


def _provide_files(config: dict[str, Any], tmp_path: Path) -> list[str]:
    """Create in ``tmp_path`` each file ``config`` names (secrets 0600, CA directories 0755)
    and point the config at them; the keys changed."""
    changed = []
    for named in named_files(Settings.model_validate(config)):
        if not named.required or named.kind is Kind.FILE:
            continue
        target = tmp_path / "files" / named.key
        target.parent.mkdir(parents=True, exist_ok=True)
        if named.kind in (Kind.CA, Kind.DIR):
            target.mkdir(mode=0o755)
        else:
            target.write_text("secret")
            target.chmod(0o600)
        *parents, last = named.key.split(".")
        section = config
        for part in parents:
            section = section[part]
        section[last] = str(target)
        changed.append(named.key)
    return changed


def test_the_readme_site_walkthrough_is_one_valid_configuration(tmp_path: Path) -> None:
    config = _site_walkthrough()
    assert {"db", "panda", "queues", "engine", "storage", "weblogs", "daemons"} <= set(config)
    cric = tmp_path / "cric.json"
    cric.write_text(json.dumps(CRIC))
    config["queues"]["cric_file"] = str(cric)
    missing = check(Settings.model_validate(config)).problems
    # The walkthrough's files are the site's (/etc/grid-security, ...): missing here, each
    # named by its key; once they exist with safe modes, the configuration is valid.
    changed = _provide_files(config, tmp_path)
    assert {"panda.ca", "db.password_file", "weblogs.dir"} <= set(changed)
    assert {p.split(":", 1)[0] for p in missing} <= set(changed)  # some may exist here
    assert "panda.roles.production.proxy" in {p.split(":", 1)[0] for p in missing}
    assert all(p.endswith("does not exist") for p in missing)
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


def test_config_check_names_each_missing_or_unsafe_file_by_its_key(tmp_path: Path) -> None:
    secret = tmp_path / "proxy-ok"
    secret.write_text("x")
    secret.chmod(0o600)
    readable_proxy = tmp_path / "proxy-644"
    readable_proxy.write_text("x")
    readable_proxy.chmod(0o644)
    open_dir = tmp_path / "web"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    cric = tmp_path / "cric.json"
    cric.write_text("{}")
    cric.chmod(0o666)
    a_dir = tmp_path / "a-dir"
    a_dir.mkdir()
    config = {
        "root": str(tmp_path / "root"),
        "panda": {
            "ca": str(tmp_path / "no-such-ca"),
            "roles": {
                "production": {"proxy": str(readable_proxy)},
                "pilot": {"token_file": str(tmp_path / "no-token"), "origin": "atlas.pilot"},
            },
        },
        "queues": {"cric_file": str(cric)},
        "engine": {
            "ces": {
                "ok1": {"backend": "local", "credential": str(secret)},
                "c1": {"backend": "local", "credential": str(a_dir), "ca": str(tmp_path)},
            }
        },
        "storage": {"ca": str(cric)},
        "weblogs": {"dir": str(open_dir)},
    }
    tmp_path.chmod(0o755)
    result = CliRunner().invoke(
        cli, ["--config", str(_write(tmp_path, config)), "config", "check", "--json"]
    )
    assert result.exit_code == exitcodes.CONFIG, result.output
    problems = {p.split(":", 1)[0]: p for p in json.loads(result.output)["problems"]}
    assert problems["panda.ca"].endswith("no-such-ca does not exist")
    assert "accessible by group/others (mode 0644)" in problems["panda.roles.production.proxy"]
    assert problems["panda.roles.pilot.token_file"].endswith("does not exist")
    assert "writable by others (mode 0666)" in problems["queues.cric_file"]
    assert "writable by others (mode 0666)" in problems["storage.ca"]
    assert "is not a regular file" in problems["engine.ces.c1.credential"]
    assert "writable by others (mode 0777)" in problems["weblogs.dir"]
    assert "engine.ces.ok1.credential" not in problems and "engine.ces.c1.ca" not in problems

    text = CliRunner().invoke(cli, ["--config", str(_write(tmp_path, config)), "config", "check"])
    assert text.exit_code == exitcodes.CONFIG
    assert "error: panda.ca: " in text.output and "INVALID" in text.output


def test_an_unset_web_area_is_only_checked_once_it_exists(tmp_path: Path) -> None:
    config = {"root": str(tmp_path / "root")}
    result = CliRunner().invoke(cli, ["--config", str(_write(tmp_path, config)), "config", "check"])
    assert result.exit_code == 0, result.output
    (tmp_path / "root" / "weblogs").mkdir(parents=True)
    (tmp_path / "root" / "weblogs").chmod(0o777)
    result = CliRunner().invoke(cli, ["--config", str(_write(tmp_path, config)), "config", "check"])
    assert result.exit_code == exitcodes.CONFIG
    assert "error: weblogs.dir: " in result.output and "(mode 0777)" in result.output


def test_a_readable_db_password_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    password = tmp_path / "pw"
    password.write_text("x")
    password.chmod(0o640)
    config = {
        "root": str(tmp_path / "root"),
        "db": {"url": "mysql://act@127.0.0.1/act", "password_file": str(password)},
    }
    result = CliRunner().invoke(cli, ["--config", str(_write(tmp_path, config)), "config", "check"])
    assert result.exit_code == exitcodes.CONFIG
    assert "db.password_file: " in result.output and "mode 0640" in result.output
