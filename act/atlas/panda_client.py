"""act's PanDA client: job dispatch, heartbeats, job status and event ranges, both wire formats.

``panda.api: new`` (default) speaks panda-server >= 1.0: ``POST <url>/api/v1/<module>/<method>``
with a JSON body of typed values and ``Accept: application/json``; replies are a
``{"success", "message", "data"}`` envelope, HTTP 200 even for errors. ``panda.api: legacy``
speaks panda-server <= 0.8.1 (what aCT and pilot3 speak): form-encoded ``POST
<url>/server/panda/<method>``; replies are URL-encoded (``StatusCode=0&...``) or JSON, both are
understood. The shapes handled are those measured on a real server (shared/research/panda.md §3);
the new-API replies and errors were also checked against panda-server 1.0.4 running locally.
Heartbeat fields are kept in the legacy camelCase names and renamed and typed per API by
:mod:`act.atlas.update_fields` (never an argument or a type the server would refuse).

One persistent ``requests.Session`` (keep-alive) with ``trust_env = False``, so that the
configured CA (``panda.ca``) is the one used even when ``REQUESTS_CA_BUNDLE`` is set. TLS is
always verified unless ``panda.insecure: true`` (logged as a warning). Transport errors (connect,
TLS, timeout, HTTP 5xx, a server-side timeout) are retried ``panda.retries`` times with doubling
back-off (a wait that the daemon's stop ends at once: the call then gives up with its last
error); a PanDA refusal never is. ``acquire_jobs`` is retried only when PanDA certainly did
not act (connection refused, TLS handshake, connect timeout, HTTP 502/503, server-side timeout):
after a lost reply the jobs may have been handed out already, and asking again would take more.
The same holds for ``acquire_event_ranges``.

Roles: calls for managed jobs use the ``production`` role's credential, ``prod_source_label``
``user``/``panda`` the ``pilot`` role's; heartbeats, status and event calls use ``production``
(or ``pilot`` when only that one is configured). A ``role=`` keyword overrides the choice.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, ParamSpec, TypeVar
from urllib.parse import parse_qsl

import requests
import requests.adapters
import urllib3.exceptions

from act.atlas.credentials import CredentialSource
from act.atlas.panda_errors import (
    PandaAuthError,
    PandaError,
    PandaRefused,
    PandaReplyError,
    PandaTransportError,
    error_kind,
)
from act.atlas.panda_settings import PandaServerSettings
from act.atlas.pandaid import pandaid_of
from act.atlas.pilot_times import panda_text
from act.atlas.rawjson import raw_array_items
from act.atlas.update_fields import LEGACY_TO_NEW, Fields, for_legacy_api, for_new_api, form_text
from act.common import metrics
from act.common.logs import job_log
from act.common.timeutil import backoff

__all__ = [
    "AcquiredJob",
    "JobUpdate",
    "PandaAuthError",
    "PandaClient",
    "PandaError",
    "PandaRefused",
    "PandaReplyError",
    "PandaServerSettings",
    "PandaTransportError",
    "UpdateResult",
]

NOT_FOUND = "notfound"  # get_job_status's value for a job PanDA does not know
EXCERPT = 200  # characters of a bad reply quoted in errors
_COMMANDS_NONE = {"", "NULL", "None"}
_AUTH_WORDS = (
    "role required",
    "production/pilot role",
    "secure connection is required",
    "token authentication",
    "is banned",
    "permission denied",
    "not authorized",
)
_PILOT_LABELS = {"user", "panda"}
_CODE_10 = re.compile(r'(^|&)StatusCode=10(&|$)|"StatusCode"\s*:\s*10\b')
_EVENT_RANGES_BUG = "not serializable"  # panda-server 1.0.4's HTTP 500 after doing the update

#: New-API argument names (the legacy -> new mapping is in :mod:`act.atlas.update_fields`).
NEW_NAMES = frozenset(LEGACY_TO_NEW.values())


@dataclass(frozen=True)
class AcquiredJob:
    """A job PanDA handed out. ``raw`` is the job's text exactly as received (store it verbatim):
    the job's JSON object, or for a legacy URL-encoded single-job reply the whole reply
    (``raw_format`` says which)."""

    pandaid: int
    spec: dict[str, Any]
    raw: str
    raw_format: Literal["json", "urlencoded"] = "json"


@dataclass(frozen=True)
class JobUpdate:
    """One heartbeat. ``fields`` are extra legacy camelCase fields (``jobId``, ``state`` and
    ``attemptNr`` are added by the client); the new API gets them renamed and typed."""

    pandaid: int
    state: str
    attempt: int | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdateResult:
    """PanDA's answer to one heartbeat. ``command``: tobekilled, badattemptnr, alreadydone,
    debug, ... or None; ``error`` says why ``ok`` is False."""

    pandaid: int
    ok: bool
    command: str | None
    error: str | None


P = ParamSpec("P")
R = TypeVar("R")


def _measured(method: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Time and count each call of a public API method (``act_panda_requests_total``,
    ``act_panda_request_seconds``), retries included; the outcome is ok or the error's kind."""

    def wrap(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            with metrics.measured(
                metrics.PANDA_REQUESTS, metrics.PANDA_SECONDS, (method,), (method,)
            ) as measured:
                try:
                    return function(*args, **kwargs)
                except PandaError as error:
                    measured.outcome = error_kind(error)
                    raise

        return call

    return wrap


class PandaClient:
    """A PanDA server connection (see the module docstring). Threads may share one client: calls
    run in parallel on up to 16 kept-alive connections (tested with 4 threads)."""

    def __init__(
        self,
        settings: PandaServerSettings,
        credentials: CredentialSource,
        *,
        log: logging.Logger | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        #: Set when the daemon is asked to stop: a retry's wait ends at once and the call gives
        #: up with its last error (what the caller does when PanDA stays unreachable).
        self._stop = stop if stop is not None else threading.Event()
        self.credentials = credentials
        self.log = log or logging.getLogger("act.atlas.panda_client")
        self._base = settings.url.rstrip("/")
        self._legacy = settings.api == "legacy"
        self._session = requests.Session()
        self._session.trust_env = False  # REQUESTS_CA_BUNDLE must not replace panda.ca
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        if settings.insecure:
            self.log.warning(
                "panda.insecure is set: the PanDA server's TLS certificate is NOT verified"
            )
            self._session.verify = False
        else:
            self._session.verify = settings.ca if settings.ca else True
        self._timeout = (settings.timeout.connect, settings.timeout.read)
        self._origins = {str(role): c.origin for role, c in settings.roles.items() if c.origin}
        self._event_bug_logged = False
        self._cert_files: dict[str, tuple[int, int, int]] = {}

    # -- jobs --------------------------------------------------------------------------------

    @_measured("acquire_jobs")
    def acquire_jobs(
        self,
        *,
        queue: str,
        prod_source_label: str,
        n_jobs: int,
        node: str,
        computing_element: str | None = None,
        role: str | None = None,
        on_reply: Callable[[str], None] | None = None,
        **extra: Any,
    ) -> list[AcquiredJob]:
        """Ask for up to ``n_jobs`` jobs of ``queue``; [] when PanDA has none.

        ``on_reply`` is called with the reply text as received, before it is parsed (the PanDA
        fetcher spools it to disk there, so that no job handed out is lost to a crash or to a
        reply the parser refuses)."""
        roles = [role] if role else _roles_for_label(prod_source_label)
        if self._legacy:
            params: dict[str, Any] = {
                "siteName": queue,
                "prodSourceLabel": prod_source_label,
                "node": node,
                **({"computingElement": computing_element} if computing_element else {}),
                **({"nJobs": n_jobs} if n_jobs != 1 else {}),
                **extra,
            }
            text = self._post_acquire("getJob", params, roles, on_reply)
            reply = _legacy_reply("getJob", text)
            code = _status_code("getJob", reply)
            if code == 20:
                return []
            self._check_legacy_code("getJob", code, reply)
            return _legacy_jobs(text, reply)
        body = {
            "site_name": queue,
            "prod_source_label": prod_source_label,
            "node": node,
            "n_jobs": n_jobs,
            **({"computing_element": computing_element} if computing_element else {}),
            **extra,
        }
        text = self._post_acquire("pilot/acquire_jobs", body, roles, on_reply)
        envelope = _envelope("pilot/acquire_jobs", text)
        if not envelope["success"]:
            if "no jobs" in str(envelope.get("message", "")).lower():
                return []
            self._refuse("pilot/acquire_jobs", envelope)
        data = envelope.get("data")
        if not isinstance(data, dict):
            raise _reply_error("pilot/acquire_jobs", "data is not an object", text)
        code = data.get("StatusCode", 0)
        if code == 20:
            return []
        if code != 0:
            self._check_legacy_code("pilot/acquire_jobs", code, data)
        return _jobs_from_json("pilot/acquire_jobs", text, ("data", "jobs"))

    @_measured("update_job")
    def update_job(self, update: JobUpdate, *, role: str | None = None) -> UpdateResult:
        """Send one heartbeat; a per-job refusal is a result with ``ok=False``, not an error."""
        roles = [role] if role else _roles_for_label(None)
        if self._legacy:
            text = self._post(
                "updateJob", self._legacy_fields(update), roles, pandaid=update.pandaid
            )
            return _legacy_update_result("updateJob", update.pandaid, text)
        body = self._new_fields(update)
        text = self._post("pilot/update_job", body, roles, pandaid=update.pandaid)
        envelope = _envelope("pilot/update_job", text, pandaid=update.pandaid)
        if not envelope["success"] and _is_auth(envelope):
            raise PandaAuthError(
                "pilot/update_job", str(envelope.get("message")), pandaid=update.pandaid
            )
        return _new_update_result("pilot/update_job", update.pandaid, envelope)

    @_measured("update_jobs_bulk")
    def update_jobs_bulk(
        self, updates: Sequence[JobUpdate], *, role: str | None = None
    ) -> list[UpdateResult]:
        """Send many heartbeats in one call; the results are aligned with ``updates``."""
        if not updates:
            return []
        roles = [role] if role else _roles_for_label(None)
        if self._legacy:
            job_list = json.dumps([self._legacy_fields(update) for update in updates])
            text = self._post("updateJobsInBulk", {"jobList": job_list}, roles)
            return _legacy_bulk_results(text, updates)
        body = {"job_list": [self._new_fields(update) for update in updates]}
        text = self._post("pilot/update_jobs_bulk", body, roles)
        envelope = _envelope("pilot/update_jobs_bulk", text)
        if not envelope["success"]:
            self._refuse("pilot/update_jobs_bulk", envelope)
        items = envelope.get("data")
        if not isinstance(items, list) or len(items) != len(updates):
            count = len(items) if isinstance(items, list) else "no list"
            raise _reply_error(
                "pilot/update_jobs_bulk", f"{count} results for {len(updates)} jobs", text
            )
        results = []
        for update, item in zip(updates, items, strict=True):
            if not isinstance(item, dict) or not isinstance(item.get("success"), bool):
                raise _reply_error("pilot/update_jobs_bulk", "a result is no envelope", text)
            results.append(_new_update_result("pilot/update_jobs_bulk", update.pandaid, item))
        return results

    @_measured("get_job_status")
    def get_job_status(self, pandaids: Sequence[int], *, role: str | None = None) -> dict[int, str]:
        """PanDA's status of each job (``notfound`` for an unknown one)."""
        if not pandaids:
            return {}
        roles = [role] if role else _roles_for_label(None)
        if self._legacy:
            text = self._post("getStatus", {"ids": " ".join(map(str, pandaids))}, roles)
            reply = _legacy_reply("getStatus", text)
            self._check_legacy_code("getStatus", _status_code("getStatus", reply), reply)
            status = reply.get("status")
            values = status.split() if isinstance(status, str) else status
            if not isinstance(values, list) or len(values) != len(pandaids):
                raise _reply_error("getStatus", "status list does not match the ids", text)
            pairs = zip(pandaids, values, strict=True)
            return {pid: _norm_status(str(value)) for pid, value in pairs}
        text = self._get("pilot/get_job_status", {"job_ids": list(pandaids)}, roles)
        envelope = _envelope("pilot/get_job_status", text)
        if not envelope["success"]:
            self._refuse("pilot/get_job_status", envelope)
        data = envelope.get("data")
        if not isinstance(data, list):
            raise _reply_error("pilot/get_job_status", "data is not a list", text)
        result: dict[int, str] = {}
        for item in data:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("job_id"), int)
                or not isinstance(item.get("status"), str)
            ):
                raise _reply_error("pilot/get_job_status", "an item lacks job_id/status", text)
            result[item["job_id"]] = _norm_status(item["status"])
        return result

    # -- event service -----------------------------------------------------------------------

    @_measured("acquire_event_ranges")
    def acquire_event_ranges(
        self,
        pandaid: int,
        *,
        jobset_id: int | str,
        task_id: int | str,
        n_ranges: int,
        role: str | None = None,
        **extra: Any,
    ) -> list[dict[str, Any]]:
        """Up to ``n_ranges`` event ranges of an event-service job ([] for none)."""
        roles = [role] if role else _roles_for_label(None)
        if self._legacy:
            params = {
                "pandaID": pandaid,
                "jobsetID": jobset_id,
                "taskID": task_id,
                "nRanges": n_ranges,
                **extra,
            }
            text = self._post("getEventRanges", params, roles, pandaid=pandaid, repeatable=False)
            reply = _legacy_reply("getEventRanges", text, pandaid=pandaid)
            code = _status_code("getEventRanges", reply, pandaid=pandaid)
            self._check_legacy_code("getEventRanges", code, reply, pandaid=pandaid)
            ranges: Any = reply.get("eventRanges", "[]")
            if isinstance(ranges, str):
                try:
                    ranges = json.loads(ranges)
                except ValueError:
                    raise _reply_error(
                        "getEventRanges", "eventRanges is not JSON", text, pandaid=pandaid
                    ) from None
        else:
            body = {
                "job_id": pandaid,
                "jobset_id": _as_int(jobset_id),
                "task_id": _as_int(task_id),
                "n_ranges": n_ranges,
                **extra,
            }
            text = self._post(
                "event/acquire_event_ranges", body, roles, pandaid=pandaid, repeatable=False
            )
            envelope = _envelope("event/acquire_event_ranges", text, pandaid=pandaid)
            if not envelope["success"]:
                self._refuse("event/acquire_event_ranges", envelope, pandaid=pandaid)
            ranges = envelope.get("data")
            if ranges is None:
                ranges = []
        if not isinstance(ranges, list) or not all(isinstance(r, dict) for r in ranges):
            raise _reply_error(
                "acquire_event_ranges", "event ranges are not a list of objects", text, pandaid
            )
        return ranges

    @_measured("update_event_ranges")
    def update_event_ranges(
        self, ranges: Sequence[Mapping[str, Any]], *, role: str | None = None
    ) -> None:
        """Report event range statuses (``eventRangeID``, ``eventStatus``, ...). panda-server
        1.0.4 answers HTTP 500 after doing the update (a server bug): that counts as done."""
        if not ranges:
            return
        roles = [role] if role else _roles_for_label(None)
        payload = _dumps([dict(r) for r in ranges])
        if self._legacy:
            text = self._post("updateEventRanges", {"eventRanges": payload}, roles)
            reply = _legacy_reply("updateEventRanges", text)
            code = _status_code("updateEventRanges", reply)
            self._check_legacy_code("updateEventRanges", code, reply)
            return
        text = self._post(
            "event/update_event_ranges",
            {"event_ranges": payload},
            roles,
            bug_500=_EVENT_RANGES_BUG,
        )
        if text is _BUG_SEEN:
            return
        envelope = _envelope("event/update_event_ranges", text)
        if not envelope["success"]:
            self._refuse("event/update_event_ranges", envelope)

    # -- misc --------------------------------------------------------------------------------

    def is_alive(self) -> bool:
        """True if the server answers its liveness call (no retries). The production credential
        is presented if usable (a server may require a client certificate for the handshake)."""
        path = "/server/panda/isAlive" if self._legacy else "/api/v1/system/is_alive"
        headers = {"Accept": "application/json"}
        try:
            cert = self._auth(_roles_for_label(None), headers, "is_alive")
        except PandaAuthError:
            cert, headers = None, {"Accept": "application/json"}
        try:
            response = self._session.get(
                self._base + path, headers=headers, cert=cert, timeout=self._timeout
            )
        except requests.RequestException as error:
            self.log.info("PanDA is_alive: %s", _short(error))
            return False
        if response.status_code != 200:
            return False
        text = response.text
        if self._legacy:
            return "alive=yes" in text or '"alive": "yes"' in text
        try:
            reply = json.loads(text)
        except ValueError:
            return False
        return isinstance(reply, dict) and reply.get("success") is True

    def close(self) -> None:
        """Close the kept-alive connections."""
        self._session.close()

    def __enter__(self) -> PandaClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _post_acquire(
        self,
        method: str,
        body: Mapping[str, Any],
        roles: Sequence[str],
        on_reply: Callable[[str], None] | None,
    ) -> str:
        """Ask for jobs once (never repeated: PanDA may have handed them out) and give the
        reply text to ``on_reply`` before anything parses it."""
        text = self._post(method, body, roles, repeatable=False)
        if on_reply is not None:
            on_reply(text)
        return text

    def _post(
        self,
        method: str,
        body: Mapping[str, Any],
        roles: Sequence[str],
        *,
        pandaid: int | None = None,
        bug_500: str | None = None,
        repeatable: bool = True,
    ) -> str:
        if self._legacy:
            form = {key: _form_value(value) for key, value in body.items() if value is not None}
            return self._request(
                "POST", method, roles, pandaid=pandaid, data=form, repeatable=repeatable
            )
        return self._request(
            "POST",
            method,
            roles,
            pandaid=pandaid,
            json_body=dict(body),
            bug_500=bug_500,
            repeatable=repeatable,
        )

    def _get(self, method: str, params: Mapping[str, Any], roles: Sequence[str]) -> str:
        return self._request("GET", method, roles, params=dict(params))

    def _request(
        self,
        http_method: str,
        method: str,
        roles: Sequence[str],
        *,
        pandaid: int | None = None,
        data: Mapping[str, str] | None = None,
        json_body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        bug_500: str | None = None,
        repeatable: bool = True,
    ) -> str:
        """The reply text of a 200 answer; retries transport errors (only those where PanDA
        certainly did not act unless ``repeatable``)."""
        prefix = "/server/panda/" if self._legacy else "/api/v1/"
        url = self._base + prefix + method
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
                    pandaid=pandaid,
                    data=data,
                    json_body=json_body,
                    params=params,
                    bug_500=bug_500,
                )
            except PandaTransportError as error:
                if attempt == attempts or not (repeatable or error.unsent):
                    raise
                delay = backoff(self.settings.backoff, self.settings.backoff_max, attempt)
                log = job_log(self.log, pandaid=pandaid) if pandaid is not None else self.log
                if self._stop.is_set():
                    raise
                log.warning("%s; retry %d of %d in %.1fs", error, attempt, attempts - 1, delay)
                if self._stop.wait(delay):
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
        pandaid: int | None,
        data: Mapping[str, str] | None,
        json_body: Mapping[str, Any] | None,
        params: Mapping[str, Any] | None,
        bug_500: str | None,
    ) -> str:
        try:
            response = self._session.request(
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
                pandaid=pandaid,
                unsent=_unsent(error),
                kind=_transport_kind(error),
            ) from None
        status = response.status_code
        text = response.text
        if status == 200:
            if _server_timeout(text):
                raise PandaTransportError(
                    method,
                    f"server-side timeout: {_excerpt(text)}",
                    pandaid=pandaid,
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
                    _excerpt(text, 80),
                )
            return _BUG_SEEN
        cause = f"HTTP {status}: {_excerpt(text)}"
        if status >= 500:
            raise PandaTransportError(
                method, cause, pandaid=pandaid, unsent=status in (502, 503), kind="http_5xx"
            )
        if status in (401, 403) and (status == 401 or _is_auth_text(text)):
            raise PandaAuthError(method, cause, pandaid=pandaid)
        raise PandaRefused(method, cause, pandaid=pandaid)

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
            self._session.close()

    # -- replies ----------------------------------------------------------------------------

    def _new_fields(self, update: JobUpdate) -> dict[str, Any]:
        converted = for_new_api(update.fields)
        self._log_left_out(update.pandaid, "new", converted)
        body = converted.values
        body["job_id"] = update.pandaid
        body["job_status"] = update.state
        if update.attempt is not None:
            body["attempt_nr"] = update.attempt
        return body

    def _legacy_fields(self, update: JobUpdate) -> dict[str, Any]:
        converted = for_legacy_api(update.fields)
        self._log_left_out(update.pandaid, "legacy", converted)
        fields: dict[str, Any] = converted.values
        fields["jobId"] = str(update.pandaid)
        fields["state"] = update.state
        if update.attempt is not None:
            fields["attemptNr"] = str(update.attempt)
        return fields

    def _log_left_out(self, pandaid: int, api: str, converted: Fields) -> None:
        """Names the API does not take are expected (debug); values it would refuse are not
        (warning): either would make PanDA refuse the whole update, so neither is sent."""
        log = job_log(self.log, pandaid=pandaid)
        if converted.dropped:
            log.debug(
                "fields the %s API does not take, not sent: %s",
                api,
                ", ".join(sorted(converted.dropped)),
            )
        for problem in converted.refused:
            log.warning("field not sent (the %s API would refuse it): %s", api, problem)

    def _check_legacy_code(
        self, call: str, code: int, reply: Mapping[str, Any], *, pandaid: int | None = None
    ) -> None:
        if code == 0:
            return
        cause = f"StatusCode {code}"
        dialog = reply.get("errorDialog") or reply.get("message")
        if dialog:
            cause += f": {_excerpt(str(dialog))}"
        if code in (60, 70, 90):
            raise PandaAuthError(call, cause, pandaid=pandaid)
        if code == 10:
            raise PandaTransportError(
                call, cause + " (server-side timeout)", pandaid=pandaid, kind="server_timeout"
            )
        raise PandaRefused(call, cause, pandaid=pandaid)

    def _refuse(
        self, call: str, envelope: Mapping[str, Any], *, pandaid: int | None = None
    ) -> None:
        message = str(envelope.get("message") or "success=false")
        data = envelope.get("data")
        code = data.get("StatusCode") if isinstance(data, dict) else None
        if _is_auth(envelope) or code in (60, 70, 90):
            raise PandaAuthError(call, message, pandaid=pandaid)
        if code == 10 or message.lower().startswith("timed out"):
            raise PandaTransportError(call, message, pandaid=pandaid, kind="server_timeout")
        raise PandaRefused(
            call, f"{message} (StatusCode {code})" if code else message, pandaid=pandaid
        )


