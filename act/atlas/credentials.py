"""Credentials for PanDA calls: an X509 proxy or a bearer token per PanDA role.

A role (``production`` for managed jobs, ``pilot`` for analysis) has either a proxy file (used as
the TLS client certificate and key) or a token file (``Authorization: Bearer``, with an
``Origin`` header). Files are re-read when they change (inode, mtime or size), must be private
(mode 0600 or stricter: anything else is refused) and are never logged. The remaining lifetime
comes from the proxy's certificates (``cryptography``) or the token's ``exp`` claim; it is logged
as a warning when it falls below ``panda.warn_before`` (at most once an hour per role). An
optional ``renew_command`` (an argv list, e.g. ``voms-proxy-init``) runs, with a timeout, when
the lifetime falls below ``panda.renew_before`` or the credential is missing or expired (at most
once every ``panda.renew_interval``). A missing, unreadable, public or expired credential makes
the calls needing it raise ``PandaAuthError``; the problem is logged once, not at every call.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from cryptography import x509

from act.atlas.panda_errors import PandaAuthError
from act.atlas.panda_settings import PandaServerSettings, RoleCredentials
from act.common.timeutil import utcnow

ROLES = ("production", "pilot")
WARN_EVERY = 3600.0  # seconds between two lifetime warnings for one role
_PRIVATE_KEY_MARK = b"PRIVATE KEY-----"


class CredentialSource(Protocol):
    """What the PanDA client needs: a client cert pair or a bearer token per role."""

    def cert_pair(self, role: str) -> tuple[str, str] | None: ...

    def bearer(self, role: str) -> str | None: ...

    def lifetime(self, role: str) -> timedelta | None: ...


@dataclass(frozen=True)
class CredentialInfo:
    """One role's credential as ``actctl`` shows it; ``problem`` is None when it is usable."""

    role: str
    kind: str  # "proxy" or "token"
    path: str
    expires: datetime | None
    remaining: timedelta | None
    problem: str | None


@dataclass(frozen=True)
class _Loaded:
    key: tuple[int, int, int]  # inode, mtime_ns, size
    expires: datetime | None
    token: str | None


class NoCredentials:
    """No role configured: calls go out without a client certificate or token."""

    def cert_pair(self, role: str) -> tuple[str, str] | None:
        return None

    def bearer(self, role: str) -> str | None:
        return None

    def lifetime(self, role: str) -> timedelta | None:
        return None


