"""A thin client for the ARC CE REST interface (A-REX; REST 1.0 in ARC 6, 1.1 in ARC 7).

Why not pyarcrest: it does not verify the CE's certificate, and its delegation code needs
``cryptography<38`` against ARC 6.17. This client is one ``requests.Session`` (keep-alive),
``trust_env = False`` so that ``REQUESTS_CA_BUNDLE`` cannot replace the CE's CA, the server
certificate verified against ``ca`` (a file or a hashed directory) or the system's CAs, the X509
proxy as client certificate, and a timeout on every call.

Errors:

* :class:`~act.engine.backend.CEUnavailable` when the CE does not answer as a whole: connection
  refused or reset, TLS failure, timeout, HTTP 5xx/429 on the whole request, a reply that is not
  the JSON expected;
* :class:`RestError` for a definite answer about one thing (a 4xx on a file, a delegation);
* per-job results (:class:`JobResult`) for the bulk calls: the CE answers 201 with one
  ``{"status-code": "404", ...}`` per job, and every one of them is returned, never raised.

Quirks of REST 1.0 handled here: a one-element list comes as an object and an empty list as an
empty body (:func:`as_list`); ``status-code`` is a string; the ``Location`` of a new delegation
carries the query string (its last path segment is the id).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
import urllib3
from requests.adapters import HTTPAdapter

from act.engine.backend import CEUnavailable

#: REST versions this client speaks, oldest first.
SUPPORTED = ("1.0", "1.1")
ACTIONS = ("status", "info", "kill", "clean", "restart", "delegations")
#: HTTP statuses with which A-REX refuses a request before acting on it.
NOT_TAKEN = (401, 403, 408, 429)


class RestError(RuntimeError):
    """The CE answered a single request with an error (not a transport failure)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text}")
        self.status = status
        self.text = text


class SubmitRejected(CEUnavailable):
    """A-REX answered a whole submission with HTTP 500 (it does so when one of a bulk's
    descriptions is bad; nothing of the batch was created)."""

    def __init__(self, ce: str, cause: str) -> None:
        super().__init__(ce, cause, maybe_sent=False)


@dataclass(frozen=True)
class JobResult:
    """One job's part of a bulk reply."""

    id: str
    code: int
    reason: str
    state: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def gone(self) -> bool:
        return self.code == 404


