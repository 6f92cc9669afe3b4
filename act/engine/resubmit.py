"""One retry budget per PanDA job, and the one place that decides how it is spent.

A PanDA job gets ``engine.attempts`` tries at the CE (default 3) **in all**: its first submission,
every restart of a CE job (``torerun``), every CE-level resubmission (``toresubmit`` of the CE
job: the old CE job cleaned, the same ``ce_jobs`` row submitted again, maybe elsewhere) and every
PanDA-level resubmission (``toresubmit`` of the PanDA job: the translator makes a new CE job).
The count lives in one column, ``ce_jobs.attempts_left``: the tries the job may still have, the
current one included. It is ``engine.attempts`` on the first CE job; a restart and a CE-level
resubmission take one from it on the same row; a PanDA-level resubmission's new CE job starts
with one less than the job's previous CE job had (:func:`attempts_for_new_ce_job`). So at most
``engine.attempts`` tries are ever made for one job, whatever mix of failures it meets (before
this module decided all three, the translator's ``max_ce_jobs`` counted PanDA-level resubmissions
on top of ``engine.attempts``, and restarts were not counted: up to 9 submissions, and more).

==============================  ==================  =========================  =================
failure                         noticed by          decision                   budget
==============================  ==================  =========================  =================
CE job failed, a ``resubmit``   poller              CE-level resubmission      one try; none
rule matches its error                              (``toresubmit``)           left: ``failed``
CE job failed, a ``restart``    poller              restart at the CE          one try; none
rule matches, the CE can                            (``torerun``)              left: ``failed``
restart it
CE job failed, the CE lost it   poller              CE-level resubmission      one try; none
for the site's fault (e.g. the                      (``toresubmit``), before   left: ``failed``
local CE's runner died before                       any rule
the payload's exit was recorded)
CE job failed, ``fail`` rule    poller              ``failed``                 --
or no rule matches
outputs missing or wrong on     validator           PanDA-level resubmission   one try; none
storage, ``invalid_outputs:                         (``toresubmit``)           left: ``failed``
resubmit``                                                                     with the file's
                                                                               error code
operator ``actctl resubmit`` /  operator            PanDA-level resubmission   one try; none
``retry``                                                                      left: ``failed``
==============================  ==================  =========================  =================

``engine.resubmit`` is a list of rules, each a regular expression searched in the CE's and
LRMS's error text and an action; the first rule that matches decides (:func:`classify`):

* ``resubmit``: a new CE job (``toresubmit``) while the job has tries left, else ``failed``.
  A job on its last try ends ``failed`` here, with its CE job intact for the fetcher, instead of
  having that CE job cleaned by the submitter's resubmission step and only then failing;
* ``restart``: ask the CE to rerun the same job (``torerun``) when the back end can restart jobs,
  the CE says this one is restartable (it failed in a phase such as staging) and a try is left,
  else ``failed``;
* ``fail``, or no rule matching: ``failed``.

Every function here is pure: the poller, the validator, the submitter and the translator call
them and write what they decide.
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
    lost: bool = False,
) -> Decision:
    """The state a job the CE reports FAILED moves to (see the module docstring); ``lost``: the
    CE says it lost the job for the site's fault (:attr:`JobStatus.lost
    <act.engine.backend.JobStatus.lost>`), never a payload failure."""
    if lost:
        which = "the CE lost the job (the site's fault)"
        if attempts_left > 1:
            return Decision(
                TORESUBMIT, f"{which}; {attempts_left - 1} attempt(s) left after this one"
            )
        return Decision(FAILED, f"{which}; no attempts left")
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
            if not can_restart:
                return Decision(FAILED, f"{which}; the back end cannot restart jobs")
            if not restartable:
                return Decision(FAILED, f"{which}; not restartable")
            if attempts_left > 1:
                left = attempts_left - 1
                return Decision(TORERUN, f"{which}; {left} attempt(s) left after this one")
            return Decision(FAILED, f"{which}; no attempts left")
        return Decision(FAILED, which)
    return Decision(FAILED, "no resubmit rule matches")


def resubmit_invalid_outputs(attempts_left: int | None) -> bool:
    """Whether a job whose outputs are invalid (and whose policy is to resubmit) gets another try.

    ``attempts_left`` is its current CE job's (None if it has none: the translator decides).
    """
    return attempts_left is None or attempts_left > 1


def attempts_for_new_ce_job(budget: int, previous: int | None) -> int:
    """``attempts_left`` of a PanDA job's new CE job: the whole ``budget`` for its first, else one
    less than its previous CE job had (the try that job made is spent). 0 or less: none left."""
    return budget if previous is None else previous - 1
