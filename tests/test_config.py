"""Config validation: every mistake is an error naming the key's path."""

from __future__ import annotations

from pathlib import Path

import pytest

from act.common.config import BUILTIN, DEFAULT_STOP_TIMEOUT, ConfigError, stop_timeout_warning
from act.service.settings import Settings, from_snapshot, load_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("ACT_CONFIG", "ACT_DB_URL", "ACT_ROOT", "XDG_STATE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "act.yaml"
    path.write_text(text)
    path.chmod(mode)
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_settings(path)
    assert str(path) in str(error.value)
    return error.value.problems


def test_no_file_gives_the_embedded_defaults(tmp_path: Path) -> None:
    settings = load_settings()
    assert settings.source == BUILTIN
    root = tmp_path / "home" / ".local" / "state" / "act"
    assert settings.root == str(root)
    assert settings.db_url().render_as_string() == f"sqlite:///{root}/act.db"
    assert settings.log_dir == root / "log"
    assert list(settings.daemons) == ["janitor"]


def test_a_typo_is_an_error_naming_the_key_and_suggesting_the_right_one(tmp_path: Path) -> None:
    path = _write(tmp_path, "db:\n  urll: sqlite:///x.db\ndaemons:\n  janitor:\n    intervall: 5\n")
    problems = _problems(path)
    assert "db.urll: unknown key (did you mean 'url'?)" in problems
    assert "daemons.janitor.intervall: unknown key (did you mean 'interval'?)" in problems


def test_a_wrong_type_is_an_error_naming_the_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "supervisor:\n  stop_timeout: soon\ndaemons:\n  janitor:\n"
        "    instances: '2'\n    enabled: 1\n",
    )
    problems = _problems(path)
    assert any(p.startswith("supervisor.stop_timeout: ") and "'soon'" in p for p in problems)
    assert any(p.startswith("daemons.janitor.instances: ") and "'2'" in p for p in problems)
    assert any(p.startswith("daemons.janitor.enabled: ") for p in problems)


def test_out_of_range_and_inconsistent_values_are_errors(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "daemons:\n  janitor:\n    instances: 0\n"
        "liveness:\n  heartbeat_interval: 30\n  dead_after: 40\n",
    )
    problems = _problems(path)
    assert any(p.startswith("daemons.janitor.instances: ") for p in problems)
    assert any(p.startswith("liveness: ") and "dead_after" in p for p in problems)


def test_daemon_names_and_options_are_validated(tmp_path: Path) -> None:
    path = _write(
        tmp_path, "daemons:\n  janitr: {}\n  janitor:\n    options:\n      process_retension: 5\n"
    )
    problems = _problems(path)
    assert any(p.startswith("daemons.janitr: unknown daemon") for p in problems)
    assert (
        "daemons.janitor.options.process_retension: unknown key (did you mean 'process_retention'?)"
    ) in problems


def test_daemon_names_are_safe_for_file_names(tmp_path: Path) -> None:
    path = _write(tmp_path, "daemons:\n  ../../etc/x:\n    entry: a.b:C\n")
    (problem,) = _problems(path)
    assert problem.startswith("daemons: ") and "'../../etc/x'" in problem


def test_a_key_given_twice_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "db:\n  url: sqlite:///a.db\n  url: sqlite:///b.db\n")
    (problem,) = _problems(path)
    assert "key 'url' given twice" in problem and "line 3" in problem


def test_broken_yaml_and_non_mapping_are_errors(tmp_path: Path) -> None:
    assert "not valid YAML" in _problems(_write(tmp_path, "db: [unclosed\n"))[0]
    assert "mapping" in _problems(_write(tmp_path, "- a\n- b\n"))[0]


def test_empty_sections_mean_defaults(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, "db:\nlogging:\n"))
    assert settings.db.pool_size == 5 and settings.logging.level == "INFO"


