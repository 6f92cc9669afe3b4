"""Queues from the YAML config and CRIC's pandaqueues JSON."""

from __future__ import annotations

import http.server
import json
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from act.atlas.queues import (
    DEFAULT_MAX_WALLTIME_MINUTES,
    QueueCE,
    QueueConfigError,
    QueuesSettings,
    load_queues,
)
from act.common.config import ConfigError
from act.service.settings import from_snapshot, load_settings


def _cric_entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "SITE_MCORE",
        "state": "ACTIVE",
        "status": "online",
        "corecount": 8,
        "maxtime": 172800,
        "maxrss": 16000,
        "type": "production",
        "is_virtual": False,
        "pilot_manager": "Harvester",
        "copytools": {"mv": {"setup": ""}},
        "acopytools": {"pr": ["mv"], "pw": ["mv"]},
        "params": {"pilot_args": "--container --label 'a b'", "pilot_url": "https://p/x"},
        "pilot_version": "3.9",
        "queues": [
            {
                "ce_flavour": "ARC-CE",
                "ce_endpoint": "https://arc1.example.org:443/arex",
                "ce_queue_name": "mcore",
                "ce_state": "ACTIVE",
                "ce_queue_maxwctime": 4000,
            },
            {
                "ce_flavour": "HTCONDOR-CE",
                "ce_endpoint": "ce2.example.org:9619",
                "ce_queue_name": "default",
                "ce_state": "ACTIVE",
            },
            {
                "ce_flavour": "CREAM-CE",
                "ce_endpoint": "cream.example.org:8443",
                "ce_queue_name": "long",
                "ce_state": "ACTIVE",
            },
        ],
    }
    entry.update(changes)
    return entry


def _cric(tmp_path: Path, queues: dict[str, Any] | str) -> Path:
    path = tmp_path / "cric.json"
    path.write_text(queues if isinstance(queues, str) else json.dumps(queues))
    return path


def _settings(**data: Any) -> QueuesSettings:
    return QueuesSettings.model_validate(data)


def test_yaml_only_queue(tmp_path: Path) -> None:
    config = tmp_path / "act.yaml"
    config.write_text(
        "queues:\n"
        "  defaults:\n"
        "    log_url_prefix: https://act.example.org/jobs\n"
        "  serve:\n"
        "    ANALY_X:\n"
        "      prod_source_label: user\n"
        "      cores: 1\n"
        "      ces:\n"
        "        - {flavour: condor, endpoint: 'ce.example.org:9619'}\n"
    )
    config.chmod(0o600)
    settings = load_settings(config)
    assert from_snapshot(settings.snapshot()) == settings  # handed to daemons this way
    queues = load_queues(settings.queues)
    queue = queues["ANALY_X"]
    assert queue.ces == (QueueCE("condor", "ce.example.org:9619", None, "ACTIVE"),)
    assert queue.online and queue.truepilot and queue.analysis
    assert queue.prod_source_label == "user"
    assert queue.log_url_prefix == "https://act.example.org/jobs"
    assert queue.max_walltime_minutes == DEFAULT_MAX_WALLTIME_MINUTES
    assert queue.queuedata == {}


def test_a_yaml_only_queue_without_ces_is_an_error() -> None:
    with pytest.raises(QueueConfigError) as error:
        load_queues(_settings(serve={"Q": {"cores": 2}}))
    assert (error.value.queue, error.value.field) == ("Q", "ces")


def test_cric_file(tmp_path: Path) -> None:
    path = _cric(tmp_path, {"SITE_MCORE": _cric_entry(), "OTHER": _cric_entry(name="OTHER")})
    queues = load_queues(_settings(cric_file=str(path), serve={"SITE_MCORE": {}}))
    assert list(queues) == ["SITE_MCORE"]  # only the served ones
    queue = queues["SITE_MCORE"]
    assert queue.cores == 8
    assert queue.max_walltime_minutes == 2880
    assert queue.max_memory_mb == 16000
    assert not queue.truepilot  # mv is the only copytool: native
    assert queue.prod_source_label == "managed"
    assert queue.pilot_args == "--container --label 'a b'"
    # CREAM is dropped; the "default" HTCondor-CE queue too, as a named one exists.
    assert queue.ces == (QueueCE("arc", "https://arc1.example.org:443/arex", "mcore", "ACTIVE"),)
    assert queue.queuedata == _cric_entry()
    assert queue.online


