"""The errors of act's PanDA client (re-exported by ``act.atlas.panda_client``).

Every error names the call and the cause in ``str()``; ``panda_id`` is set when the error concerns
one job. Only ``PandaTransportError`` is worth retrying as is.
"""

from __future__ import annotations


class PandaError(Exception):
    """A PanDA call failed; ``str()`` names the call and the cause."""

    def __init__(self, call: str, cause: str, *, panda_id: int | None = None) -> None:
        self.call = call
        self.cause = cause
        self.panda_id = panda_id
        where = f"{call} (panda_id={panda_id})" if panda_id is not None else call
        super().__init__(f"PanDA {where}: {cause}")


class PandaTransportError(PandaError):
    """Connect, TLS, timeout, HTTP 5xx or a server-side timeout: retryable. ``unsent`` is True
    when PanDA certainly did not act on the request (connection refused, TLS handshake failed,
    connect timeout, HTTP 502/503, server-side timeout). ``kind`` names which (for metrics):
    connection, tls, timeout, http_5xx, server_timeout, or transport for another."""

    def __init__(
        self,
        call: str,
        cause: str,
        *,
        panda_id: int | None = None,
        unsent: bool = False,
        kind: str = "transport",
    ) -> None:
        super().__init__(call, cause, panda_id=panda_id)
        self.unsent = unsent
        self.kind = kind


class PandaAuthError(PandaError):
    """Authentication or role refused, or the credential for the call is missing or expired."""


class PandaRefused(PandaError):
    """PanDA answered and refused the call (success=false, StatusCode 30/50/80, HTTP 4xx...)."""


class PandaReplyError(PandaError):
    """The reply could not be understood (not JSON, wrong types); the cause quotes an excerpt."""


def error_kind(error: PandaError) -> str:
    """A short word for what went wrong (the ``outcome`` label of ``act_panda_requests_total``)."""
    if isinstance(error, PandaTransportError):
        return error.kind
    if isinstance(error, PandaAuthError):
        return "auth"
    if isinstance(error, PandaRefused):
        return "refused"
    if isinstance(error, PandaReplyError):
        return "bad_reply"
    return "error"
