"""Role credentials: proxy and token files, lifetimes, re-reading, renewal, refusals."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from act.atlas.credentials import FileCredentials, credential_lifetimes
from act.atlas.panda_client import PandaAuthError
from act.atlas.panda_settings import PandaServerSettings
from act.common.config import ConfigError
from act.service.settings import from_snapshot, load_settings
from act.testing.panda import TestCA
from tests.support.panda import jwt, write_private

FAR = 4102444800  # 2100-01-01


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return TestCA(tmp_path_factory.mktemp("ca"))


def _settings(**values: Any) -> PandaServerSettings:
    return PandaServerSettings.model_validate({"url": "https://panda.example.org", **values})


def _proxy_creds(path: Path, **values: Any) -> FileCredentials:
    role = {"proxy": str(path), **values.pop("role", {})}
    return FileCredentials(_settings(roles={"production": role}, **values))


def _hours(value: timedelta | None) -> float:
    assert value is not None
    return value.total_seconds() / 3600


def test_proxy_lifetime_and_cert_pair(ca: TestCA, tmp_path: Path) -> None:
    proxy = ca.proxy(tmp_path / "proxy", lifetime=timedelta(hours=12))
    creds = _proxy_creds(proxy)
    assert creds.cert_pair("production") == (str(proxy), str(proxy))
    assert creds.bearer("production") is None
    assert 11.9 < _hours(creds.lifetime("production")) <= 12
    assert creds.cert_pair("pilot") is None and creds.lifetime("pilot") is None


def test_a_replaced_proxy_is_re_read(ca: TestCA, tmp_path: Path) -> None:
    proxy = ca.proxy(tmp_path / "proxy", lifetime=timedelta(hours=12))
    creds = _proxy_creds(proxy)
    assert _hours(creds.lifetime("production")) < 12.1
    fresh = ca.proxy(tmp_path / "fresh", lifetime=timedelta(hours=96))
    os.replace(fresh, proxy)  # a new inode, as voms-proxy-init -out does
    assert 95.9 < _hours(creds.lifetime("production")) <= 96
    creds.cert_pair("production")


def test_a_group_readable_file_is_refused_and_logged_once(
    ca: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = ca.proxy(tmp_path / "proxy")
    proxy.chmod(0o640)
    creds = _proxy_creds(proxy)
    with caplog.at_level(logging.INFO, logger="act.atlas"):
        for _ in range(3):
            with pytest.raises(PandaAuthError, match="chmod 600"):
                creds.cert_pair("production")
        assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
        proxy.chmod(0o600)
        assert creds.cert_pair("production") == (str(proxy), str(proxy))
    assert "usable again" in caplog.text
    assert creds.lifetime("production") is not None


def test_missing_and_broken_files_are_auth_errors(tmp_path: Path) -> None:
    creds = _proxy_creds(tmp_path / "absent")
    with pytest.raises(PandaAuthError, match="file not found"):
        creds.cert_pair("production")
    assert creds.lifetime("production") is None
    broken = write_private(tmp_path / "broken", "not a certificate\n")
    with pytest.raises(PandaAuthError, match="not a PEM proxy"):
        _proxy_creds(broken).cert_pair("production")


def test_a_proxy_without_its_key_is_refused(ca: TestCA, tmp_path: Path) -> None:
    proxy = ca.proxy(tmp_path / "proxy")
    text = proxy.read_text()
    key_start = text.index("-----BEGIN PRIVATE KEY-----")
    key_end = text.index("-----END PRIVATE KEY-----") + len("-----END PRIVATE KEY-----\n")
    write_private(proxy, text[:key_start] + text[key_end:])
    with pytest.raises(PandaAuthError, match="no private key"):
        _proxy_creds(proxy).cert_pair("production")


def test_an_expired_proxy_is_refused(ca: TestCA, tmp_path: Path) -> None:
    proxy = ca.proxy(tmp_path / "proxy", lifetime=-timedelta(minutes=5))
    creds = _proxy_creds(proxy)
    with pytest.raises(PandaAuthError, match=r"production credential proxy .* expired at"):
        creds.cert_pair("production")
    assert _hours(creds.lifetime("production")) < 0


def test_a_short_lifetime_is_warned_about_once_an_hour(
    ca: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = ca.proxy(tmp_path / "proxy", lifetime=timedelta(hours=10))
    creds = _proxy_creds(proxy)  # default warn_before: 48 h
    with caplog.at_level(logging.WARNING, logger="act.atlas"):
        for _ in range(5):
            creds.cert_pair("production")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "expires in 10.0 h" in warnings[0]
    caplog.clear()
    quiet = _proxy_creds(proxy, warn_before=3600)
    with caplog.at_level(logging.WARNING, logger="act.atlas"):
        quiet.cert_pair("production")
    assert not caplog.records


def test_tokens_expiry_and_opaque_tokens(tmp_path: Path) -> None:
    token = jwt({"sub": "act", "exp": FAR})
    token_file = write_private(tmp_path / "token", token + "\n")
    role = {"token_file": str(token_file), "origin": "atlas.production"}
    creds = FileCredentials(_settings(roles={"production": role}))
    assert creds.bearer("production") == token
    assert creds.cert_pair("production") is None
    assert creds.origin("production") == "atlas.production"
    assert _hours(creds.lifetime("production")) > 24 * 365
    write_private(token_file, "opaque-token-without-claims")
    assert creds.bearer("production") == "opaque-token-without-claims"
    assert creds.lifetime("production") is None
    write_private(token_file, jwt({"sub": "act", "exp": 1000}))
    with pytest.raises(PandaAuthError, match="expired at 1970"):
        creds.bearer("production")
    write_private(token_file, "")
    with pytest.raises(PandaAuthError, match="empty"):
        creds.bearer("production")


def test_renewal_by_command_replaces_an_expired_proxy(ca: TestCA, tmp_path: Path) -> None:
    proxy = ca.proxy(tmp_path / "proxy", lifetime=-timedelta(hours=1))
    fresh = ca.proxy(tmp_path / "fresh", lifetime=timedelta(hours=96))
    copy = f"import shutil; shutil.copyfile({str(fresh)!r}, {str(proxy)!r})"
    creds = _proxy_creds(proxy, role={"renew_command": [sys.executable, "-c", copy]})
    assert creds.cert_pair("production") == (str(proxy), str(proxy))
    assert _hours(creds.lifetime("production")) > 95


def test_renewal_before_expiry(ca: TestCA, tmp_path: Path) -> None:
    proxy = ca.proxy(tmp_path / "proxy", lifetime=timedelta(hours=5))
    fresh = ca.proxy(tmp_path / "fresh", lifetime=timedelta(hours=96))
    copy = f"import shutil; shutil.copyfile({str(fresh)!r}, {str(proxy)!r})"
    creds = _proxy_creds(proxy, role={"renew_command": [sys.executable, "-c", copy]})
    creds.cert_pair("production")  # 5 h < renew_before (24 h): renewed
    assert _hours(creds.lifetime("production")) > 95


def test_a_failing_renewal_is_logged_and_not_repeated_at_every_call(
    ca: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = ca.proxy(tmp_path / "proxy", lifetime=-timedelta(hours=1))
    marker = tmp_path / "runs"
    script = (
        f"open({str(marker)!r}, 'a').write('x'); import sys; "
        "sys.stderr.write('voms server unreachable'); sys.exit(3)"
    )
    creds = _proxy_creds(proxy, role={"renew_command": [sys.executable, "-c", script]})
    with caplog.at_level(logging.ERROR, logger="act.atlas"):
        for _ in range(3):
            with pytest.raises(PandaAuthError, match="expired"):
                creds.cert_pair("production")
    assert marker.read_text() == "x"  # once per renew_interval, not per call
    assert "exited 3: voms server unreachable" in caplog.text


def test_a_hanging_renewal_is_stopped_by_its_timeout(
    ca: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = ca.proxy(tmp_path / "proxy", lifetime=-timedelta(hours=1))
    role = {"renew_command": [sys.executable, "-c", "import time; time.sleep(60)"]}
    creds = _proxy_creds(proxy, role={**role, "renew_timeout": 0.5})
    with caplog.at_level(logging.ERROR, logger="act.atlas"), pytest.raises(PandaAuthError):
        creds.cert_pair("production")
    assert "timed out after 0.5s" in caplog.text


def test_a_missing_renew_program_is_logged(
    ca: TestCA, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = ca.proxy(tmp_path / "proxy", lifetime=-timedelta(hours=1))
    missing = str(tmp_path / "no-such-voms-proxy-init")
    creds = _proxy_creds(proxy, role={"renew_command": [missing]})
    with caplog.at_level(logging.ERROR, logger="act.atlas"), pytest.raises(PandaAuthError):
        creds.cert_pair("production")
    assert f"cannot run {missing}" in caplog.text


def test_describe_for_actctl(ca: TestCA, tmp_path: Path) -> None:
    good = ca.proxy(tmp_path / "good", lifetime=timedelta(hours=30))
    token_file = write_private(tmp_path / "token", jwt({"exp": 1000}))
    settings = _settings(
        roles={
            "production": {"proxy": str(good)},
            "pilot": {"token_file": str(token_file), "origin": "atlas.pilot"},
        }
    )
    production, pilot = credential_lifetimes(settings)
    assert production.role == "production" and production.kind == "proxy"
    assert production.problem is None and 29.9 < _hours(production.remaining) <= 30
    assert pilot.kind == "token" and pilot.problem is not None and "expired" in pilot.problem
    shutil.move(good, tmp_path / "gone")
    (production, _) = credential_lifetimes(settings)
    assert production.problem == "file not found" and production.remaining is None


def test_role_settings_are_validated() -> None:
    with pytest.raises(ValidationError, match="exactly one of proxy or token_file"):
        _settings(roles={"production": {}})
    with pytest.raises(ValidationError, match="exactly one of proxy or token_file"):
        _settings(roles={"production": {"proxy": "/p", "token_file": "/t", "origin": "a.b"}})
    with pytest.raises(ValidationError, match="needs origin"):
        _settings(roles={"production": {"token_file": "/t"}})
    with pytest.raises(ValidationError):
        _settings(roles={"admin": {"proxy": "/p"}})
    with pytest.raises(ValidationError):
        _settings(roles={"production": {"proxy": "/p", "renew_command": "voms-proxy-init"}})


def test_the_panda_section_of_act_yaml(tmp_path: Path) -> None:
    path = write_private(
        tmp_path / "act.yaml",
        "panda:\n  url: https://panda.example.org:25443\n  api: legacy\n"
        "  roles:\n    pilot:\n      token_file: /t\n      origin: atlas.pilot\n",
    )
    settings = load_settings(path)
    assert settings.panda.api == "legacy" and settings.panda.roles["pilot"].origin == "atlas.pilot"
    assert from_snapshot(settings.snapshot()).panda == settings.panda
    assert load_settings(write_private(tmp_path / "empty.yaml", "panda:\n")).panda.api == "new"
    typo = write_private(tmp_path / "typo.yaml", "panda:\n  timeout:\n    conect: 5\n")
    with pytest.raises(ConfigError) as error:
        load_settings(typo)
    assert "panda.timeout.conect: unknown key (did you mean 'connect'?)" in error.value.problems
    wrong = write_private(tmp_path / "wrong.yaml", "panda:\n  api: v2\n  retries: '3'\n")
    with pytest.raises(ConfigError) as error:
        load_settings(wrong)
    assert {p.split(":")[0] for p in error.value.problems} == {"panda.api", "panda.retries"}