class _BugSeen(str):
    __slots__ = ()


_BUG_SEEN = _BugSeen("")


# -- helpers (module level: pure functions) -----------------------------------------------------


def _roles_for_label(label: str | None) -> list[str]:
    return ["pilot", "production"] if label in _PILOT_LABELS else ["production", "pilot"]


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
    return f"{type(error).__name__}: {_excerpt(text)}"


def _excerpt(text: str, limit: int = EXCERPT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def _reply_error(call: str, what: str, text: str, pandaid: int | None = None) -> PandaReplyError:
    return PandaReplyError(call, f"{what}; reply: {_excerpt(text)!r}", pandaid=pandaid)


def _is_auth_text(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _AUTH_WORDS)


def _is_auth(envelope: Mapping[str, Any]) -> bool:
    return _is_auth_text(str(envelope.get("message", "")))


def _envelope(call: str, text: str, *, pandaid: int | None = None) -> dict[str, Any]:
    try:
        reply = json.loads(text)
    except ValueError:
        raise _reply_error(call, "not JSON", text, pandaid) from None
    if not isinstance(reply, dict) or not isinstance(reply.get("success"), bool):
        raise _reply_error(call, "no {success, message, data} envelope", text, pandaid)
    return reply


def _legacy_reply(call: str, text: str, *, pandaid: int | None = None) -> dict[str, Any]:
    """A legacy reply as a dict: JSON, or URL-encoded ``key=value&...``."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            reply = json.loads(stripped)
        except ValueError:
            raise _reply_error(call, "not JSON", text, pandaid) from None
        if not isinstance(reply, dict):
            raise _reply_error(call, "not an object", text, pandaid)
        return reply
    if not re.match(r"^[A-Za-z_][\w.]*=", stripped):
        raise _reply_error(call, "neither JSON nor URL-encoded", text, pandaid)
    return dict(parse_qsl(stripped, keep_blank_values=True))


def _status_code(call: str, reply: Mapping[str, Any], *, pandaid: int | None = None) -> int:
    code = reply.get("StatusCode")
    if isinstance(code, bool):
        code = None
    if isinstance(code, str) and code.strip().lstrip("-").isdigit():
        code = int(code)
    if not isinstance(code, int):
        raise PandaReplyError(call, f"no StatusCode in the reply: {code!r}", pandaid=pandaid)
    return code


def _pandaid(call: str, spec: Mapping[str, Any], raw: str) -> int:
    pandaid = pandaid_of(spec)
    if pandaid is None:
        raise _reply_error(call, f"a job has no valid PandaID ({spec.get('PandaID')!r})", raw)
    return pandaid


def _jobs_from_json(call: str, text: str, path: Sequence[str]) -> list[AcquiredJob]:
    """The jobs at ``path`` in a JSON reply, each with its exact text."""
    try:
        slices = raw_array_items(text, path)
    except ValueError as error:
        raise _reply_error(call, f"cannot read the job list ({error})", text) from None
    jobs = []
    for raw in slices:
        spec = json.loads(raw)
        if not isinstance(spec, dict):
            raise _reply_error(call, "a job is not an object", text)
        jobs.append(AcquiredJob(_pandaid(call, spec, raw), spec, raw))
    return jobs


def _legacy_jobs(text: str, reply: Mapping[str, Any]) -> list[AcquiredJob]:
    stripped = text.strip()
    is_json = stripped.startswith("{")
    if "jobs" in reply:
        jobs = reply["jobs"]
        if is_json:
            if not isinstance(jobs, list):
                raise _reply_error("getJob", "jobs is not a list", text)
            return _jobs_from_json("getJob", stripped, ("jobs",))
        if not isinstance(jobs, str):
            raise _reply_error("getJob", "jobs is not text", text)
        return _jobs_from_json("getJob", jobs, ())
    if "PandaID" not in reply:
        raise _reply_error("getJob", "StatusCode 0 but no job", text)
    spec = dict(reply)
    pandaid = _pandaid("getJob", spec, text)
    if is_json:
        return [AcquiredJob(pandaid, spec, stripped)]
    return [AcquiredJob(pandaid, spec, stripped, "urlencoded")]


def _server_timeout(text: str) -> bool:
    """True for a reply saying PanDA timed out (StatusCode 10, "Timed out"): worth a retry."""
    if "Timed out" not in text and not _CODE_10.search(text):
        return False
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            reply = json.loads(stripped)
        except ValueError:
            return False
        if not isinstance(reply, dict):
            return False
        data = reply.get("data")
        code = data.get("StatusCode") if isinstance(data, dict) else reply.get("StatusCode")
        message = str(reply.get("message", ""))
        return code == 10 or (reply.get("success") is False and message.startswith("Timed out"))
    return stripped.startswith("StatusCode=10&") or stripped == "StatusCode=10"


def _panda_time(value: datetime) -> str:
    """PanDA's time format, in UTC (a naive datetime is refused, never guessed)."""
    return panda_text(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _panda_time(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _form_value(value: Any) -> str:
    return form_text(value)


def _as_int(value: int | str) -> int | str:
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _norm_status(status: str) -> str:
    return NOT_FOUND if status.replace(" ", "") == NOT_FOUND else status


def _command(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return None if text in _COMMANDS_NONE else text


def _new_update_result(call: str, pandaid: int, envelope: Mapping[str, Any]) -> UpdateResult:
    data = envelope.get("data")
    code = data.get("StatusCode") if isinstance(data, dict) else None
    command = _command(data.get("command")) if isinstance(data, dict) else None
    if envelope.get("success") is True and code in (0, None):
        return UpdateResult(pandaid, True, command, None)
    message = str(envelope.get("message") or "refused")
    error = f"{message} (StatusCode {code})" if code is not None else message
    return UpdateResult(pandaid, False, command, error)


def _legacy_update_result(call: str, pandaid: int, text: str) -> UpdateResult:
    reply = _legacy_reply(call, text, pandaid=pandaid)
    code = _status_code(call, reply, pandaid=pandaid)
    if code in (60, 70, 90):
        raise PandaAuthError(call, f"StatusCode {code}", pandaid=pandaid)
    if code == 10:
        raise PandaTransportError(
            call, "StatusCode 10 (server-side timeout)", pandaid=pandaid, kind="server_timeout"
        )
    command = _command(reply.get("command"))
    if code == 0:
        return UpdateResult(pandaid, True, command, None)
    dialog = reply.get("errorDialog")
    error = f"StatusCode {code}" + (f": {_excerpt(str(dialog))}" if dialog else "")
    return UpdateResult(pandaid, False, command, error)


def _legacy_bulk_results(text: str, updates: Sequence[JobUpdate]) -> list[UpdateResult]:
    call = "updateJobsInBulk"
    try:
        reply = json.loads(text)
    except ValueError:
        raise _reply_error(call, "not JSON", text) from None
    if (
        not isinstance(reply, list)
        or len(reply) != 2
        or not isinstance(reply[0], bool)
        or not isinstance(reply[1], list)
    ):
        raise _reply_error(call, "not [ok, [replies]]", text)
    ok, items = reply
    if not ok:
        raise PandaRefused(call, f"the server refused the bulk update: {_excerpt(text)}")
    if len(items) != len(updates):
        raise _reply_error(call, f"{len(items)} results for {len(updates)} jobs", text)
    results = []
    for update, item in zip(updates, items, strict=True):
        item_text = item if isinstance(item, str) else json.dumps(item)
        results.append(_legacy_update_result(call, update.pandaid, item_text))
    return results
