"""The ``panda:`` section of act.yaml: where the PanDA server is and how to talk to it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from act.common.section import Section

Role = Literal["production", "pilot"]


class RoleCredentials(Section):
    """The credential of one PanDA role: an X509 proxy, or a token file plus its Origin."""

    proxy: str | None = Field(None, description="X509 proxy (cert + key), mode 0600")
    token_file: str | None = Field(None, description="bearer token (JWT), mode 0600")
    origin: str | None = Field(None, description="Origin header sent with the token")
    renew_command: list[str] | None = Field(None, min_length=1)
    renew_timeout: float = Field(120.0, gt=0)

    @model_validator(mode="after")
    def _one_kind(self) -> RoleCredentials:
        if (self.proxy is None) == (self.token_file is None):
            raise ValueError("give exactly one of proxy or token_file")
        if self.token_file is not None and not self.origin:
            raise ValueError("token_file needs origin (e.g. atlas.production)")
        return self


class TimeoutSettings(Section):
    connect: float = Field(10.0, gt=0)
    read: float = Field(120.0, gt=0)


#: The PanDA monitor's page of one job; ``{panda_id}`` is replaced by the job's PanDA ID.
DEFAULT_MONITOR_URL = "https://bigpanda.cern.ch/job?pandaid={panda_id}"


class PandaServerSettings(Section):
    url: str = Field("https://pandaserver.cern.ch:25443", pattern=r"^https?://[^/\s]+(/\S*)?$")
    # Shown by `actctl job`: a format string with the one field {panda_id}.
    monitor_url: str = Field(DEFAULT_MONITOR_URL, pattern=r"^https?://\S+$")
    api: Literal["new", "legacy"] = "new"
    ca: str | None = None
    insecure: bool = False
    timeout: TimeoutSettings = TimeoutSettings()
    retries: int = Field(3, ge=0, le=20)
    backoff: float = Field(1.0, ge=0)
    backoff_max: float = Field(60.0, gt=0)
    warn_before: float = Field(172800.0, ge=0)
    renew_before: float = Field(86400.0, ge=0)
    renew_interval: float = Field(600.0, gt=0)
    roles: dict[Role, RoleCredentials] = Field(default_factory=dict)

    @field_validator("monitor_url")
    @classmethod
    def _one_panda_id_field(cls, url: str) -> str:
        url = url.replace("{pandaid}", "{panda_id}")  # the name before schema 0007
        if "{panda_id}" not in url:
            raise ValueError("must contain {panda_id} (where the job's PanDA ID goes)")
        try:
            url.format(panda_id=1)
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(
                f"{{panda_id}} is the only field allowed (use {{{{ and }}}} for braces): {error}"
            ) from None
        return url

    def monitor_link(self, panda_id: int) -> str:
        """The PanDA monitor's page of job ``panda_id``."""
        return self.monitor_url.format(panda_id=panda_id)


# The top-level ``panda:`` section is the server settings (one name for config.py, one for the
# client's signature).
PandaSettings = PandaServerSettings