def as_list(value: Any) -> list[Any]:
    """REST 1.0 sends a one-element list as the element itself, and no list as nothing."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return value
    return [value]


def _code(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def job_result(item: Any) -> JobResult:
    if not isinstance(item, dict):
        raise ValueError(f"a job entry is not an object: {item!r:.200}")
    state = item.get("state")
    return JobResult(
        id=str(item.get("id") or ""),
        code=_code(item.get("status-code")),
        reason=str(item.get("reason") or ""),
        state=str(state) if state not in (None, "", "None") else None,
        raw=item,
    )


def parse_jobs(body: Any, *, skip_garbled: bool = False) -> list[JobResult]:
    """The per-job entries of a bulk reply (``{"job": obj | [obj, ...]}``, or empty).
    ``skip_garbled``: an entry that is not an object is left out (it names no job, so the
    caller sees that job unanswered) instead of making the whole reply unreadable."""
    if body in (None, "", {}):
        return []
    if not isinstance(body, dict):
        raise ValueError(f"a bulk reply is not an object: {body!r:.200}")
    items = as_list(body.get("job"))
    if skip_garbled:
        items = [item for item in items if isinstance(item, dict)]
    return [job_result(item) for item in items]


class ArcRest:
    """One CE's REST endpoint, e.g. ``https://ce.example.org:443/arex``."""

    def __init__(
        self,
        url: str,
        *,
        name: str | None = None,
        credential: str | None = None,
        ca: str | None = None,
        timeout: float = 60.0,
        version: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.name = name or self.url
        self.timeout = timeout
        self.created_calls = 0  # submit calls A-REX accepted (201), over this client's life
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE must not replace our CA
        self.session.verify = ca if ca else True
        if credential:
            self.session.cert = (credential, credential)
        self.session.headers.update({"Accept": "application/json", "User-Agent": "act"})
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=4, max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        if version is not None and version not in SUPPORTED:
            raise ValueError(f"unsupported ARC REST version {version!r} (known: {SUPPORTED})")
        self._version = version

    # ------------------------------------------------------------------ transport ---
    def _request(
        self,
        method: str,
        path: str,
        *,
        ok: tuple[int, ...] = (200, 201, 202),
        whole: bool = False,
        **kwargs: Any,
    ) -> requests.Response:
        """One call; ``whole``: the call is about the CE as a whole (bulk, lists), so any error
        status means the CE cannot be used (wrong URL or version, refused), not one job."""
        url = path if path.startswith("https://") else f"{self.url}{path}"
        kwargs.setdefault("timeout", self.timeout)
        try:
            reply = self.session.request(method, url, **kwargs)
        except requests.exceptions.SSLError as error:
            # the handshake failed: nothing was sent
            raise CEUnavailable(
                self.name, f"TLS failure: {_short(error)}", maybe_sent=False
            ) from None
        except requests.exceptions.Timeout as error:
            raise CEUnavailable(
                self.name, f"timeout after {self.timeout:g}s", maybe_sent=_maybe_sent(error)
            ) from None
        except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError) as e:
            raise CEUnavailable(
                self.name, f"connection failed: {_short(e)}", maybe_sent=_maybe_sent(e)
            ) from None
        except requests.exceptions.RequestException as error:
            raise CEUnavailable(self.name, f"request failed: {_short(error)}") from None
        if reply.status_code in ok:
            return reply
        text = _reply_text(reply)
        if whole or reply.status_code >= 500 or reply.status_code in NOT_TAKEN:
            # The whole CE (or our authorisation at it) is at fault, not one job. A 5xx may
            # come after A-REX took part of a batch; the statuses of NOT_TAKEN refuse a request
            # before it is processed.
            reply.close()
            raise CEUnavailable(
                self.name,
                f"HTTP {reply.status_code} on {method} {path}: {text}",
                maybe_sent=reply.status_code not in NOT_TAKEN,
            )
        reply.close()
        raise RestError(reply.status_code, text)

    def _json(self, reply: requests.Response) -> Any:
        if not reply.content:
            return None
        try:
            return reply.json()
        except ValueError:
            raise CEUnavailable(self.name, f"reply is not JSON: {reply.text[:200]!r}") from None

    @property
    def version(self) -> str:
        """The REST version used: configured, or the highest both sides speak."""
        if self._version is None:
            offered = set(self.versions())
            common = [v for v in SUPPORTED if v in offered]
            if not common:
                raise CEUnavailable(self.name, f"no common REST version (CE offers {offered})")
            self._version = common[-1]
        return self._version

    @property
    def base(self) -> str:
        return f"/rest/{self.version}"

    def versions(self) -> list[str]:
        body = self._json(self._request("GET", "/rest", whole=True))
        if not isinstance(body, dict):
            raise CEUnavailable(self.name, f"unexpected versions reply {body!r:.200}")
        return [str(v) for v in as_list(body.get("version"))]

    def close(self) -> None:
        self.session.close()

    # ----------------------------------------------------------------------- jobs ---
    def submit(self, descriptions: Sequence[str]) -> list[JobResult]:
        """Create jobs in one call from xRSL (``&(...)``) or ADL (``<ActivityDescription>``)
        descriptions, all of one kind; one result each, in order.

        Raises :class:`SubmitRejected` when A-REX refuses the call as a whole, and
        :class:`CEUnavailable` if the reply does not hold one entry per description.
        """
        if not descriptions:
            return []
        texts = [d.strip() for d in descriptions]
        if all(t.startswith("&") for t in texts):
            body = texts[0] if len(texts) == 1 else "+" + "".join(f"({t})" for t in texts)
            content_type = "application/rsl"
        elif all(t.startswith("<") for t in texts):
            if len(texts) == 1:
                body = texts[0]
            else:
                inner = "".join(_strip_xml_declaration(t) for t in texts)
                body = f"<ActivityDescriptions>{inner}</ActivityDescriptions>"
            content_type = "application/xml"
        else:
            raise ValueError("descriptions must all be xRSL ('&...') or all ADL ('<...')")
        reply = self._request(
            "POST",
            f"{self.base}/jobs?action=new",
            data=body.encode("utf-8"),
            headers={"Content-Type": content_type},
            ok=(201, 500),
            whole=True,
        )
        if reply.status_code == 500:
            text = _reply_text(reply)
            reply.close()
            raise SubmitRejected(self.name, f"HTTP 500 on submit: {text or '(no reason given)'}")
        self.created_calls += 1  # A-REX took the call: jobs may exist from here on
        try:
            results = parse_jobs(self._json(reply))
        except ValueError as error:
            raise CEUnavailable(self.name, f"bad submit reply: {error}") from None
        if len(results) != len(texts):
            raise CEUnavailable(
                self.name,
                f"submit of {len(texts)} jobs answered with {len(results)} results: "
                + "; ".join(f"{r.code} {r.reason}" for r in results)[:300],
            )
        return results

    def action(self, action: str, ids: Sequence[str]) -> dict[str, JobResult]:
        """``POST /jobs?action=<action>`` for a batch; results by job id (missing: not answered)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown job action {action!r}")
        if not ids:
            return {}
        jobs: Any = [{"id": i} for i in ids]
        payload = {"job": jobs[0] if len(jobs) == 1 else jobs}
        reply = self._request(
            "POST",
            f"{self.base}/jobs?action={action}",
            data=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
            ok=(200, 201, 202),
            whole=True,
        )
        try:
            results = parse_jobs(self._json(reply), skip_garbled=True)
        except ValueError as error:
            raise CEUnavailable(self.name, f"bad {action} reply: {error}") from None
        return {r.id: r for r in results if r.id in set(ids)}

    def status(self, ids: Sequence[str]) -> dict[str, JobResult]:
        return self.action("status", ids)

    def info(self, ids: Sequence[str]) -> dict[str, JobResult]:
        return self.action("info", ids)

    def kill(self, ids: Sequence[str]) -> dict[str, JobResult]:
        return self.action("kill", ids)

    def clean(self, ids: Sequence[str]) -> dict[str, JobResult]:
        return self.action("clean", ids)

    def restart(self, ids: Sequence[str]) -> dict[str, JobResult]:
        return self.action("restart", ids)

    def jobs(self) -> list[str]:
        """The ids of every job this credential has at the CE."""
        body = self._json(self._request("GET", f"{self.base}/jobs", whole=True))
        try:
            return [r.id for r in parse_jobs(body) if r.id]
        except ValueError as error:
            raise CEUnavailable(self.name, f"bad job list: {error}") from None

    # ---------------------------------------------------------------------- files ---
    def listing(self, job_id: str, path: str = "") -> tuple[list[str], list[str]]:
        """Files and directories in a job's session directory (``path`` relative to it)."""
        reply = self._request("GET", f"{self.base}/jobs/{_seg(job_id)}/session/{_path(path)}")
        body = self._json(reply)
        if body is None:
            return [], []
        if not isinstance(body, dict):
            raise CEUnavailable(self.name, f"bad session listing {body!r:.200}")
        files = [str(f) for f in as_list(body.get("file"))]
        dirs = [str(d) for d in as_list(body.get("dirs", body.get("dir")))]
        return files, dirs

    def download(self, job_id: str, path: str, handle: Any, max_bytes: int) -> int:
        """Stream one session file into ``handle``; refuse more than ``max_bytes``."""
        reply = self._request(
            "GET", f"{self.base}/jobs/{_seg(job_id)}/session/{_path(path)}", stream=True
        )
        return _copy(self.name, reply, handle, max_bytes, path)

    def upload(self, job_id: str, name: str, source: Path) -> None:
        """``PUT`` a local file into a job's session directory (stage-in)."""
        with open(source, "rb") as handle:
            self._request(
                "PUT",
                f"{self.base}/jobs/{_seg(job_id)}/session/{_path(name)}",
                data=handle,
                headers={"Content-Type": "application/octet-stream"},
                ok=(200, 201, 204),
            )

    def diagnose(self, job_id: str, name: str, max_bytes: int = 1 << 20) -> str | None:
        """A job's diagnostic file (``errors``, ``failed``, ...), or None if it has none."""
        try:
            reply = self._request(
                "GET", f"{self.base}/jobs/{_seg(job_id)}/diagnose/{_seg(name)}", stream=True
            )
        except RestError as error:
            if error.status == 404:
                return None
            raise
        chunks = bytearray()
        try:
            for chunk in reply.iter_content(65536):
                chunks += chunk
                if len(chunks) > max_bytes:
                    del chunks[max_bytes:]
                    break
        except requests.exceptions.RequestException as error:
            raise CEUnavailable(self.name, f"diagnose download failed: {_short(error)}") from None
        finally:
            reply.close()
        return chunks.decode("utf-8", "replace")

    # ---------------------------------------------------------------- delegations ---
    def new_delegation(self) -> tuple[str, str]:
        """Ask the CE for a new delegation: its id and the CSR to sign."""
        reply = self._request(
            "POST", f"{self.base}/delegations?action=new", ok=(200, 201), whole=True
        )
        location = reply.headers.get("Location", "")
        delegation_id = location.rstrip("/").rsplit("/", 1)[-1]
        if not delegation_id or "?" in delegation_id or "=" in delegation_id:
            raise CEUnavailable(self.name, f"new delegation without a usable id ({location!r})")
        return delegation_id, reply.text

    def put_delegation(self, delegation_id: str, pem: bytes) -> None:
        self._request(
            "PUT",
            f"{self.base}/delegations/{_seg(delegation_id)}",
            data=pem,
            headers={"Content-Type": "application/x-pem-file"},
            ok=(200, 201, 204),
        )

    def renew_delegation(self, delegation_id: str) -> str:
        """Ask for a new CSR for an existing delegation (raises RestError 404 if unknown)."""
        reply = self._request(
            "POST", f"{self.base}/delegations/{_seg(delegation_id)}?action=renew", ok=(200, 201)
        )
        return reply.text

    def delete_delegation(self, delegation_id: str) -> None:
        self._request(
            "POST", f"{self.base}/delegations/{_seg(delegation_id)}?action=delete", ok=(200, 202)
        )

    def delegations(self) -> list[str]:
        body = self._json(self._request("GET", f"{self.base}/delegations", whole=True))
        if not isinstance(body, dict):
            return []
        return [str(d.get("id")) for d in as_list(body.get("delegation")) if isinstance(d, dict)]


