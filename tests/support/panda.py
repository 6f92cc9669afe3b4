"""Helpers for tests against the PanDA TEST DOUBLE (act.testing.panda)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from act.atlas.credentials import FileCredentials, NoCredentials
from act.atlas.panda_client import PandaClient
from act.atlas.panda_settings import PandaServerSettings
from act.testing.panda import PandaTestServer


def settings_for(server: PandaTestServer, **values: Any) -> PandaServerSettings:
    """Client settings for ``server``: its URL and CA, no back-off delay, plus ``values``."""
    data: dict[str, Any] = {"url": server.url, "backoff": 0.0}
    if server.ca is not None:
        data["ca"] = str(server.ca.ca_file)
    data.update(values)
    return PandaServerSettings.model_validate(data)


def client_for(server: PandaTestServer, **values: Any) -> PandaClient:
    settings = settings_for(server, **values)
    credentials = FileCredentials(settings) if settings.roles else NoCredentials()
    return PandaClient(settings, credentials)


def jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT-shaped token with these claims (the client never verifies tokens)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}.c2ln"


def write_private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path
