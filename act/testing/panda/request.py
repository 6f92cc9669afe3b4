"""One request to the test double, as its HTTP layer parsed it for the API handlers."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Request:
    api: str
    method: str
    http_method: str
    params: dict[str, Any]
    typed: bool  # JSON body (values keep their types) rather than form/query strings
    headers: dict[str, str]
    client_dn: str | None
    connection: int
    body_error: str | None = None

    @property
    def wants_json(self) -> bool:
        return "application/json" in self.headers.get(
            "accept", ""
        ) or "application/json" in self.headers.get("content-type", "")


def json_reply(data: Any) -> tuple[int, str, str]:
    return 200, "application/json", json.dumps(data)
