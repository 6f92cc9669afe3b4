"""What becomes of a CE job that failed: the resubmission policy, by error class.

``engine.resubmit`` is a list of rules, each a regular expression searched in the CE's and
LRMS's error text and an action; the first rule that matches decides:

* ``resubmit``: a new CE job (``toresubmit``) while the job has attempts left, else ``failed``.
  ``attempts_left`` counts the submissions a job may still have *including the one that just
  failed* (as the submitter keeps it: ``engine.attempts`` at creation, one less per resubmission),
  so a job resubmits only while it is above 1. A job on its last attempt ends ``failed`` here, with
  its CE job intact for the fetcher, instead of having that CE job cleaned by the submitter's
  resubmission step and only then failing with "no submission attempts left";
* ``restart``: ask the CE to rerun the same job (``torerun``) when the back end can restart jobs
  and the CE says this one is restartable (it failed in a phase such as staging), else ``failed``;
* ``fail``, or no rule matching: ``failed``.

:func:`classify` is a pure function; the poller applies it to every job the CE reports FAILED.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from act.common.states import CEJobState
from act.engine.settings import ResubmitRule

FAILED = CEJobState.FAILED
TORESUBMIT = CEJobState.TORESUBMIT
TORERUN = CEJobState.TORERUN


@dataclass(frozen=True)
class Decision:
    """The engine state a failed job goes to, and why (for the transition's history row)."""

    state: str  # failed | toresubmit | torerun
    reason: str


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def classify(
    error_text: str | None,
    rules: Sequence[ResubmitRule],
    *,
    attempts_left: int,
    can_restart: bool,
    restartable: bool,
) -> Decision:
    """The state a job the CE reports FAILED moves to (see the module docstring)."""
    text = error_text or ""
    for index, rule in enumerate(rules):
        if not _compiled(rule.pattern).search(text):
            continue
        which = f"resubmit rule {index} ({rule.action}: {rule.pattern})"
        if rule.action == "resubmit":
            if attempts_left > 1:
                left = attempts_left - 1
                return Decision(TORESUBMIT, f"{which}; {left} attempt(s) left after this one")
            return Decision(FAILED, f"{which}; no attempts left")
        if rule.action == "restart":
            if can_restart and restartable:
                return Decision(TORERUN, which)
            why = "the back end cannot restart jobs" if not can_restart else "not restartable"
            return Decision(FAILED, f"{which}; {why}")
        return Decision(FAILED, which)
    return Decision(FAILED, "no resubmit rule matches")