def test_cric_rules_for_truepilot_walltime_and_analysis(tmp_path: Path) -> None:
    entries = {
        "A": _cric_entry(copytools={"rucio": {}, "mv": {}}, acopytools={"pr": ["rucio"]}),
        "B": _cric_entry(maxtime=0, type="analysis", status=None, corecount=None),
        "C": _cric_entry(is_truepilot=True, maxtime=10**8),
    }
    queues = load_queues(
        _settings(cric_file=str(_cric(tmp_path, entries)), serve={"A": {}, "B": {}, "C": {}})
    )
    assert queues["A"].truepilot
    assert queues["B"].max_walltime_minutes == 4000  # from ce_queue_maxwctime
    assert queues["B"].prod_source_label == "user"
    assert queues["B"].online and queues["B"].cores == 1  # null: the defaults
    assert queues["C"].truepilot
    assert queues["C"].max_walltime_minutes == DEFAULT_MAX_WALLTIME_MINUTES


def test_yaml_overrides_cric(tmp_path: Path) -> None:
    path = _cric(tmp_path, {"SITE_MCORE": _cric_entry()})
    settings = _settings(
        cric_file=str(path),
        defaults={"cores": 2, "max_jobs": 10, "pilot_wrapper": "/opt/act/wrapper.sh"},
        serve={
            "SITE_MCORE": {
                "truepilot": True,
                "max_walltime_minutes": 600,
                "ces": [{"flavour": "arc", "endpoint": "https://other.example.org/arex"}],
                "queuedata": {"extra": 1},
                "jobs_per_cycle": 5,
            }
        },
    )
    queue = load_queues(settings)["SITE_MCORE"]
    assert queue.truepilot and queue.max_walltime_minutes == 600
    assert queue.ces == (QueueCE("arc", "https://other.example.org/arex", None, "ACTIVE"),)
    assert queue.cores == 8  # CRIC wins over defaults
    assert queue.max_jobs == 10  # defaults fill what CRIC does not say
    assert queue.jobs_per_cycle == 5
    assert queue.pilot_wrapper == "/opt/act/wrapper.sh"
    assert queue.queuedata["extra"] == 1 and queue.queuedata["corecount"] == 8


@pytest.mark.parametrize(
    ("cric", "override"),
    [
        ({"status": "offline"}, {}),
        ({"status": "brokeroff"}, {}),
        ({"state": "INACTIVE"}, {}),
        ({}, {"status": "offline"}),
    ],
)
def test_offline_queues_get_no_new_jobs(
    tmp_path: Path, cric: dict[str, Any], override: dict[str, Any]
) -> None:
    path = _cric(tmp_path, {"Q": _cric_entry(**cric)})
    queue = load_queues(_settings(cric_file=str(path), serve={"Q": override}))["Q"]
    assert not queue.online


def test_a_queue_missing_from_cric_needs_its_ces(tmp_path: Path) -> None:
    path = _cric(tmp_path, {"Q": _cric_entry()})
    with pytest.raises(QueueConfigError) as error:
        load_queues(_settings(cric_file=str(path), serve={"MISSING": {}}))
    assert "MISSING" in str(error.value) and error.value.field == "ces"
    ces = [{"flavour": "arc", "endpoint": "https://a.example.org/arex"}]
    queues = load_queues(_settings(cric_file=str(path), serve={"MISSING": {"ces": ces}}))
    assert queues["MISSING"].ces[0].endpoint == "https://a.example.org/arex"


