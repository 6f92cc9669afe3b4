"""The resubmission policy (a pure function): first matching rule wins, attempts and restarts."""

from __future__ import annotations

from act.engine.resubmit import FAILED, TORERUN, TORESUBMIT, classify
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
