"""Logging for act processes: UTC timestamps, one file per daemon, job and CE on every job line."""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(name)s[%(process)d]: %(message)s"
DATEFMT = "%Y-%m-%dT%H:%M:%S"


def formatter() -> logging.Formatter:
    fmt = logging.Formatter(FORMAT, DATEFMT)
    fmt.converter = time.gmtime
    return fmt


def setup(level: str, log_file: Path | None = None, *, stderr: bool = True) -> None:
    """Send the ``act`` logger tree to ``log_file`` (reopened after rotation) and/or stderr."""
    root = logging.getLogger("act")
    root.setLevel(level)
    root.propagate = False
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = []
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.WatchedFileHandler(log_file, encoding="utf-8"))
    if stderr or log_file is None:
        handlers.append(logging.StreamHandler(sys.stderr))
    for handler in handlers:
        handler.setFormatter(formatter())
        root.addHandler(handler)
    logging.captureWarnings(True)


class JobLog(logging.LoggerAdapter[logging.Logger]):
    """A logger whose lines start with the job and CE they concern: ``pandaid=42 ce=host: ...``."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        tags = " ".join(
            f"{key}={value}" for key, value in (self.extra or {}).items() if value is not None
        )
        return (f"{tags}: {msg}" if tags else msg), kwargs


def job_log(
    log: logging.Logger, *, pandaid: int | None = None, ce: str | None = None, **more: Any
) -> JobLog:
    return JobLog(log, {"pandaid": pandaid, "ce": ce, **more})