class FileCredentials:
    """Proxy and token files per role, from ``panda.roles`` (see the module docstring)."""

    def __init__(
        self,
        settings: PandaServerSettings,
        *,
        log: logging.Logger | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._settings = settings
        self._roles: dict[str, RoleCredentials] = {str(k): v for k, v in settings.roles.items()}
        self._log = log or logging.getLogger("act.atlas.credentials")
        self._clock = clock
        self._lock = threading.RLock()
        self._loaded: dict[str, _Loaded] = {}
        self._reported: dict[str, str] = {}  # role -> the problem last logged
        self._last_warning: dict[str, float] = {}
        self._last_renewal: dict[str, float] = {}

    # -- the CredentialSource protocol ---------------------------------------------------------

    def cert_pair(self, role: str) -> tuple[str, str] | None:
        """(cert, key) file paths for TLS, or None if the role has no proxy configured."""
        config = self._roles.get(role)
        if config is None or config.proxy is None:
            return None
        self._usable(role, config)
        return config.proxy, config.proxy

    def bearer(self, role: str) -> str | None:
        """The role's token, or None if the role has no token configured."""
        config = self._roles.get(role)
        if config is None or config.token_file is None:
            return None
        loaded = self._usable(role, config)
        return loaded.token

    def lifetime(self, role: str) -> timedelta | None:
        """Time left before the role's credential expires (negative once expired); None if the
        role is not configured, the credential has no expiry, or it cannot be read."""
        config = self._roles.get(role)
        if config is None:
            return None
        with self._lock:
            try:
                loaded = self._load(role, config)
            except _Problem:
                return None
        if loaded.expires is None:
            return None
        return loaded.expires - self._clock()

    # -- extras ---------------------------------------------------------------------------------

    def origin(self, role: str) -> str | None:
        """The Origin header to send with the role's token."""
        config = self._roles.get(role)
        return config.origin if config is not None else None

    def roles(self) -> list[str]:
        """The configured roles."""
        return list(self._roles)

    def describe(self) -> list[CredentialInfo]:
        """Every configured role's credential, for ``actctl``: expiry, time left, problem."""
        infos = []
        for role, config in self._roles.items():
            path = config.proxy or config.token_file or ""
            kind = "proxy" if config.proxy else "token"
            with self._lock:
                try:
                    loaded = self._load(role, config)
                except _Problem as problem:
                    infos.append(CredentialInfo(role, kind, path, None, None, str(problem)))
                    continue
            remaining = loaded.expires - self._clock() if loaded.expires else None
            problem_text = None
            if remaining is not None and remaining <= timedelta(0):
                problem_text = f"expired at {loaded.expires:%Y-%m-%d %H:%M:%S} UTC"
            infos.append(CredentialInfo(role, kind, path, loaded.expires, remaining, problem_text))
        return infos

    # -- internals ------------------------------------------------------------------------------

    def _usable(self, role: str, config: RoleCredentials) -> _Loaded:
        """The loaded credential, renewed if due; PandaAuthError (logged once) if unusable."""
        with self._lock:
            try:
                loaded = self._load(role, config)
                remaining = self._remaining(loaded)
                if remaining is not None and remaining <= timedelta(0):
                    raise _Problem(f"expired at {loaded.expires:%Y-%m-%d %H:%M:%S} UTC")
            except _Problem as problem:
                if self._renew(role, config, str(problem)):
                    return self._usable(role, config)
                self._report(role, config, str(problem))
                raise PandaAuthError(
                    "credentials", f"{role} credential {_where(config)}: {problem}"
                ) from None
            if (
                remaining is not None
                and remaining.total_seconds() < self._settings.renew_before
                and self._renew(role, config, f"{_hours(remaining)} left")
            ):
                return self._usable(role, config)
            if role in self._reported:
                self._log.info("%s credential %s is usable again", role, _where(config))
                del self._reported[role]
            self._warn_if_expiring(role, config, remaining)
            return loaded

    def _remaining(self, loaded: _Loaded) -> timedelta | None:
        return loaded.expires - self._clock() if loaded.expires is not None else None

    def _load(self, role: str, config: RoleCredentials) -> _Loaded:
        path = config.proxy or config.token_file
        assert path is not None  # the settings model guarantees one of them
        try:
            info = os.stat(path)
        except FileNotFoundError:
            raise _Problem("file not found") from None
        except OSError as error:
            raise _Problem(f"cannot stat: {error.strerror}") from None
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise _Problem(
                f"mode {stat.S_IMODE(info.st_mode):04o} lets group/others read it; chmod 600 it"
            )
        key = (info.st_ino, info.st_mtime_ns, info.st_size)
        cached = self._loaded.get(role)
        if cached is not None and cached.key == key:
            return cached
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise _Problem(f"cannot read: {error.strerror}") from None
        if config.proxy:
            loaded = _Loaded(key, _proxy_expiry(data), None)
        else:
            token = data.decode("utf-8", "replace").strip()
            if not token:
                raise _Problem("the token file is empty")
            loaded = _Loaded(key, _token_expiry(token), token)
        self._loaded[role] = loaded
        self._log.info(
            "%s credential %s loaded%s",
            role,
            _where(config),
            f", valid until {loaded.expires:%Y-%m-%d %H:%M:%S} UTC" if loaded.expires else "",
        )
        return loaded

    def _renew(self, role: str, config: RoleCredentials, why: str) -> bool:
        """Run the role's renew_command if one is configured and none ran recently; True if it
        succeeded (the credential is then re-read)."""
        if not config.renew_command:
            return False
        now = time.monotonic()
        last = self._last_renewal.get(role)
        if last is not None and now - last < self._settings.renew_interval:
            return False
        self._last_renewal[role] = now
        self._log.info("%s credential %s: %s; renewing it", role, _where(config), why)
        try:
            done = subprocess.run(  # an argv list from the operator config, no shell
                config.renew_command,
                capture_output=True,
                timeout=config.renew_timeout,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            self._log.error(
                "%s credential renewal timed out after %gs: %s",
                role,
                config.renew_timeout,
                config.renew_command[0],
            )
            return False
        except OSError as error:
            self._log.error(
                "%s credential renewal cannot run %s: %s",
                role,
                config.renew_command[0],
                error.strerror,
            )
            return False
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).decode("utf-8", "replace").strip()[-300:]
            self._log.error(
                "%s credential renewal %s exited %d: %s",
                role,
                config.renew_command[0],
                done.returncode,
                tail,
            )
            return False
        self._loaded.pop(role, None)
        try:
            loaded = self._load(role, config)
        except _Problem as problem:
            self._log.error("%s credential renewed but still unusable: %s", role, problem)
            return False
        remaining = self._remaining(loaded)
        if remaining is not None and remaining <= timedelta(0):
            self._log.error("%s credential renewed but still expired", role)
            return False
        return True

    def _report(self, role: str, config: RoleCredentials, problem: str) -> None:
        if self._reported.get(role) != problem:
            self._reported[role] = problem
            self._log.error(
                "%s credential %s is unusable: %s; PanDA calls needing it fail until it is fixed",
                role,
                _where(config),
                problem,
            )

    def _warn_if_expiring(
        self, role: str, config: RoleCredentials, remaining: timedelta | None
    ) -> None:
        if remaining is None or remaining.total_seconds() >= self._settings.warn_before:
            return
        now = time.monotonic()
        last = self._last_warning.get(role)
        if last is not None and now - last < WARN_EVERY:
            return
        self._last_warning[role] = now
        self._log.warning("%s credential %s expires in %s", role, _where(config), _hours(remaining))


class _Problem(Exception):
    """Why a credential cannot be used (internal; surfaces as PandaAuthError)."""


def _where(config: RoleCredentials) -> str:
    return f"{'proxy' if config.proxy else 'token'} {config.proxy or config.token_file}"


def _hours(remaining: timedelta) -> str:
    return f"{remaining.total_seconds() / 3600:.1f} h"


def _proxy_expiry(data: bytes) -> datetime:
    """The earliest notAfter of the certificates in a PEM proxy file (which must hold a key)."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise _Problem("not a PEM proxy: no certificate could be read") from None
    if _PRIVATE_KEY_MARK not in data:
        raise _Problem("the proxy file holds no private key")
    return min(cert.not_valid_after_utc for cert in certs)


def _token_expiry(token: str) -> datetime | None:
    """The ``exp`` claim of a JWT (not verified: the server does that), or None."""
    parts = token.split(".")
    if len(parts) != 3:
        return None  # an opaque token: no known lifetime
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded))
    except (binascii.Error, ValueError):
        raise _Problem("the token looks like a JWT but its claims cannot be decoded") from None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if exp is None:
        return None
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise _Problem("the token's exp claim is not a number")
    return datetime.fromtimestamp(exp, timezone.utc)


def credentials_from_settings(
    settings: PandaServerSettings, *, log: logging.Logger | None = None
) -> FileCredentials:
    """The credential source for ``settings.roles`` (what daemons and actctl use)."""
    return FileCredentials(settings, log=log)


def credential_lifetimes(settings: PandaServerSettings) -> list[CredentialInfo]:
    """Each configured role's credential, expiry and problem, for ``actctl``."""
    return FileCredentials(settings, log=logging.getLogger("act.atlas.credentials")).describe()