def test_environment_overrides_path_root_and_db_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "root: /from/file\ndb:\n  url: sqlite:///file.db\n  pool_size: 3\n")
    monkeypatch.setenv("ACT_CONFIG", str(path))
    monkeypatch.setenv("ACT_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("ACT_DB_URL", "postgresql://act@db.example.org/act")
    settings = load_settings()
    assert settings.source == str(path)
    assert settings.root == str(tmp_path / "root")
    assert settings.db.url == "postgresql://act@db.example.org/act"
    assert settings.db.pool_size == 3


def test_a_password_in_a_readable_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "db:\n  url: mysql://act:secret@db/act\n", mode=0o644)
    (problem,) = _problems(path)
    assert problem.startswith("db.url: holds a password") and "chmod 600" in problem
    assert "secret" not in problem
    path.chmod(0o600)
    assert load_settings(path).db_url().password == "secret"


def test_password_file_must_be_private(tmp_path: Path) -> None:
    secret = tmp_path / "db.pass"
    secret.write_text("s3cret\n")
    secret.chmod(0o640)
    path = _write(tmp_path, f"db:\n  url: mysql://act@db/act\n  password_file: {secret}\n")
    (problem,) = _problems(path)
    assert problem.startswith("db.password_file:") and "0640" in problem
    secret.chmod(0o600)
    assert load_settings(path).db_url().password == "s3cret"
    # A password given in the URL itself (e.g. by ACT_DB_URL or --db-url) is the one used.
    path.write_text(f"db:\n  url: mysql://act:other@db/act\n  password_file: {secret}\n")
    assert load_settings(path).db_url().password == "other"


def test_snapshot_round_trip_keeps_settings_and_source(tmp_path: Path) -> None:
    path = _write(tmp_path, "daemons:\n  janitor:\n    interval: 2.5\n")
    settings = load_settings(path)
    again = from_snapshot(settings.snapshot())
    assert again == settings and again.source == str(path)


def test_the_documented_example_is_valid_and_complete() -> None:
    example = REPO / "etc" / "act.yaml"
    settings = load_settings(example)
    text = example.read_text()
    for section, model in Settings.model_fields.items():
        assert f"\n{section}:" in f"\n{text}", f"etc/act.yaml does not document {section}"
        annotation = model.annotation
        fields = getattr(annotation, "model_fields", {})
        for key in fields:
            assert f"  {key}:" in text, f"etc/act.yaml does not document {section}.{key}"
    assert settings.daemons


def test_the_default_stop_timeout_outlasts_every_call_a_daemon_may_wait_in() -> None:
    """With every default timeout, and every kind of call configured (a CE, a renewable
    credential, CRIC), the default supervisor.stop_timeout is longer than the longest."""
    settings = Settings.model_validate(
        {
            "engine": {"ces": {"ce1": {"backend": "local"}}},
            "panda": {"roles": {"pilot": {"proxy": "/p", "renew_command": ["true"]}}},
            "queues": {"cric_url": "https://cric.example.org/queues.json"},
        }
    )
    timeouts = settings.call_timeouts()
    assert set(timeouts) == {
        "db.busy_timeout",
        "engine.ces.ce1.timeout",
        "panda.timeout (connect + read)",
        "panda.roles.pilot.renew_timeout",
        "storage.timeout",
        "queues.cric_timeout",
    }
    assert settings.supervisor.stop_timeout == DEFAULT_STOP_TIMEOUT > max(timeouts.values())
    assert stop_timeout_warning(settings) is None
    assert stop_timeout_warning(load_settings(REPO / "etc" / "act.yaml")) is None


def test_a_stop_timeout_not_longer_than_a_call_is_a_warning_naming_the_call(
    tmp_path: Path,
) -> None:
    """A warning, not an error: the value is honoured (it may have to fit systemd's
    TimeoutStopSec), and the operator is told which call it cuts short."""
    path = _write(
        tmp_path,
        "engine:\n  ces:\n    slow:\n      backend: local\n      timeout: 300\n",
    )
    settings = load_settings(path)
    warning = stop_timeout_warning(settings)
    assert warning is not None
    assert warning.startswith("supervisor.stop_timeout: 180s is not longer than ")
    assert "engine.ces.slow.timeout (300s)" in warning and "SIGKILL" in warning
    path.write_text("supervisor:\n  stop_timeout: 30\n")
    warning = stop_timeout_warning(load_settings(path))
    assert warning is not None and "panda.timeout (connect + read) (130s)" in warning
    path.write_text("supervisor:\n  stop_timeout: 131\n")
    assert stop_timeout_warning(load_settings(path)) is None
