"""Exit codes of actd, act-daemon and actctl (documented in the README)."""

from __future__ import annotations

OK = 0  #: stopped cleanly (SIGTERM/SIGINT), or the command succeeded
FAILURE = 1  #: an unexpected error; the log has the traceback
USAGE = 2  #: wrong command-line usage
CONFIG = 3  #: the configuration is invalid; the message names each bad key
DATABASE = 4  #: the database is unreachable or unusable, or its schema does not match this act
LOCKED = 5  #: another actd already runs on this state root
NOT_FOUND = 6  #: actctl: the job (or other object) asked for does not exist
CYCLE_FAILED = 7  #: act-daemon --once: the cycle raised; the log has the traceback
