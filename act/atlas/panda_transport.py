"""The PanDA client's transport: one persistent ``requests.Session`` to the server, the
credential presented per role (client certificate or token, reconnecting when a certificate
file changes), and each call's retries (see :mod:`act.atlas.panda_client` for the rules).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import requests
import requests.adapters
import urllib3.exceptions

from act.atlas import panda_replies as replies
from act.atlas.credentials import CredentialSource
from act.atlas.panda_errors import PandaAuthError, PandaRefused, PandaTransportError
from act.atlas.panda_settings import PandaServerSettings
from act.atlas.update_fields import form_text
from act.common.logs import job_log
from act.common.timeutil import backoff


class _BugSeen(str):
    __slots__ = ()


#: What a call answered by panda-server 1.0.4's known HTTP 500 bug returns (see ``bug_500``).
BUG_SEEN = _BugSeen("")


class PandaTransport:
    """Calls to one PanDA server (``settings.url``, ``settings.api``) with ``credentials``:
    threads may share it (up to 16 kept-alive connections)."""

    def __init__(
        self,
        settings: PandaServerSettings,
        credentials: CredentialSource,
        log: logging.Logger,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.credentials = credentials
        self.log = log
        #: Set when the daemon is asked to stop: a retry's wait ends at once and the call gives
        #: up with its last error (what the caller does when PanDA stays unreachable).
        self.stop = stop if stop is not None else threading.Event()
        self.base = settings.url.rstrip("/")
        self.legacy = settings.api == "legacy"
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE must not replace panda.ca
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        if settings.insecure:
            self.log.warning(
                "panda.insecure is set: the PanDA server's TLS certificate is NOT verified"
            )
            self.session.verify = False
        else:
            self.session.verify = settings.ca if settings.ca else True
        self._timeout = (settings.timeout.connect, settings.timeout.read)
        self._origins = {str(role): c.origin for role, c in settings.roles.items() if c.origin}
        self._event_bug_logged = False
        self._cert_files: dict[str, tuple[int, int, int]] = {}

    def post(
        self,
        method: str,
        body: Mapping[str, Any],
        roles: Sequence[str],
        *,
        panda_id: int | None = None,
        bug_500: str | None = None,
        repeatable: bool = True,
    ) -> str:
        if self.legacy:
            form = {key: _form_value(value) for key, value in body.items() if value is not None}
            return self._request(
                "POST", method, roles, panda_id=panda_id, data=form, repeatable=repeatable
            )
        return self._request(
            "POST",
            method,
            roles,
            panda_id=panda_id,
            json_body=dict(body),
            bug_500=bug_500,
            repeatable=repeatable,
        )

    def get(self, method: str, params: Mapping[str, Any], roles: Sequence[str]) -> str:
        return self._request("GET", method, roles, params=dict(params))

    def _request(
        self,
        http_method: str,
        method: str,
        roles: Sequence[str],
        *,
        panda_id: int | None = None,
        data: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        bug_500: str | None = None,
        repeatable: bool = True,
    ) -> str:
        """The reply text of a 200 answer; retries transport errors (only those where PanDA
        certainly did not act unless ``repeatable``)."""
        prefix = "/server/panda/" if self.legacy else "/api/v1/"
        url = self.base + prefix + method
        headers = {"Accept": "application/json"}
        cert = self._auth(roles, headers, method)
        attempts = self.settings.retries + 1
        for attempt in range(1, attempts + 1):
            try:
                return self._once(
                    http_method,
                    url,
                    method,
                    headers,
                    cert,
                    panda_id=panda_id,
                    data=data,
                    json_body=json_body,
                    params=params,
                    bug_500=bug_500,
                )
            except PandaTransportError as error:
                if attempt == attempts or not (repeatable or error.unsent):
                    raise
                delay = backoff(self.settings.backoff, self.settings.backoff_max, attempt)
                log = job_log(self.log, panda_id=panda_id) if panda_id is not None else self.log
                if self.stop.is_set():
                    raise
                log.warning("%s; retry %d of %d in %.1fs", error, attempt, attempts - 1, delay)
                if self.stop.wait(delay):
                    log.info("%s: not retried, stopping", error)
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(
        self,
        http_method: str,
        url: str,
        method: str,
        headers: Mapping[str, str],
        cert: tuple[str, str] | None,
        *,
        panda_id: int | None,
        data: Mapping[str, str] | None,
        json_body: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        bug_500: str | None,
    ) -> str:
        try:
            response = self.session.request(
                http_method,
                url,
                headers=headers,
                data=data,
                json=json_body,
                params=params,
                cert=cert,
                timeout=self._timeout,
            )
        except requests.RequestException as error:
            raise PandaTransportError(
                method,
                _short(error),
                panda_id=panda_id,
                unsent=_unsent(error),
                kind=_transport_kind(error),
            ) from None
        status = response.status_code
        text = response.text
        if status == 200:
            if replies.server_timeout(text):
                raise PandaTransportError(
                    method,
                    f"server-side timeout: {replies.excerpt(text)}",
                    panda_id=panda_id,
                    unsent=True,
                    kind="server_timeout",
                )
            return text
        if bug_500 is not None and status == 500 and bug_500 in text.lower():
            if not self._event_bug_logged:
                self._event_bug_logged = True
                self.log.warning(
                    "PanDA %s answered HTTP 500 (%s) after doing its work, a known server bug "
                    "(panda-server 1.0.4): treated as done; not logged again",
                    method,
                    replies.excerpt(text, 80),
                )
            return BUG_SEEN
        cause = f"HTTP {status}: {replies.excerpt(text)}"
        if status >= 500:
            raise PandaTransportError(
                method, cause, panda_id=panda_id, unsent=status in (502, 503), kind="http_5xx"
            )
        if status in (401, 403) and (status == 401 or replies.is_auth_text(text)):
            raise PandaAuthError(method, cause, panda_id=panda_id)
        raise PandaRefused(method, cause, panda_id=panda_id)

    def _auth(
        self, roles: Sequence[str], headers: dict[str, str], method: str
    ) -> tuple[str, str] | None:
        """The client cert for the first role that has a credential, or its token headers."""
        for role in roles:
            try:
                pair = self.credentials.cert_pair(role)
                token = None if pair else self.credentials.bearer(role)
            except PandaAuthError as error:
                raise PandaAuthError(method, error.cause) from None
            if pair:
                self._reconnect_if_changed(pair[0])
                return pair
            if token:
                headers["Authorization"] = f"Bearer {token}"
                origin = self._origins.get(role)
                if origin:
                    headers["Origin"] = origin
                return None
        return None

    def _reconnect_if_changed(self, path: str) -> None:
        """Drop kept-alive connections when a certificate file changed (a renewed or replaced
        proxy): they would go on presenting the old one."""
        try:
            info = os.stat(path)
        except OSError:
            return
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        known = self._cert_files.get(path)
        self._cert_files[path] = key
        if known is not None and known != key:
            self.log.info("client certificate %s changed: reconnecting", path)
            self.session.close()

    def is_alive(self, roles: Sequence[str]) -> bool:
        """True if the server answers its liveness call (no retries). The production credential
        is presented if usable (a server may require a client certificate for the handshake)."""
        path = "/server/panda/isAlive" if self.legacy else "/api/v1/system/is_alive"
        headers = {"Accept": "application/json"}
        try:
            cert = self._auth(roles, headers, "is_alive")
        except PandaAuthError:
            cert, headers = None, {"Accept": "application/json"}
        try:
            response = self.session.get(
                self.base + path, headers=headers, cert=cert, timeout=self._timeout
            )
        except requests.RequestException as error:
            self.log.info("PanDA is_alive: %s", _short(error))
            return False
        if response.status_code != 200:
            return False
        text = response.text
        if self.legacy:
            return "alive=yes" in text or '"alive": "yes"' in text
        try:
            reply = json.loads(text)
        except ValueError:
            return False
        return isinstance(reply, dict) and reply.get("success") is True

    def close(self) -> None:
        """Close the kept-alive connections."""
        self.session.close()


def _unsent(error: requests.RequestException) -> bool:
    """True if the request certainly never reached PanDA (no connection or no TLS session)."""
    if isinstance(error, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError)):
        return True
    if isinstance(error, requests.exceptions.ConnectionError):
        reason = error.args[0] if error.args else None
        inner = getattr(reason, "reason", reason)
        return isinstance(inner, urllib3.exceptions.NewConnectionError)
    return False


def _transport_kind(error: requests.RequestException) -> str:
    """The ``kind`` of a PandaTransportError for a requests error."""
    if isinstance(error, requests.exceptions.SSLError):
        return "tls"
    if isinstance(error, requests.exceptions.Timeout):
        return "timeout"
    if isinstance(error, requests.exceptions.ConnectionError):
        return "connection"
    return "transport"


def _short(error: BaseException) -> str:
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {replies.excerpt(text)}"


def _form_value(value: Any) -> str:
    return form_text(value)
