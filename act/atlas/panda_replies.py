"""Reading PanDA's replies, both wire formats: the new API's ``{success, message, data}``
envelope, the legacy API's URL-encoded or JSON replies, the jobs handed out (each with its exact
text), heartbeat results, and which error a refusal or a bad reply is (auth, transport, refused,
unreadable). Pure functions of the reply text, used by :class:`act.atlas.panda_client.PandaClient`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl

from act.atlas.panda_errors import (
    PandaAuthError,
    PandaRefused,
    PandaReplyError,
    PandaTransportError,
)
from act.atlas.panda_id import panda_id_of
from act.atlas.panda_types import AcquiredJob, JobUpdate, UpdateResult
from act.atlas.rawjson import raw_array_items

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
_CODE_10 = re.compile(r'(^|&)StatusCode=10(&|$)|"StatusCode"\s*:\s*10\b')


def excerpt(text: str, limit: int = EXCERPT) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "..."


def reply_error(call: str, what: str, text: str, panda_id: int | None = None) -> PandaReplyError:
    return PandaReplyError(call, f"{what}; reply: {excerpt(text)!r}", panda_id=panda_id)


def is_auth_text(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in _AUTH_WORDS)


def is_auth(envelope: Mapping[str, Any]) -> bool:
    return is_auth_text(str(envelope.get("message", "")))


def envelope(call: str, text: str, *, panda_id: int | None = None) -> dict[str, Any]:
    try:
        reply = json.loads(text)
    except ValueError:
        raise reply_error(call, "not JSON", text, panda_id) from None
    if not isinstance(reply, dict) or not isinstance(reply.get("success"), bool):
        raise reply_error(call, "no {success, message, data} envelope", text, panda_id)
    return reply


def legacy_reply(call: str, text: str, *, panda_id: int | None = None) -> dict[str, Any]:
    """A legacy reply as a dict: JSON, or URL-encoded ``key=value&...``."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            reply = json.loads(stripped)
        except ValueError:
            raise reply_error(call, "not JSON", text, panda_id) from None
        if not isinstance(reply, dict):
            raise reply_error(call, "not an object", text, panda_id)
        return reply
    if not re.match(r"^[A-Za-z_][\w.]*=", stripped):
        raise reply_error(call, "neither JSON nor URL-encoded", text, panda_id)
    return dict(parse_qsl(stripped, keep_blank_values=True))


def status_code(call: str, reply: Mapping[str, Any], *, panda_id: int | None = None) -> int:
    code = reply.get("StatusCode")
    if isinstance(code, bool):
        code = None
    if isinstance(code, str) and code.strip().lstrip("-").isdigit():
        code = int(code)
    if not isinstance(code, int):
        raise PandaReplyError(call, f"no StatusCode in the reply: {code!r}", panda_id=panda_id)
    return code


def job_panda_id(call: str, spec: Mapping[str, Any], raw: str) -> int:
    panda_id = panda_id_of(spec)
    if panda_id is None:
        raise reply_error(call, f"a job has no valid PandaID ({spec.get('PandaID')!r})", raw)
    return panda_id


def jobs_from_json(call: str, text: str, path: Sequence[str]) -> list[AcquiredJob]:
    """The jobs at ``path`` in a JSON reply, each with its exact text."""
    try:
        slices = raw_array_items(text, path)
    except ValueError as error:
        raise reply_error(call, f"cannot read the job list ({error})", text) from None
    jobs = []
    for raw in slices:
        spec = json.loads(raw)
        if not isinstance(spec, dict):
            raise reply_error(call, "a job is not an object", text)
        jobs.append(AcquiredJob(job_panda_id(call, spec, raw), spec, raw))
    return jobs


def legacy_jobs(text: str, reply: Mapping[str, Any]) -> list[AcquiredJob]:
    stripped = text.strip()
    is_json = stripped.startswith("{")
    if "jobs" in reply:
        jobs = reply["jobs"]
        if is_json:
            if not isinstance(jobs, list):
                raise reply_error("getJob", "jobs is not a list", text)
            return jobs_from_json("getJob", stripped, ("jobs",))
        if not isinstance(jobs, str):
            raise reply_error("getJob", "jobs is not text", text)
        return jobs_from_json("getJob", jobs, ())
    if "PandaID" not in reply:
        raise reply_error("getJob", "StatusCode 0 but no job", text)
    spec = dict(reply)
    panda_id = job_panda_id("getJob", spec, text)
    if is_json:
        return [AcquiredJob(panda_id, spec, stripped)]
    return [AcquiredJob(panda_id, spec, stripped, "urlencoded")]