def _seg(value: str) -> str:
    """One URL path segment, percent-encoded; ids and names from outside never change the path."""
    if not value or "/" in value or value in (".", "..") or "\x00" in value:
        raise ValueError(f"unsafe path segment {value!r}")
    return quote(value, safe="")


def _path(value: str) -> str:
    parts = [p for p in value.split("/") if p]
    return "/".join(_seg(p) for p in parts)


def _strip_xml_declaration(text: str) -> str:
    return text.split("?>", 1)[1].strip() if text.startswith("<?xml") else text


def _maybe_sent(error: requests.exceptions.RequestException) -> bool:
    """False when the connection itself could not be made (refused, unresolved, connect
    timeout): the request never left. A timeout or a broken connection after it was made may
    come after the CE acted on it."""
    if isinstance(error, requests.exceptions.ConnectTimeout):
        return False
    reason = getattr(error.args[0], "reason", None) if error.args else None
    return not isinstance(reason, urllib3.exceptions.NewConnectionError)


def _short(error: BaseException) -> str:
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__


def _reply_text(reply: requests.Response) -> str:
    try:
        return reply.text.strip().replace("\n", " ")[:300]
    except (requests.exceptions.RequestException, UnicodeError):
        return ""


def _copy(ce: str, reply: requests.Response, handle: Any, max_bytes: int, what: str) -> int:
    size = 0
    try:
        declared = reply.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise RestError(413, f"{what}: {declared} bytes, more than the {max_bytes} allowed")
        for chunk in _chunks(reply):
            size += len(chunk)
            if size > max_bytes:
                raise RestError(413, f"{what}: more than the {max_bytes} bytes allowed")
            handle.write(chunk)
    except requests.exceptions.RequestException as error:
        raise CEUnavailable(ce, f"download of {what} failed: {_short(error)}") from None
    finally:
        reply.close()
    return size


def _chunks(reply: requests.Response) -> Iterator[bytes]:
    yield from reply.iter_content(1 << 16)


def ensure_private(path: str) -> None:
    """Refuse a credential file others may read (it holds a private key)."""
    mode = os.stat(path).st_mode
    if mode & 0o077:
        raise PermissionError(f"credential {path} is readable by group/others: chmod 600 it")
