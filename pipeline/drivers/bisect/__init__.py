"""`doit bisect`: find the commit that changed the suite's verdict, through the whole chain.

Each step takes a commit, applies the KVM series, configures, builds the
kernel, KVM and our modules, bakes the image, boots and runs the selected
cases, all by running the chain (`pipeline.chain`) in one kept build dir
(<build>/bisect/build/), so moving between commits rebuilds incrementally.

- The user's repository is only read: git bisect runs in a bare clone
  (`git clone --shared --bare`) under <build>/bisect/.
- The symptom is pinned first: the bad ref runs `bisect.runs` times; which
  cases fail and the outcome class (test failures, kernel complaint, panic,
  boot or test timeout) is the symptom.  The good ref must pass.
- Verdicts: bad when the symptom shows; good when the run passes, or when
  the symptom's cases all passed; skip when the tree cannot be built or
  tested as asked (exit codes 4 and 5: a compiler diagnostic, a series that
  does not apply) or something else hid the symptom's cases; a host problem
  (codes 1-3, QEMU failing, Ctrl-C) stops the bisection.  A build the machine
  failed (a full disk, a killed compiler: `pipeline.failure`) is tried once
  more, with half the make jobs after running out of memory, and never
  becomes a skip.
- Flaky symptoms: bad as soon as one run shows it, good after `bisect.runs`
  clean runs.  Verdicts are cached by commit and everything else that
  decides them, with the runs done, so a second bisection (or one after
  Ctrl-C) reuses them and a higher `bisect.runs` only adds runs.
"""

from __future__ import annotations

import time

from ... import kcidb
from ... import report as pages
from ...errors import BisectAmbiguous, EnvironmentProblem, Exit, PipelineError, UserError
from ...records import read_typed, write_typed
from ...settings import Settings
from ...util import atomic_write_text
from .cache import VerdictCache
from .repo import SKIPPED_ONLY, prepare_clone, resolve, run_bisect, run_git
from .report import FIRST, BisectReport, make_report, print_end, write_page
from .steps import Step, test_commit
from .verdicts import ANY_FAILURE, BISECT_SCHEMA, Symptom, judge

__all__ = ["bisect", "load_symptom", "step"]

# git's old/new terms per search: (term for the older ref, term for the newer ref).
TERMS = {"regression": ("good", "bad"), "fix": ("broken", "fixed")}
# `git bisect run`'s language for the step command: verdict -> exit code.
STEP_EXIT = {row.bisect: row.code for row in Exit if row.tasks == ("step",)}


def _check_settings(settings: Settings) -> None:
    b, src = settings.bisect, settings.source
    if src.kind != "git":
        raise UserError("bisect needs a git source: source.kind=git source.repo=PATH")
    if "://" in src.repo or not settings.resolve(src.repo).exists():
        raise UserError(f"source.repo {src.repo!r} must be a local repository for bisect "
                        "(clone a remote one first)")
    for name in ("good", "bad"):
        if not getattr(b, name):
            raise UserError(f"bisect needs bisect.{name}=REF")


def _print_row(step: Step) -> None:
    cached = " (cached)" if step.cached else ""
    print(f"  {step.commit[:12]}  {step.subject[:40]:<40}  {step.verdict:<5}  "
          f"{step.seconds:6.0f} s{cached}  {step.reason[:70]}", flush=True)