def server_timeout(text: str) -> bool:
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


def norm_status(status: str) -> str:
    return NOT_FOUND if status.replace(" ", "") == NOT_FOUND else status


def command_of(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return None if text in _COMMANDS_NONE else text


def new_update_result(call: str, panda_id: int, envelope: Mapping[str, Any]) -> UpdateResult:
    data = envelope.get("data")
    code = data.get("StatusCode") if isinstance(data, dict) else None
    command = command_of(data.get("command")) if isinstance(data, dict) else None
    if envelope.get("success") is True and code in (0, None):
        return UpdateResult(panda_id, True, command, None)
    message = str(envelope.get("message") or "refused")
    error = f"{message} (StatusCode {code})" if code is not None else message
    return UpdateResult(panda_id, False, command, error)


def legacy_update_result(call: str, panda_id: int, text: str) -> UpdateResult:
    reply = legacy_reply(call, text, panda_id=panda_id)
    code = status_code(call, reply, panda_id=panda_id)
    if code in (60, 70, 90):
        raise PandaAuthError(call, f"StatusCode {code}", panda_id=panda_id)
    if code == 10:
        raise PandaTransportError(
            call, "StatusCode 10 (server-side timeout)", panda_id=panda_id, kind="server_timeout"
        )
    command = command_of(reply.get("command"))
    if code == 0:
        return UpdateResult(panda_id, True, command, None)
    dialog = reply.get("errorDialog")
    error = f"StatusCode {code}" + (f": {excerpt(str(dialog))}" if dialog else "")
    return UpdateResult(panda_id, False, command, error)


def legacy_bulk_results(text: str, updates: Sequence[JobUpdate]) -> list[UpdateResult]:
    call = "updateJobsInBulk"
    try:
        reply = json.loads(text)
    except ValueError:
        raise reply_error(call, "not JSON", text) from None
    if (
        not isinstance(reply, list)
        or len(reply) != 2
        or not isinstance(reply[0], bool)
        or not isinstance(reply[1], list)
    ):
        raise reply_error(call, "not [ok, [replies]]", text)
    ok, items = reply
    if not ok:
        raise PandaRefused(call, f"the server refused the bulk update: {excerpt(text)}")
    if len(items) != len(updates):
        raise reply_error(call, f"{len(items)} results for {len(updates)} jobs", text)
    results = []
    for update, item in zip(updates, items, strict=True):
        item_text = item if isinstance(item, str) else json.dumps(item)
        results.append(legacy_update_result(call, update.panda_id, item_text))
    return results


def check_legacy_code(
    call: str, code: int, reply: Mapping[str, Any], *, panda_id: int | None = None
) -> None:
    if code == 0:
        return
    cause = f"StatusCode {code}"
    dialog = reply.get("errorDialog") or reply.get("message")
    if dialog:
        cause += f": {excerpt(str(dialog))}"
    if code in (60, 70, 90):
        raise PandaAuthError(call, cause, panda_id=panda_id)
    if code == 10:
        raise PandaTransportError(
            call, cause + " (server-side timeout)", panda_id=panda_id, kind="server_timeout"
        )
    raise PandaRefused(call, cause, panda_id=panda_id)


def refuse(call: str, envelope: Mapping[str, Any], *, panda_id: int | None = None) -> None:
    message = str(envelope.get("message") or "success=false")
    data = envelope.get("data")
    code = data.get("StatusCode") if isinstance(data, dict) else None
    if is_auth(envelope) or code in (60, 70, 90):
        raise PandaAuthError(call, message, panda_id=panda_id)
    if code == 10 or message.lower().startswith("timed out"):
        raise PandaTransportError(call, message, panda_id=panda_id, kind="server_timeout")
    raise PandaRefused(
        call, f"{message} (StatusCode {code})" if code else message, panda_id=panda_id
    )
