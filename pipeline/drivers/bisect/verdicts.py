"""A run of the chain on one commit, the symptom, and the verdicts they give."""

from __future__ import annotations

import msgspec

from ...errors import Exit
from ...results import Outcome

# The chain's exit codes a step cannot judge (the tree, not the symptom), and the
# guest outcomes it judges: the table's bisect column (pipeline.errors.Exit).
SKIP_CODES = {row.code: row.meaning.split(":")[0] for row in Exit
              if row.bisect == "skip" and not row.tasks}
GUEST_CODES = {row.code for row in Exit if row.bisect == "bad" and "test" in row.tasks}


class Run(msgspec.Struct, frozen=True):
    """One run of the chain on one commit, reduced to what decides a verdict."""

    code: int
    outcome: str
    failed: tuple[str, ...] = ()
    passed: tuple[str, ...] = ()
    reason: str = ""
    # The machine failed (a full disk, a killed compiler): worth one more try.
    host_failure: bool = False
    out_of_memory: bool = False


# symptom.json and report.json; a file of another schema reads as missing.
BISECT_SCHEMA = 1


class Symptom(msgspec.Struct, frozen=True):
    """What the bad ref showed (build/bisect/symptom.json, which `step` reads)."""

    outcome: str  # the outcome class of the bad ref's failing run
    cases: tuple[str, ...]  # the cases that failed there
    shown: int = 1  # in how many of the bad ref's runs
    runs: int = 1
    schema: int = BISECT_SCHEMA

    def describe(self) -> str:
        cases = ", ".join(self.cases) or "no case"
        return f"{self.outcome} ({cases}), shown in {self.shown} of {self.runs} run(s)"


ANY_FAILURE = Symptom(outcome="", cases=())


def judge(run: Run, symptom: Symptom) -> tuple[str, str]:
    """(verdict, reason) of one run: "good", "bad", "skip" or "abort"."""
    if run.code == 0:
        return "good", "passed"
    if run.code in SKIP_CODES:
        return "skip", f"{SKIP_CODES[run.code]}: {run.reason}"
    if run.code not in GUEST_CODES:
        return "abort", f"{run.outcome}: {run.reason}"
    if symptom == ANY_FAILURE:
        return "bad", f"{run.outcome}: {', '.join(run.failed) or run.reason}"
    hit = sorted(set(run.failed) & set(symptom.cases))
    if hit:
        return "bad", f"symptom case(s) failed: {', '.join(hit)}"
    if run.outcome == symptom.outcome and run.outcome != Outcome.TEST_FAILURES.label:
        return "bad", f"{run.outcome} again: {run.reason}"
    if symptom.cases and set(symptom.cases) <= set(run.passed):
        others = ", ".join(run.failed) or run.outcome
        return "good", f"the symptom's cases passed (other failures: {others})"
    return "skip", f"{run.outcome} before the symptom could show: {run.reason}"


def combine(verdicts: list[str], runs_wanted: int) -> str | None:
    """The commit's verdict from its runs so far; None: more runs are needed."""
    for decisive in ("abort", "bad", "skip"):
        if decisive in verdicts:
            return decisive
    return "good" if len(verdicts) >= runs_wanted else None


def miss_chance(symptom: Symptom, runs: int) -> float | None:
    """The chance that `runs` clean runs of a bad commit all missed the symptom.

    The rate is estimated from the bad ref's runs with the rule of succession,
    (shown + 1) / (runs + 2), which stays below 1 for a small sample; one run
    of the bad ref tells nothing about the rate (None).
    """
    if symptom.runs < 2:
        return None
    rate = (symptom.shown + 1) / (symptom.runs + 2)
    return (1 - rate) ** runs


# Labels of the chain's codes that are not guest outcomes.
CODE_LABELS = {2: "bad settings", 3: "host problem", 4: "build failure",
               5: "tree not buildable as asked", 130: "interrupted"}


def outcome_label(code: int) -> str:
    if code in CODE_LABELS:
        return CODE_LABELS[code]
    try:
        return Outcome(code).label  # 0 "passed", 10-15 the guest outcomes
    except ValueError:
        return "error"