def bisect(settings: Settings) -> BisectReport:
    """The `bisect` task: pin the symptom, check the good ref, let git bisect pick commits."""
    _check_settings(settings)
    b, layout = settings.bisect, settings.layout
    good, bad = resolve(settings, b.good, "bisect.good"), resolve(settings, b.bad, "bisect.bad")
    old, new = (good, bad) if b.find == "regression" else (bad, good)
    clone = prepare_clone(settings)
    try:
        run_git(clone, "merge-base", "--is-ancestor", old, new)
    except EnvironmentProblem:
        older, newer = ("good", "bad") if b.find == "regression" else ("bad", "good")
        raise UserError(f"bisect.{older} ({old[:12]}) is not an ancestor of bisect.{newer} "
                        f"({new[:12]}): bisect.find={b.find} needs bisect.{older} to be the "
                        "older ref") from None
    count = int(run_git(clone, "rev-list", "--count", f"{old}..{new}", "--", *b.paths) or 0)
    cache = VerdictCache(layout.bisect_verdicts)
    started = time.monotonic()
    steps: list[Step] = []
    repo = str(clone)
    print(f"bisecting {count} commit(s) between {old[:12]} and {new[:12]}", flush=True)

    # The symptom: every run of the bad ref counts, to estimate how often it shows.
    pinned = test_commit(settings, repo, bad, ANY_FAILURE, b.runs, cache, all_runs=True)
    steps.append(pinned)
    _print_row(pinned)
    failing = [run for run in pinned.done if judge(run, ANY_FAILURE)[0] == "bad"]
    if pinned.verdict == "abort":
        raise EnvironmentProblem(f"the bad ref could not be tested: {pinned.reason}")
    if pinned.verdict == "skip":
        raise UserError(f"bisect.bad ({b.bad}, {bad[:12]}) cannot be tested: {pinned.reason}")
    if not failing:
        raise UserError(f"bisect.bad ({b.bad}, {bad[:12]}) does not show a failure of the "
                        f"selected cases ({pinned.reason}); nothing to bisect. "
                        f"Check test.cases, or raise bisect.runs for a rare failure")
    first = failing[0]
    symptom = Symptom(outcome=first.outcome, cases=first.failed, shown=len(failing),
                      runs=len(pinned.done))
    write_typed(layout.bisect_symptom, symptom)
    print(f"symptom: {symptom.describe()}", flush=True)

    checked = test_commit(settings, repo, good, symptom, b.runs, cache)
    steps.append(checked)
    _print_row(checked)
    if checked.verdict == "abort":
        raise EnvironmentProblem(f"the good ref could not be tested: {checked.reason}")
    if checked.verdict != "good":
        raise UserError(f"bisect.good ({b.good}, {good[:12]}) does not pass: "
                        f"{checked.verdict}, {checked.reason}")

    term_old, term_new = TERMS[b.find]
    verdict_term = {"good": term_old, "bad": term_new} if b.find == "regression" else \
        {"good": term_new, "bad": term_old}
    run_bisect(clone, "reset")
    out = run_bisect(clone, "start", "--no-checkout", f"--term-old={term_old}",
                  f"--term-new={term_new}", new, old, "--", *b.paths)
    while not FIRST.search(out) and SKIPPED_ONLY not in out:
        commit = run_git(clone, "rev-parse", "BISECT_HEAD")
        step = test_commit(settings, repo, commit, symptom, b.runs, cache)
        steps.append(step)
        _print_row(step)
        if step.verdict == "abort":
            raise EnvironmentProblem(f"stopped at {commit[:12]}: {step.reason}. The verdicts so "
                                     "far are cached; run the bisection again once it is fixed")
        out = run_bisect(clone, verdict_term[step.verdict] if step.verdict != "skip" else "skip",
                      commit)
    atomic_write_text(layout.bisect_log, run_bisect(clone, "log") + "\n")
    run_bisect(clone, "reset")
    report = make_report(settings, clone, out, steps, symptom, old, new, count,
                     time.monotonic() - started)
    write_typed(layout.bisect_report, report)
    print_end(report, clone)
    if pages.best_effort("the bisection's report.html", lambda: write_page(layout, report)):
        print(f"bisect report: {layout.bisect_page}", flush=True)
    pages.best_effort("the bisection's kcidb.json", lambda: kcidb.merge(
        [path for step in report.steps
         for path in sorted(layout.bisect_step(step.commit).glob("run-*/kcidb.json"))],
        layout.bisect / "kcidb.json"))
    if report.candidates:
        shown = ", ".join(c[:12] for c in report.candidates)
        raise BisectAmbiguous(f"skipped commits leave {len(report.candidates)} candidates: "
                              f"{shown} (report: {layout.bisect_report})")
    return report


# ------------------------------------------------------------------ git bisect run


def load_symptom(settings: Settings) -> Symptom:
    path = (settings.resolve(settings.bisect.symptom) if settings.bisect.symptom
            else settings.layout.bisect_symptom)
    if not settings.bisect.symptom and not path.exists():
        return ANY_FAILURE
    symptom = read_typed(path, Symptom, BISECT_SCHEMA)
    if symptom is None:
        raise UserError(f"bisect.symptom {path} is not a symptom a bisection saved (missing, "
                        "unreadable or of an older pipeline): run `doit bisect` again or "
                        "leave bisect.symptom empty")
    return symptom


def step(settings: Settings) -> int:
    """`python -m pipeline step`: one commit (source.ref of source.repo, e.g. HEAD while
    `git bisect run` drives the user's repository), as git bisect run's exit code."""
    try:
        if settings.source.kind != "git":
            raise UserError("step needs a git source: source.kind=git source.repo=PATH")
        symptom = load_symptom(settings)
        repo = str(settings.resolve(settings.source.repo))
        commit = resolve(settings, settings.source.ref, "source.ref")
        cache = VerdictCache(settings.layout.bisect_verdicts)
        result = test_commit(settings, repo, commit, symptom, settings.bisect.runs, cache)
    except PipelineError as exc:
        print(f"pipeline step: {exc}", flush=True)
        return STEP_EXIT["abort"]
    print(f"pipeline step: {commit[:12]} is {result.verdict}: {result.reason}", flush=True)
    return STEP_EXIT[result.verdict]
