"""The test double's new API, ``/api/v1/<module>/<method>``, shaped like panda-server 1.0.4."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from act.atlas.update_fields import NEW_ARGS
from act.testing.panda.request import Request, json_reply
from act.testing.panda.store import NEW_JOB_STATES, JobStore

# panda-server 1.0.4 builds a set instead of a dict and fails to serialise it (seen live:
# "Type not serializable for {'Returns', '[false]', 'Commands', '{...}'}")
EVENT_BUG_TEXT = "Type not serializable for {{'Returns', '{returns}', 'Commands', '{commands}'}}"

# Arguments the new API's update_job accepts and the JSON type of each: panda-server 1.0.4's
# own table (act.atlas.update_fields.NEW_ARGS, checked against the real function by
# tests/test_update_fields.py); a wrong type refuses the whole update, as there.
UPDATE_ARGS = frozenset(NEW_ARGS)
UPDATE_INTS = frozenset(name for name, kind in NEW_ARGS.items() if kind == "int")
UPDATE_NUMBERS = frozenset(name for name, kind in NEW_ARGS.items() if kind == "number")
UPDATE_STRINGS = frozenset(name for name, kind in NEW_ARGS.items() if kind == "str")
ACQUIRE_ARGS = frozenset(
    {
        "site_name",
        "timeout",
        "memory",
        "disk_space",
        "prod_source_label",
        "node",
        "computing_element",
        "prod_user_id",
        "get_proxy_key",
        "task_id",
        "n_jobs",
        "background",
        "resource_type",
        "harvester_id",
        "worker_id",
        "scheduler_id",
        "job_type",
        "via_topic",
        "remaining_time",
        "target_architecture",
    }
)
ACQUIRE_INTS = frozenset({"memory", "disk_space", "task_id", "n_jobs", "worker_id", "timeout"})


def _update_types(params: Mapping[str, Any]) -> str | None:
    """The number and string arguments' types, as 1.0.4's request_validation checks them."""
    for name, value in params.items():
        if value is None:
            continue
        if name in UPDATE_NUMBERS and not isinstance(value, int | float):
            return f"Type error: '{name}' must be of type int | float, got {type(value).__name__}."
        if name in UPDATE_STRINGS and not isinstance(value, str):
            return f"Type error: '{name}' must be of type str, got {type(value).__name__}."
    return None


class NewApi:
    """``/api/v1/<module>/<method>``, shaped like panda-server 1.0.4."""

    POSTS = frozenset(
        {
            "pilot/acquire_jobs",
            "pilot/update_job",
            "pilot/update_jobs_bulk",
            "event/acquire_event_ranges",
            "event/update_event_ranges",
        }
    )
    GETS = frozenset({"pilot/get_job_status", "job/get_status", "system/is_alive"})

    def __init__(self, server: JobStore, request: Request) -> None:
        self.server = server
        self.request = request

    def reply(self, success: bool, message: str = "", data: Any = None) -> tuple[int, str, str]:
        envelope = {"success": success, "message": message, "data": data}
        if self.request.wants_json:
            return json_reply(envelope)
        return 200, "text/plain", str(envelope)  # the real server's Python repr

    def answer(self) -> tuple[int, str, str]:
        request = self.request
        method = request.method
        if method not in self.POSTS and method not in self.GETS:
            return 403, "text/plain", f"ERROR : method {method.split('/')[-1]} is forbidden"
        expected = "POST" if method in self.POSTS else "GET"
        if request.http_method != expected:
            return self.reply(False, f"expecting {expected}, received {request.http_method}")
        if request.body_error:
            return self.reply(False, request.body_error)
        handler = getattr(self, method.replace("/", "_"))
        result: tuple[int, str, str] = handler(request.params)
        return result

    def _types(
        self, params: Mapping[str, Any], allowed: frozenset[str], ints: frozenset[str]
    ) -> str | None:
        for name in params:
            if name not in allowed:
                return f"Argument error: got an unexpected keyword argument '{name}'"
        for name in ints:
            value = params.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                return f"Type error: '{name}' must be of type int, got {type(value).__name__}."
        return None

    def _role_refused(self) -> bool:
        return self.server.refuse_role

    def pilot_acquire_jobs(self, params: dict[str, Any]) -> tuple[int, str, str]:
        error = self._types(params, ACQUIRE_ARGS, ACQUIRE_INTS)
        if error:
            return self.reply(False, error)
        if "site_name" not in params:
            return self.reply(False, "Argument error: missing a required argument: 'site_name'")
        jobs = self.server._acquire(
            str(params["site_name"]), params.get("prod_source_label"), params.get("n_jobs", 1)
        )
        if jobs is None:
            return self.reply(False, "no production/pilot role in VOMS FQANs or non pilot owner")
        if not jobs:
            return self.reply(False, "No jobs in PanDA")
        return self.reply(True, "", {"StatusCode": 0, "jobs": jobs})

    def _one_update(self, params: Mapping[str, Any]) -> tuple[bool, str, Any]:
        error = self._types(params, UPDATE_ARGS, UPDATE_INTS) or _update_types(params)
        if error:
            return False, error, None
        if "job_id" not in params or "job_status" not in params:
            return False, "Argument error: missing a required argument: 'job_id'", None
        if params["job_status"] not in NEW_JOB_STATES:
            return False, f"Invalid job status: {params['job_status']}", {"StatusCode": 50}
        command = self.server._update(
            params["job_id"], params["job_status"], params.get("attempt_nr"), params
        )
        return True, "", {"StatusCode": 0, "command": command}

    def pilot_update_job(self, params: dict[str, Any]) -> tuple[int, str, str]:
        if self._role_refused():
            return self.reply(False, "production or pilot role required")
        return self.reply(*self._one_update(params))

    def pilot_update_jobs_bulk(self, params: dict[str, Any]) -> tuple[int, str, str]:
        if self._role_refused():
            return self.reply(False, "production or pilot role required")
        job_list = params.get("job_list")
        if not isinstance(job_list, list) or not all(isinstance(j, dict) for j in job_list):
            return self.reply(False, "Type error: 'job_list' must be of type list", [])
        for item in job_list:
            if self._types(item, UPDATE_ARGS, UPDATE_INTS) or "job_id" not in item:
                return self.reply(False, "failed to update jobs: malformed job in job_list", [])
        out = []
        for item in job_list:
            success, message, data = self._one_update(item)
            out.append({"success": success, "message": message, "data": data})
        return self.reply(True, "", out)

    def _job_ids(self, params: Mapping[str, Any]) -> list[int] | str:
        raw = params.get("job_ids", [])
        values = raw if isinstance(raw, list) else [raw]
        try:
            return [int(v) for v in values]
        except (TypeError, ValueError):
            return "Type error: 'job_ids' must be of type List[int]"

    def pilot_get_job_status(self, params: dict[str, Any]) -> tuple[int, str, str]:
        ids = self._job_ids(params)
        if isinstance(ids, str):
            return self.reply(False, ids)
        out = []
        for pid in ids:
            status, attempt, _ = self.server._status_of(pid)
            out.append({"job_id": pid, "status": status, "attempt_number": attempt})
        return self.reply(True, "", out)

    def job_get_status(self, params: dict[str, Any]) -> tuple[int, str, str]:
        ids = self._job_ids(params)
        if isinstance(ids, str):
            return self.reply(False, ids)
        out = []
        for pid in ids:
            status, _, command = self.server._status_of(pid)
            out.append({"status": status, "command": command})
        return self.reply(True, "", out)

    def system_is_alive(self, params: dict[str, Any]) -> tuple[int, str, str]:
        return self.reply(True, "", None)

    def event_acquire_event_ranges(self, params: dict[str, Any]) -> tuple[int, str, str]:
        if self._role_refused():
            return self.reply(False, "production or pilot role required")
        panda_id = params.get("job_id")
        if not isinstance(panda_id, int):
            return self.reply(False, "Type error: 'job_id' must be of type int")
        n = params.get("n_ranges", 10)
        return self.reply(True, "", self.server._acquire_ranges(panda_id, int(n)))

    def event_update_event_ranges(self, params: dict[str, Any]) -> tuple[int, str, str]:
        if self._role_refused():
            return self.reply(False, "production or pilot role required")
        text = params.get("event_ranges")
        if not isinstance(text, str):
            return self.reply(False, "Type error: 'event_ranges' must be of type str")
        try:
            ranges = json.loads(text)
        except ValueError:
            return self.reply(False, "failed to decode event_ranges")
        done = self.server._update_ranges(ranges if isinstance(ranges, list) else [])
        if self.server.event_ranges_bug:
            text = EVENT_BUG_TEXT.format(returns=json.dumps([True] * done), commands="{}")
            return 500, "text/plain", text
        return self.reply(True, "", {"Returns": [True] * len(ranges), "Commands": {}})