@pytest.mark.parametrize(
    ("text", "queue", "field"),
    [
        ("{not json", "(all)", None),
        ("[1, 2]", "(all)", None),
        (json.dumps({"Q": "text"}), "Q", "(CRIC entry)"),
        (json.dumps({"Q": _cric_entry(corecount="eight")}), "Q", "corecount"),
        (json.dumps({"Q": _cric_entry(maxtime=-1)}), "Q", "maxtime"),
        (json.dumps({"Q": _cric_entry(mintime="an hour")}), "Q", "mintime"),
        (json.dumps({"Q": {k: v for k, v in _cric_entry().items() if k != "state"}}), "Q", "state"),
        (json.dumps({"Q": _cric_entry(queues={"x": 1})}), "Q", "queues"),
        (json.dumps({"Q": _cric_entry(queues=[{"ce_flavour": "ARC-CE"}])}), "Q",
         "queues[0].ce_endpoint"),
        (json.dumps({"Q": _cric_entry(queues=[{"ce_flavour": 5}])}), "Q", "queues[0].ce_flavour"),
        (json.dumps({"Q": _cric_entry(params={"pilot_args": "'unclosed"})}), "Q", "pilot_args"),
        (json.dumps({"Q": _cric_entry(is_truepilot="yes")}), "Q", "is_truepilot"),
        (json.dumps({"Q": _cric_entry(copytools=["mv"])}), "Q", "copytools"),
    ],
)  # fmt: skip
def test_malformed_cric_names_queue_and_field(
    tmp_path: Path, text: str, queue: str, field: str | None
) -> None:
    path = _cric(tmp_path, text)
    with pytest.raises(QueueConfigError) as error:
        load_queues(_settings(cric_file=str(path), serve={"Q": {}}))
    assert error.value.queue == queue
    assert error.value.field == (field or str(path))
    assert str(error.value).startswith(f"queue {queue}: ")


def test_walltime_minimum_and_margin_from_cric_and_yaml(tmp_path: Path) -> None:
    entries = {"A": _cric_entry(mintime=7200), "B": _cric_entry(mintime=0), "C": _cric_entry()}
    serve: dict[str, Any] = {"A": {}, "B": {}, "C": {"min_walltime_minutes": 30}}
    serve["B"]["walltime_margin"] = 1.2
    queues = load_queues(_settings(cric_file=str(_cric(tmp_path, entries)), serve=serve))
    assert (queues["A"].min_walltime_minutes, queues["A"].walltime_margin) == (120, None)
    assert (queues["B"].min_walltime_minutes, queues["B"].walltime_margin) == (None, 1.2)
    assert queues["C"].min_walltime_minutes == 30
    for bad in ({"walltime_margin": 0.5}, {"walltime_margin": 11}, {"min_walltime_minutes": 0}):
        with pytest.raises(ValueError):
            _settings(serve={"Q": bad})


def test_relative_pilot_paths_are_refused() -> None:
    ces = [{"flavour": "arc", "endpoint": "https://a.example.org/arex"}]
    with pytest.raises(QueueConfigError) as error:
        load_queues(_settings(serve={"Q": {"ces": ces, "pilot_tarball": "pilot3.tar.gz"}}))
    assert error.value.field == "pilot_tarball"


def test_url_fetch_failure_keeps_the_cached_copy(tmp_path: Path) -> None:
    cache = tmp_path / "cache" / "cric.json"
    settings = _settings(
        cric_url="https://cric.example.org/api/pandaqueues", cric_cache=str(cache), serve={"Q": {}}
    )
    seen: list[str] = []

    def good(url: str) -> bytes:
        seen.append(url)
        return json.dumps({"Q": _cric_entry(corecount=4)}).encode()

    assert load_queues(settings, fetch=good)["Q"].cores == 4
    assert seen == ["https://cric.example.org/api/pandaqueues"]
    assert json.loads(cache.read_text())["Q"]["corecount"] == 4

    def unreachable(url: str) -> bytes:
        raise OSError("connection refused")

    warnings: list[str] = []
    assert load_queues(settings, fetch=unreachable, warnings=warnings)["Q"].cores == 4
    assert len(warnings) == 1 and "connection refused" in warnings[0] and str(cache) in warnings[0]

    def garbage(url: str) -> bytes:
        return b"<html>maintenance</html>"

    warnings.clear()
    assert load_queues(settings, fetch=garbage, warnings=warnings)["Q"].cores == 4
    assert "not valid JSON" in warnings[0]
    assert json.loads(cache.read_text())["Q"]["corecount"] == 4  # the bad copy was not kept


