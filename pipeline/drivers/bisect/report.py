"""build/bisect/report.json and the bisection's last words: the culprit, or the candidates."""

from __future__ import annotations

import math
import re
from pathlib import Path

import msgspec

from ... import report as pages
from ...layout import Layout
from ...settings import Settings
from .repo import run_git
from .steps import Step, StepRow
from .verdicts import BISECT_SCHEMA, Symptom, miss_chance

FIRST = re.compile(r"^([0-9a-f]{40}) is the first \w+ commit", re.M)
COMMIT_LINE = re.compile(r"^([0-9a-f]{40})$", re.M)


class FirstBad(msgspec.Struct, frozen=True):
    commit: str
    subject: str


class Confidence(msgspec.Struct, frozen=True):
    value: float | None  # None: the bad ref ran once, the symptom's rate is unknown
    note: str


class BisectReport(msgspec.Struct, frozen=True, kw_only=True):
    """build/bisect/report.json: the bisection's answer and how it got there."""

    find: str
    first_bad: FirstBad | None
    candidates: list[str]  # skipped commits left several: the first bad one is among them
    good: str
    bad: str
    symptom: Symptom
    commits_in_range: int
    steps: list[StepRow]
    tested: int
    step_bound: int
    confidence: Confidence
    seconds: float
    schema: int  # BISECT_SCHEMA when written; a file without one reads as missing


def make_report(settings: Settings, clone: Path, out: str, steps: list[Step], symptom: Symptom,
            old: str, new: str, count: int, seconds: float) -> BisectReport:
    b = settings.bisect
    found = FIRST.search(out)
    culprit = found[1] if found else None
    candidates = [] if found else COMMIT_LINE.findall(out)
    skipped = sum(step.verdict == "skip" for step in steps)
    tested = len(steps)
    bound = math.ceil(math.log2(max(count, 1))) + 2 + skipped
    miss = miss_chance(symptom, b.runs)
    goods = sum(step.verdict == "good" for step in steps)
    if miss is None:
        confidence = Confidence(None, (
            "the bad ref ran once, so how often the symptom shows is unknown: a flaky "
            "symptom can make a bad commit look good. Run with bisect.runs=3 (or more)"))
    else:
        value = (1 - miss) ** goods
        confidence = Confidence(round(value, 4), (
            f"the symptom showed in {symptom.shown} of {symptom.runs} runs of the bad ref; "
            f"each good verdict ({b.runs} clean run(s)) could have missed it with chance "
            f"{miss:.2g}; all {goods} good verdicts right: {value:.1%}"))
    first_bad = None
    if culprit:
        first_bad = FirstBad(culprit, run_git(clone, "log", "-1", "--format=%s", culprit))
    good_ref, bad_ref = (old, new) if b.find == "regression" else (new, old)
    return BisectReport(
        find=b.find, first_bad=first_bad, candidates=candidates, good=good_ref, bad=bad_ref,
        symptom=symptom, commits_in_range=count, steps=[step.row() for step in steps],
        tested=tested, step_bound=bound, confidence=confidence, seconds=round(seconds, 1),
        schema=BISECT_SCHEMA)


VERDICT_COLOURS = {"good": "#276127", "bad": "#aa1111", "skip": "#8a6d00", "abort": "#555555"}


def timeline(report: BisectReport) -> str:
    """Each step as a bar of its minutes, in the order run, coloured by its verdict."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 0.3 * len(report.steps) + 1.0), layout="constrained")
    axes = figure.add_subplot()
    names = [f"{number} {step.commit[:12]}" for number, step in enumerate(report.steps, 1)]
    axes.barh(range(len(names)), [step.seconds / 60 for step in report.steps],
              color=[VERDICT_COLOURS.get(step.verdict, "#4477aa") for step in report.steps])
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel("minutes (green good, red bad, yellow skip)")
    return pages.svg(figure)


def write_page(layout: Layout, report: BisectReport) -> Path | None:
    """build/bisect/report.html: the answer, the Fixes: line, the steps as a timeline."""
    return pages.write_page(layout.bisect_page, "bisect.html.j2", report=report,
                            timeline=timeline(report))


def print_end(report: BisectReport, clone: Path) -> None:
    print(f"\n{report.tested} step(s) (bound {report.step_bound}), {report.seconds:.0f} s",
          flush=True)
    if report.candidates:
        print("skipped commits leave several candidates (as git bisect says):")
        for commit in report.candidates:
            print("  " + run_git(clone, "log", "-1", "--format=%h %s", commit))
        return
    culprit = report.first_bad
    word = "first bad commit" if report.find == "regression" else "first fixed commit"
    print(f"{word}: {culprit.commit}\n")
    print(run_git(clone, "show", "--stat", "--format=medium", culprit.commit))
    if report.find == "regression":
        print(f"\nFixes: {culprit.commit[:12]} (\"{culprit.subject}\")")
    print(f"confidence: {report.confidence.note}", flush=True)
