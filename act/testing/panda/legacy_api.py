"""The test double's legacy API, ``/server/panda/<method>``, shaped like panda-server 0.8.1's
JobDispatcher."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from act.testing.panda.request import Request, json_reply
from act.testing.panda.store import NEW_JOB_STATES, JobStore


class LegacyApi:
    def __init__(self, server: JobStore, request: Request) -> None:
        self.server = server
        self.request = request

    @property
    def json_mode(self) -> bool:
        return self.server.legacy_accept_json and self.request.wants_json

    def reply(self, data: Mapping[str, Any]) -> tuple[int, str, str]:
        if self.json_mode:
            return json_reply(dict(data))
        flat = {k: v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}
        return 200, "text/plain", urlencode(flat)

    def answer(self) -> tuple[int, str, str]:
        method = self.request.method
        handler = getattr(self, f"m_{method}", None)
        if handler is None:
            return 403, "text/plain", f"ERROR : method {method} is forbidden"
        if self.request.http_method != "POST" and method != "isAlive":
            return 403, "text/plain", f"ERROR : method {method} needs POST"
        result: tuple[int, str, str] = handler(self.request.params)
        return result

    def m_isAlive(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        return 200, "text/plain", "alive=yes"

    def m_getJob(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        if "siteName" not in params:
            return self.reply({"StatusCode": 80, "errorDialog": "siteName is missing"})
        n_text = params.get("nJobs")
        try:
            n = int(n_text) if n_text is not None else 1
        except ValueError:
            return self.reply({"StatusCode": 50, "errorDialog": "nJobs is not an int"})
        jobs = self.server._acquire(params["siteName"], params.get("prodSourceLabel"), n)
        if jobs is None:
            return self.reply({"StatusCode": 60})
        if not jobs:
            data: dict[str, Any] = {"StatusCode": 20}
            if self.json_mode:
                data["errorDialog"] = "no jobs in PanDA"
            return self.reply(data)
        if n_text is not None:
            return self.reply({"StatusCode": 0, "jobs": jobs})
        job = jobs[0]
        if self.json_mode:
            return self.reply(job)
        return self.reply({k: "NULL" if v is None else str(v) for k, v in job.items()})

    def _legacy_update(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if self.server.refuse_role:
            return {"StatusCode": 60}
        try:
            panda_id = int(params["jobId"])
            attempt = int(params["attemptNr"]) if params.get("attemptNr") else None
        except (KeyError, ValueError):
            return {"StatusCode": 50}
        state = str(params.get("state", ""))
        if state not in NEW_JOB_STATES:
            return {"StatusCode": 0, "command": "NULL"}  # 0.8.1 silently ignores a bad state
        command = self.server._update(panda_id, state, attempt, params, legacy=True)
        return {"StatusCode": 0, "command": command}

    def m_updateJob(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        return self.reply(self._legacy_update(params))

    def m_updateJobsInBulk(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        try:
            job_list = json.loads(params.get("jobList", ""))
        except ValueError:
            return 200, "text/plain", json.dumps([False, "jobList is not JSON"])
        if not isinstance(job_list, list):
            return 200, "text/plain", json.dumps([False, "jobList is not a list"])
        replies = []
        for item in job_list:
            data = self._legacy_update(item if isinstance(item, dict) else {})
            replies.append(urlencode({k: str(v) for k, v in data.items()}))
        return 200, "text/plain", json.dumps([True, replies])

    def m_getStatus(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        statuses, attempts = [], []
        for pid in params.get("ids", "").split():
            try:
                status, attempt, _ = self.server._status_of(int(pid))
            except ValueError:
                status, attempt = "notfound", 0
            statuses.append(status.replace(" ", ""))
            attempts.append(str(attempt))
        return self.reply(
            {"StatusCode": 0, "status": " ".join(statuses), "attemptNr": " ".join(attempts)}
        )

    def m_getEventRanges(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        if self.server.refuse_role:
            return self.reply({"StatusCode": 60})
        try:
            panda_id, n = int(params["pandaID"]), int(params.get("nRanges", "10"))
        except (KeyError, ValueError):
            return self.reply({"StatusCode": 50})
        ranges = self.server._acquire_ranges(panda_id, n)
        return self.reply({"StatusCode": 0, "eventRanges": json.dumps(ranges)})

    def m_updateEventRanges(self, params: Mapping[str, str]) -> tuple[int, str, str]:
        if self.server.refuse_role:
            return self.reply({"StatusCode": 60})
        try:
            ranges = json.loads(params.get("eventRanges", ""))
        except ValueError:
            return self.reply({"StatusCode": 50})
        done = self.server._update_ranges(ranges if isinstance(ranges, list) else [])
        return self.reply(
            {"StatusCode": 0, "Returns": json.dumps([True] * done), "Command": "NULL"}
        )
