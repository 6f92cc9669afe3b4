"""The weblogs daemon: removes the web area's old day directories.

Each cycle it looks at the entries directly under the web area (:func:`act.atlas.web_area.web_root`)
whose names are dates (``YYYY-MM-DD``) and removes those older than ``weblogs.retention_days``:
a day ``D`` goes once ``D + 1 day`` (its end, UTC) lies more than the retention in the past. Other
names are left alone (the operator's index page, a README, ...). An entry that is a symlink is
unlinked, never followed, and no symlink inside a day directory is followed either
(:func:`shutil.rmtree` removes links, not their targets). Each removal is logged. It needs no
database work: a long ``interval`` (an hour) is enough.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from act.atlas.config import Context
from act.atlas.web_area import web_root
from act.common.daemon import DaemonSpec, NoOptions
from act.common.timeutil import utcnow

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def expired_days(root: Path, *, retention_days: float, now: datetime) -> list[Path]:
    """The date-named entries of ``root`` older than the retention, oldest first."""
    cutoff = now - timedelta(days=retention_days)
    found: list[tuple[date, Path]] = []
    try:
        names = os.listdir(root)
    except FileNotFoundError:
        return []
    for name in names:
        if not _DATE.fullmatch(name):
            continue
        try:
            day = datetime.strptime(name, "%Y-%m-%d").date()
        except ValueError:
            continue
        end = datetime.combine(day, datetime.min.time(), tzinfo=timezone.utc) + timedelta(days=1)
        if end < cutoff:
            found.append((day, root / name))
    return [path for _, path in sorted(found)]


def remove_entry(path: Path) -> None:
    """Remove a day directory; a symlink (or any non-directory) is unlinked, never followed."""
    mode = os.lstat(path).st_mode
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)  # does not follow symlinks (and refuses a symlink as its top)
    else:
        os.unlink(path)


def run_once(ctx: Context) -> bool:
    root = web_root(ctx.settings)
    retention = ctx.settings.weblogs.retention_days
    expired = expired_days(root, retention_days=retention, now=utcnow())
    for path in ctx.until_stopped(expired, "expired day directories"):
        try:
            remove_entry(path)
        except OSError as error:
            ctx.log.error("cannot remove %s: %s", path, error)
            continue
        ctx.log.info("removed %s (older than %g days)", path, retention)
    return False


DAEMON = DaemonSpec(run_once=run_once, options=NoOptions, doc=__doc__ or "")
