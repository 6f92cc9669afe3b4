"""The files a configuration names, and whether each exists with safe permissions.

Part of ``actctl config check``: a PanDA CA directory or a proxy that does not exist would
otherwise be found by the first daemon that uses it, hours later and in a log line. Each problem
names the config key. What is checked, by kind:

* a secret (proxies, tokens, per-CE and storage credentials, the database password file): a
  readable regular file that neither group nor others may access (0600 or stricter), as act's
  own :func:`act.common.config.read_secret` requires of the password file;
* a CA (a file or a hashed directory) and the CRIC file: exists, readable, not writable by
  others (whoever can write it can make act trust, or serve, what they like);
* the web area (``weblogs.dir``): a directory, not writable by others. Left unset, its default
  ``<root>/weblogs`` is created by act and only checked if it exists.

Only existence and modes are checked: the contents (an expired proxy, a token's audience) are
the credentials' own checks (``actctl panda``).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from enum import Enum

from act.atlas.web_area import web_root
from act.service.settings import Settings


class Kind(Enum):
    SECRET = "secret"
    CA = "CA file or directory"
    FILE = "file"
    DIR = "directory"


@dataclass(frozen=True)
class Named:
    """A file the configuration names: its key, path, kind, and whether it must exist."""

    key: str
    path: str
    kind: Kind
    required: bool = True


def named_files(settings: Settings) -> list[Named]:
    """Every file and directory ``settings`` names, in config order."""
    found: list[Named] = []

    def add(key: str, path: object, kind: Kind) -> None:
        if isinstance(path, str) and path:
            found.append(Named(key, path, kind))

    add("db.password_file", settings.db.password_file, Kind.SECRET)
    add("panda.ca", settings.panda.ca, Kind.CA)
    for role, credentials in sorted(settings.panda.roles.items()):
        add(f"panda.roles.{role}.proxy", credentials.proxy, Kind.SECRET)
        add(f"panda.roles.{role}.token_file", credentials.token_file, Kind.SECRET)
    add("queues.cric_file", settings.queues.cric_file, Kind.FILE)
    add("queues.ca", settings.queues.ca, Kind.CA)
    for name, ce in sorted(settings.engine.ces.items()):
        add(f"engine.ces.{name}.credential", ce.credential, Kind.SECRET)
        add(f"engine.ces.{name}.ca", ce.ca, Kind.CA)
        add(f"engine.ces.{name}.options.token_file", ce.options.get("token_file"), Kind.SECRET)
    add("storage.ca", settings.storage.ca, Kind.CA)
    add("storage.credential", settings.storage.credential, Kind.SECRET)
    if settings.weblogs.dir:
        add("weblogs.dir", settings.weblogs.dir, Kind.DIR)
    else:
        found.append(Named("weblogs.dir", str(web_root(settings)), Kind.DIR, required=False))
    return found


def problems(settings: Settings) -> list[str]:
    """One line per file that is missing, of the wrong type, unreadable or unsafe."""
    found = []
    for named in named_files(settings):
        problem = _problem(named)
        if problem:
            found.append(f"{named.key}: {named.path} {problem}")
    return found


def _problem(named: Named) -> str | None:
    try:
        info = os.stat(named.path)
    except FileNotFoundError:
        return "does not exist" if named.required else None
    except OSError as error:
        return f"cannot be read: {error.strerror}"
    mode = stat.S_IMODE(info.st_mode)
    is_dir, is_file = stat.S_ISDIR(info.st_mode), stat.S_ISREG(info.st_mode)
    if named.kind is Kind.DIR and not is_dir:
        return "is not a directory"
    if named.kind in (Kind.SECRET, Kind.FILE) and not is_file:
        return "is not a regular file"
    if named.kind is Kind.CA and not (is_file or is_dir):
        return "is neither a file nor a directory"
    if named.kind is not Kind.DIR and not os.access(named.path, os.R_OK):
        return "is not readable by this user"
    if named.kind is Kind.SECRET and mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"is accessible by group/others (mode {mode:04o}): chmod 600 it"
    if mode & stat.S_IWOTH:
        what = "directory" if is_dir else "file"
        return f"is writable by others (mode {mode:04o}): anyone could replace this {what}"
    return None
