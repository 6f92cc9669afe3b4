"""The resubmission policy and the one retry budget (pure functions): first matching rule wins,
every try (restart, CE-level and PanDA-level resubmission) counted in one budget."""

from __future__ import annotations

from act.engine.resubmit import (
    FAILED,
    TORERUN,
    TORESUBMIT,
    attempts_for_new_ce_job,
    classify,
    resubmit_invalid_outputs,
)
from act.engine.settings import EngineSettings, ResubmitRule

RULES = [
    ResubmitRule(pattern=r"(?i)stage-?in.*fail", action="restart"),
    ResubmitRule(pattern=r"node failure", action="resubmit"),
    ResubmitRule(pattern=r"quota", action="fail"),
    ResubmitRule(pattern=r"(?i)node", action="resubmit"),  # never reached for "node failure"
]


def decide(text: str | None, attempts: int = 2, can: bool = True, restartable: bool = True) -> str:
    return classify(
        text, RULES, attempts_left=attempts, can_restart=can, restartable=restartable
    ).state


def test_resubmit_while_attempts_are_left() -> None:
    # attempts_left includes the submission that just failed (the submitter's count).
    assert decide("worker node failure", attempts=2) == TORESUBMIT
    assert decide("worker node failure", attempts=1) == FAILED
    assert decide("worker node failure", attempts=0) == FAILED


def test_restart_needs_a_back_end_that_can_and_a_restartable_job() -> None:
    assert decide("Stage-in failed: timeout") == TORERUN
    assert decide("Stagein failed", can=False) == FAILED
    assert decide("stage-in FAILED", restartable=False) == FAILED


def test_a_restart_is_a_try_of_the_budget() -> None:
    assert decide("Stage-in failed: timeout", attempts=2) == TORERUN
    decision = classify(
        "Stage-in failed", RULES, attempts_left=1, can_restart=True, restartable=True
    )
    assert decision.state == FAILED and decision.reason.endswith("no attempts left")


def test_a_panda_level_resubmission_inherits_what_is_left() -> None:
    assert attempts_for_new_ce_job(3, None) == 3  # the job's first CE job: the whole budget
    assert attempts_for_new_ce_job(3, 3) == 2  # the previous CE job made one try
    assert attempts_for_new_ce_job(3, 1) == 0  # none left: the translator fails the job
    assert resubmit_invalid_outputs(2) and resubmit_invalid_outputs(None)
    assert not resubmit_invalid_outputs(1)


def test_no_mix_of_failures_gets_more_tries_than_the_budget() -> None:
    """Walk every sequence of failures a job can meet (restart, CE-level and PanDA-level
    resubmission) as the submitter, poller, validator and translator apply these functions:
    never more than ``engine.attempts`` tries, and every budget is used in full."""
    budget = 4

    def tries(kinds: tuple[str, ...]) -> int:
        left, made = budget, 1  # the first submission
        for kind in kinds:
            if kind == "panda":
                if not resubmit_invalid_outputs(left):
                    return made
                left = attempts_for_new_ce_job(budget, left)
                if left < 1:
                    return made
            else:
                text = "Stage-in failed" if kind == "restart" else "node failure"
                step = classify(text, RULES, attempts_left=left, can_restart=True, restartable=True)
                if step.state == FAILED:
                    return made
                left -= 1  # the submitter's rerun or requeue takes one
            made += 1
        return made

    import itertools

    for n in range(budget + 2):
        for kinds in itertools.product(("restart", "ce", "panda"), repeat=n):
            assert tries(kinds) == min(n + 1, budget), kinds


def test_fail_and_no_match_fail() -> None:
    assert decide("disk quota exceeded") == FAILED
    assert decide("segmentation fault") == FAILED
    assert decide(None) == FAILED
    assert decide("") == FAILED


def test_the_first_matching_rule_wins_and_is_named_in_the_reason() -> None:
    # "quota ... node" matches rule 2 (fail) before rule 3 (resubmit).
    decision = classify(
        "quota on node x", RULES, attempts_left=2, can_restart=True, restartable=True
    )
    assert decision.state == FAILED and decision.reason.startswith("resubmit rule 2 (fail")
    decision = classify("node failure", RULES, attempts_left=2, can_restart=True, restartable=True)
    assert decision.reason.startswith("resubmit rule 1 (resubmit")
    assert "1 attempt(s) left after this one" in decision.reason


def test_the_default_rules() -> None:
    rules = EngineSettings().resubmit

    def default(text: str) -> str:
        return classify(text, rules, attempts_left=2, can_restart=True, restartable=True).state

    assert default("Failed in data staging: download failed") == TORERUN
    assert default("Job was lost") == TORESUBMIT
    assert default("LRMS error: (271) Job was killed") == TORESUBMIT
    assert default("LRMS error: (1) payload") == FAILED


def test_a_job_the_ce_lost_is_resubmitted_whatever_the_rules_say() -> None:
    """The site's fault (e.g. the local CE's runner died before the payload's exit was
    recorded): a CE-level resubmission within the budget, before any rule ("quota" fails)."""
    lost = classify("quota", RULES, attempts_left=2, can_restart=True, restartable=True, lost=True)
    assert lost.state == TORESUBMIT and "the site's fault" in lost.reason
    assert "1 attempt(s) left" in lost.reason
    spent = classify("x", [], attempts_left=1, can_restart=False, restartable=False, lost=True)
    assert spent.state == FAILED and "no attempts left" in spent.reason
