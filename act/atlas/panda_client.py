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

The session, credentials and retries are :mod:`act.atlas.panda_transport`'s; reading the
replies is :mod:`act.atlas.panda_replies`'s.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from act.atlas import panda_replies as replies
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
from act.atlas.panda_transport import BUG_SEEN, PandaTransport
from act.atlas.panda_types import AcquiredJob, JobUpdate, UpdateResult
from act.atlas.pilot_times import panda_text
from act.atlas.update_fields import LEGACY_TO_NEW, Fields, for_legacy_api, for_new_api
from act.common import metrics
from act.common.logs import job_log

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

_PILOT_LABELS = {"user", "panda"}
_EVENT_RANGES_BUG = "not serializable"  # panda-server 1.0.4's HTTP 500 after doing the update

#: New-API argument names (the legacy -> new mapping is in :mod:`act.atlas.update_fields`).
NEW_NAMES = frozenset(LEGACY_TO_NEW.values())


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
        self.credentials = credentials
        self.log = log or logging.getLogger("act.atlas.panda_client")
        self._legacy = settings.api == "legacy"
        self._transport = PandaTransport(settings, credentials, self.log, stop)

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
            reply = replies.legacy_reply("getJob", text)
            code = replies.status_code("getJob", reply)
            if code == 20:
                return []
            replies.check_legacy_code("getJob", code, reply)
            return replies.legacy_jobs(text, reply)
        body = {
            "site_name": queue,
            "prod_source_label": prod_source_label,
            "node": node,
            "n_jobs": n_jobs,
            **({"computing_element": computing_element} if computing_element else {}),
            **extra,
        }
        text = self._post_acquire("pilot/acquire_jobs", body, roles, on_reply)
        envelope = replies.envelope("pilot/acquire_jobs", text)
        if not envelope["success"]:
            if "no jobs" in str(envelope.get("message", "")).lower():
                return []
            replies.refuse("pilot/acquire_jobs", envelope)
        data = envelope.get("data")
        if not isinstance(data, dict):
            raise replies.reply_error("pilot/acquire_jobs", "data is not an object", text)
        code = data.get("StatusCode", 0)
        if code == 20:
            return []
        if code != 0:
            replies.check_legacy_code("pilot/acquire_jobs", code, data)
        return replies.jobs_from_json("pilot/acquire_jobs", text, ("data", "jobs"))

    @_measured("update_job")
    def update_job(self, update: JobUpdate, *, role: str | None = None) -> UpdateResult:
        """Send one heartbeat; a per-job refusal is a result with ``ok=False``, not an error."""
        roles = [role] if role else _roles_for_label(None)
        if self._legacy:
            text = self._transport.post(
                "updateJob", self._legacy_fields(update), roles, panda_id=update.panda_id
            )
            return replies.legacy_update_result("updateJob", update.panda_id, text)
        body = self._new_fields(update)
        text = self._transport.post("pilot/update_job", body, roles, panda_id=update.panda_id)
        envelope = replies.envelope("pilot/update_job", text, panda_id=update.panda_id)
        if not envelope["success"] and replies.is_auth(envelope):
            raise PandaAuthError(
                "pilot/update_job", str(envelope.get("message")), panda_id=update.panda_id
            )
        return replies.new_update_result("pilot/update_job", update.panda_id, envelope)

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
            text = self._transport.post("updateJobsInBulk", {"jobList": job_list}, roles)
            return replies.legacy_bulk_results(text, updates)
        body = {"job_list": [self._new_fields(update) for update in updates]}
        text = self._transport.post("pilot/update_jobs_bulk", body, roles)
        envelope = replies.envelope("pilot/update_jobs_bulk", text)
        if not envelope["success"]:
            replies.refuse("pilot/update_jobs_bulk", envelope)
        items = envelope.get("data")
        if not isinstance(items, list) or len(items) != len(updates):
            count = len(items) if isinstance(items, list) else "no list"
            raise replies.reply_error(
                "pilot/update_jobs_bulk", f"{count} results for {len(updates)} jobs", text
            )
        results = []
        for update, item in zip(updates, items, strict=True):
            if not isinstance(item, dict) or not isinstance(item.get("success"), bool):
                raise replies.reply_error("pilot/update_jobs_bulk", "a result is no envelope", text)
            results.append(
                replies.new_update_result("pilot/update_jobs_bulk", update.panda_id, item)
            )
        return results

    @_measured("get_job_status")
    def get_job_status(
        self, panda_ids: Sequence[int], *, role: str | None = None
    ) -> dict[int, str]:
        """PanDA's status of each job (``notfound`` for an unknown one)."""
        if not panda_ids:
            return {}
        roles = [role] if role else _roles_for_label(None)
        if self._legacy:
            text = self._transport.post("getStatus", {"ids": " ".join(map(str, panda_ids))}, roles)
            reply = replies.legacy_reply("getStatus", text)
            replies.check_legacy_code("getStatus", replies.status_code("getStatus", reply), reply)
            status = reply.get("status")
            values = status.split() if isinstance(status, str) else status
            if not isinstance(values, list) or len(values) != len(panda_ids):
                raise replies.reply_error("getStatus", "status list does not match the ids", text)
            pairs = zip(panda_ids, values, strict=True)
            return {pid: replies.norm_status(str(value)) for pid, value in pairs}
        text = self._transport.get("pilot/get_job_status", {"job_ids": list(panda_ids)}, roles)
        envelope = replies.envelope("pilot/get_job_status", text)
        if not envelope["success"]:
            replies.refuse("pilot/get_job_status", envelope)
        data = envelope.get("data")
        if not isinstance(data, list):
            raise replies.reply_error("pilot/get_job_status", "data is not a list", text)
        result: dict[int, str] = {}
        for item in data:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("job_id"), int)
                or not isinstance(item.get("status"), str)
            ):
                raise replies.reply_error(
                    "pilot/get_job_status", "an item lacks job_id/status", text
                )
            result[item["job_id"]] = replies.norm_status(item["status"])
        return result

    # -- event service -----------------------------------------------------------------------

    @_measured("acquire_event_ranges")
    def acquire_event_ranges(
        self,
        panda_id: int,
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
                "pandaID": panda_id,
                "jobsetID": jobset_id,
                "taskID": task_id,
                "nRanges": n_ranges,
                **extra,
            }
            text = self._transport.post(
                "getEventRanges", params, roles, panda_id=panda_id, repeatable=False
            )
            reply = replies.legacy_reply("getEventRanges", text, panda_id=panda_id)
            code = replies.status_code("getEventRanges", reply, panda_id=panda_id)
            replies.check_legacy_code("getEventRanges", code, reply, panda_id=panda_id)
            ranges: Any = reply.get("eventRanges", "[]")
            if isinstance(ranges, str):
                try:
                    ranges = json.loads(ranges)
                except ValueError:
                    raise replies.reply_error(
                        "getEventRanges", "eventRanges is not JSON", text, panda_id=panda_id
                    ) from None
        else:
            body = {
                "job_id": panda_id,
                "jobset_id": _as_int(jobset_id),
                "task_id": _as_int(task_id),
                "n_ranges": n_ranges,
                **extra,
            }
            text = self._transport.post(
                "event/acquire_event_ranges", body, roles, panda_id=panda_id, repeatable=False
            )
            envelope = replies.envelope("event/acquire_event_ranges", text, panda_id=panda_id)
            if not envelope["success"]:
                replies.refuse("event/acquire_event_ranges", envelope, panda_id=panda_id)
            ranges = envelope.get("data")
            if ranges is None:
                ranges = []
        if not isinstance(ranges, list) or not all(isinstance(r, dict) for r in ranges):
            raise replies.reply_error(
                "acquire_event_ranges", "event ranges are not a list of objects", text, panda_id
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
            text = self._transport.post("updateEventRanges", {"eventRanges": payload}, roles)
            reply = replies.legacy_reply("updateEventRanges", text)
            code = replies.status_code("updateEventRanges", reply)
            replies.check_legacy_code("updateEventRanges", code, reply)
            return
        text = self._transport.post(
            "event/update_event_ranges",
            {"event_ranges": payload},
            roles,
            bug_500=_EVENT_RANGES_BUG,
        )
        if text is BUG_SEEN:
            return
        envelope = replies.envelope("event/update_event_ranges", text)
        if not envelope["success"]:
            replies.refuse("event/update_event_ranges", envelope)

    # -- misc --------------------------------------------------------------------------------

    def is_alive(self) -> bool:
        """True if the server answers its liveness call (no retries). The production credential
        is presented if usable (a server may require a client certificate for the handshake)."""
        return self._transport.is_alive(_roles_for_label(None))

    def close(self) -> None:
        """Close the kept-alive connections."""
        self._transport.close()

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
        text = self._transport.post(method, body, roles, repeatable=False)
        if on_reply is not None:
            on_reply(text)
        return text

    # -- replies ----------------------------------------------------------------------------

    def _new_fields(self, update: JobUpdate) -> dict[str, Any]:
        converted = for_new_api(update.fields)
        self._log_left_out(update.panda_id, "new", converted)
        body = converted.values
        body["job_id"] = update.panda_id
        body["job_status"] = update.state
        if update.attempt is not None:
            body["attempt_nr"] = update.attempt
        return body

    def _legacy_fields(self, update: JobUpdate) -> dict[str, Any]:
        converted = for_legacy_api(update.fields)
        self._log_left_out(update.panda_id, "legacy", converted)
        fields: dict[str, Any] = converted.values
        fields["jobId"] = str(update.panda_id)
        fields["state"] = update.state
        if update.attempt is not None:
            fields["attemptNr"] = str(update.attempt)
        return fields

    def _log_left_out(self, panda_id: int, api: str, converted: Fields) -> None:
        """Names the API does not take are expected (debug); values it would refuse are not
        (warning): either would make PanDA refuse the whole update, so neither is sent."""
        log = job_log(self.log, panda_id=panda_id)
        if converted.dropped:
            log.debug(
                "fields the %s API does not take, not sent: %s",
                api,
                ", ".join(sorted(converted.dropped)),
            )
        for problem in converted.refused:
            log.warning("field not sent (the %s API would refuse it): %s", api, problem)


# -- helpers (module level: pure functions) -----------------------------------------------------


def _roles_for_label(label: str | None) -> list[str]:
    return ["pilot", "production"] if label in _PILOT_LABELS else ["production", "pilot"]


def _panda_time(value: datetime) -> str:
    """PanDA's time format, in UTC (a naive datetime is refused, never guessed)."""
    return panda_text(value)


def _dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _panda_time(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _as_int(value: int | str) -> int | str:
    return int(value) if isinstance(value, str) and value.isdigit() else value