def test_url_fetch_failure_without_a_cache_is_an_error(tmp_path: Path) -> None:
    def unreachable(url: str) -> bytes:
        raise OSError("no route to host")

    settings = _settings(
        cric_url="https://cric.example.org/x", cric_cache=str(tmp_path / "none.json"), serve={}
    )
    with pytest.raises(QueueConfigError, match="no route to host") as error:
        load_queues(settings, fetch=unreachable)
    assert error.value.field == "queues.cric_url"


def test_cric_url_must_be_https_and_alone() -> None:
    with pytest.raises(ValueError, match="https"):
        _settings(cric_url="http://cric.example.org/x")
    with pytest.raises(ValueError, match="not both"):
        _settings(cric_url="https://cric.example.org/x", cric_file="/tmp/cric.json")


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture
def https_cric(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real HTTPS server on loopback with its own CA, serving a CRIC document."""
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.pem", "k", "csr", "c"))
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out",
             str(ca), "-days", "2", "-subj", "/CN=act test CA")  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", "/CN=localhost")  # fmt: skip
    ext = tmp_path / "ext"
    ext.write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))  # fmt: skip
    body = json.dumps({"Q": _cric_entry(corecount=6)}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://localhost:{server.server_address[1]}/api/pandaqueues", ca
    finally:
        server.shutdown()
        server.server_close()


def test_cric_url_is_fetched_over_verified_https_with_the_configured_ca(
    https_cric: tuple[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = https_cric
    # The environment must not change which CA is trusted.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(ca))
    cache = tmp_path / "cric-cache.json"
    trusted = _settings(cric_url=url, ca=str(ca), cric_cache=str(cache), serve={"Q": {}})
    assert load_queues(trusted)["Q"].cores == 6
    assert cache.exists()
    other_ca = tmp_path / "other"
    other_ca.mkdir()
    untrusted = _settings(cric_url=url, ca=str(other_ca), serve={"Q": {}})
    with pytest.raises(QueueConfigError, match="CERTIFICATE_VERIFY_FAILED"):
        load_queues(untrusted)
    warnings: list[str] = []
    cached = _settings(cric_url=url, ca=str(other_ca), cric_cache=str(cache), serve={"Q": {}})
    assert load_queues(cached, warnings=warnings)["Q"].cores == 6
    assert "CERTIFICATE_VERIFY_FAILED" in warnings[0]


def test_a_missing_ca_never_falls_back_to_the_system_cas(https_cric: tuple[str, Path]) -> None:
    url, _ = https_cric
    settings = _settings(cric_url=url, ca="/nonexistent/ca.pem", serve={"Q": {}})
    with pytest.raises(QueueConfigError, match="does not exist"):
        load_queues(settings)


def test_queue_config_typos_are_errors_with_a_suggestion(tmp_path: Path) -> None:
    config = tmp_path / "act.yaml"
    config.write_text(
        "queues:\n  serve:\n    Q:\n      cors: 2\n      ces:\n"
        "        - {flavour: arc, endpoint: x, ce_queu: q}\n"
    )
    config.chmod(0o600)
    with pytest.raises(ConfigError) as error:
        load_settings(config)
    assert "queues.serve.Q.cors: unknown key (did you mean 'cores'?)" in error.value.problems
    assert "queues.serve.Q.ces.0.ce_queu: unknown key (did you mean 'ce_queue'?)" in (
        error.value.problems
    )


def test_the_documented_example_queue_loads() -> None:
    example = Path(__file__).resolve().parent.parent / "etc" / "act.yaml"
    queue = load_queues(load_settings(example).queues)["EXAMPLE_MCORE"]
    assert queue.cores == 8 and not queue.truepilot and queue.online
    assert queue.ces == (QueueCE("arc", "https://arc.example.org/arex", "mcore", "ACTIVE"),)
