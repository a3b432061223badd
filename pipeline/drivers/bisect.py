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

import dataclasses
import hashlib
import json
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from .. import chain, commands, kconfig, kmake, kselftest, ktap
from ..errors import (
    BisectAmbiguous,
    CommandError,
    EnvironmentProblem,
    Exit,
    HostFailure,
    PipelineError,
    UserError,
)
from ..guest import read_results, selected_suites
from ..layout import Layout
from ..records import read_typed, write_typed
from ..results import Outcome
from ..settings import SECTIONS, Settings, derive, keys_of
from ..sources import git
from ..util import atomic_write_text, remove_tree

log = logging.getLogger("pipeline")

# The chain's exit codes a step cannot judge (the tree, not the symptom), and the
# guest outcomes it judges: the table's bisect column (pipeline.errors.Exit).
SKIP_CODES = {row.code: row.meaning.split(":")[0] for row in Exit
              if row.bisect == "skip" and not row.tasks}
GUEST_CODES = {row.code for row in Exit if row.bisect == "bad" and "test" in row.tasks}
# git's old/new terms per search: (term for the older ref, term for the newer ref).
TERMS = {"regression": ("good", "bad"), "fix": ("broken", "fixed")}
# `git bisect run`'s language for the step command: verdict -> exit code.
STEP_EXIT = {row.bisect: row.code for row in Exit if row.tasks == ("step",)}
SKIPPED_ONLY = "There are only 'skip'ped commits left to test"
FIRST = re.compile(r"^([0-9a-f]{40}) is the first \w+ commit", re.M)
COMMIT_LINE = re.compile(r"^([0-9a-f]{40})$", re.M)



# ------------------------------------------------------------------ verdicts


@dataclass(frozen=True)
class Run:
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


# ------------------------------------------------------------------ the cache


def _digest_tree(digest: hashlib._Hash, top: Path) -> None:
    """Every file under `top` (a file: itself), by name relative to it, into `digest`."""
    paths = sorted(top.rglob("*")) if top.is_dir() else [top]
    for path in paths:
        if path.is_file() and "__pycache__" not in path.parts:
            name = path.relative_to(top) if top.is_dir() else path.name
            digest.update(f"{top.name}/{name}".encode() + b"\0" + path.read_bytes() + b"\0")


# Settings that cannot change a commit's verdict: where things go, how fast and
# through which caches the build runs (ccache's objects are the compiler's), the
# other drivers' own settings, and the bisection's (each step's settings already
# carry their effect: the commit, bisect.series as patch.series; the runs are
# cached, not the verdicts, so bisect.runs and bisect.symptom only re-judge them).
# Every other setting, a new one too, is in the key: a miss costs a rebuild, a
# stale hit a wrong answer.
NOT_DECIDING = frozenset({
    "source", "bisect", "repro", "matrix", "lava", "paths",
    "kernel.jobs", "kernel.ccache", "kernel.ccache_remote", "kernel.ccache_remote_mode",
    "image.docker_cache", "boot.dry_run", "test.repeat",
})


def deciding_settings(settings: Settings) -> dict[str, Any]:
    """Every setting but NOT_DECIDING's, as {"section.key": value}."""
    return {f"{section}.{key}": getattr(getattr(settings, section), key)
            for section in SECTIONS if section not in NOT_DECIDING
            for key in keys_of(section)
            if f"{section}.{key}" not in NOT_DECIDING}


def verdict_key(settings: Settings, commit: str) -> str:
    """What decides a commit's verdict: the commit, the project's inputs, every setting
    that reaches the kernel, the image and the guest run, and the pipeline's own code."""
    layout = settings.layout
    digest = hashlib.sha256(commit.encode() + b"\0")
    tops = [layout.series_root, layout.fragments_dir, layout.kmod_sources, layout.images_root,
            Path(__file__).parent.parent]  # the last: the pipeline's own code (pipeline/)
    for top in tops + kconfig.user_fragment_paths(settings):
        _digest_tree(digest, top)
    digest.update(json.dumps(deciding_settings(settings), sort_keys=True).encode())
    return digest.hexdigest()


class VerdictCache:
    """key -> {"commit", "runs": [Run...]}, in one JSON file, written atomically."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self.entries = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            self.entries = {}

    def runs(self, key: str) -> list[Run]:
        entry = self.entries.get(key, {})
        return [Run(**{**run, "failed": tuple(run["failed"]), "passed": tuple(run["passed"])})
                for run in entry.get("runs", [])]

    def add(self, key: str, commit: str, run: Run) -> None:
        entry = self.entries.setdefault(key, {"commit": commit, "runs": []})
        entry["runs"].append(dataclasses.asdict(run))
        atomic_write_text(self.path, json.dumps(self.entries, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------ one commit


def step_settings(settings: Settings, repo: str, commit: str) -> Settings:
    """The chain's settings for one commit: its own source, the bisection's build dir."""
    layout = settings.layout
    return derive(settings, {
        "source": {"kind": "git", "repo": repo, "ref": commit},
        "patch": {"series": settings.bisect.series or settings.patch.series},
        "test": {"repeat": 1},
        # The selftests only when a step runs them: each step would rebuild them.
        "kselftest": {"build": settings.kselftest.build and (
            kselftest.SUITE in selected_suites(settings).split(","))},
        "paths": {"build": str(layout.bisect_build), "cache": str(layout.cache)},
    }, f"the bisection's step at {commit[:12]}")


def run_once(settings: Settings, dest: Path) -> Run:
    """Run the chain's `test` for these settings; keep its results in `dest`."""
    layout = settings.layout
    remove_tree(layout.results)  # a build failure must not leave the last step's results
    outcome = chain.run(["test"], settings)
    remove_tree(dest)
    dest.mkdir(parents=True)
    reason = _reason(str(outcome.error)) if outcome.error else ""
    if layout.results.is_dir():
        shutil.copytree(layout.results, dest, dirs_exist_ok=True)
    for name in ("kernel", "kmod", "selftests"):
        if outcome.code == 4 and layout.log(name).exists():
            shutil.copy(layout.log(name), dest / f"{name}.log")
    failed, passed = [], []
    tree, _ = read_results(settings, layout.results / "ktap.log")
    for names, test in tree.walk():
        if not test.subtests:
            if test.status in (ktap.Status.FAILED, ktap.Status.CRASHED):
                failed.append(".".join(names))
            elif test.status is ktap.Status.PASSED:
                passed.append(".".join(names))
    host = outcome.error if isinstance(outcome.error, HostFailure) else None
    return Run(code=outcome.code, outcome=outcome_label(outcome.code), failed=tuple(failed),
               passed=tuple(passed), reason=reason, host_failure=host is not None,
               out_of_memory=host is not None and host.out_of_memory)


def _reason(message: str) -> str:
    """The first line of an error, with the compiler's first complaint if there is one."""
    lines = message.splitlines() or [""]
    if "error:" in lines[0]:  # e.g. a BuildError names the compiler's complaint first
        return lines[0]
    complaint = next((line.strip() for line in lines[1:] if "error:" in line), "")
    return f"{lines[0]} {complaint}".strip()


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


class StepRow(msgspec.Struct, frozen=True, kw_only=True):
    """One tested commit, as report.json and the step's own step.json hold it."""

    commit: str
    subject: str
    verdict: str
    reason: str
    outcome: str
    seconds: float
    cached: bool
    runs: int  # runs of the chain on it


class Step(StepRow, frozen=True, kw_only=True):
    """One tested commit, with the runs that decided it."""

    done: list[Run]

    def row(self) -> StepRow:
        return StepRow(**{name: getattr(self, name) for name in StepRow.__struct_fields__})


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


def test_commit(settings: Settings, repo: str, commit: str, symptom: Symptom, runs: int,
                cache: VerdictCache, all_runs: bool = False) -> Step:
    """Build and run one commit until its verdict is known (every run with `all_runs`)."""
    layout = settings.layout
    step_config = step_settings(settings, repo, commit)
    key = verdict_key(step_config, commit)
    done = cache.runs(key)
    cached = bool(done)
    started = time.monotonic()
    while True:
        verdict = combine([judge(run, symptom)[0] for run in done], runs)
        enough = len(done) >= runs if all_runs else verdict is not None
        if verdict in ("abort", "skip") or (verdict is not None and enough):
            break
        run = run_once(step_config, layout.bisect_step(commit) / f"run-{len(done) + 1}")
        if run.host_failure:
            run = _retry_on_host_failure(step_config, run, layout.bisect_step(commit) /
                                         f"run-{len(done) + 1}-retry")
        if judge(run, symptom)[0] == "abort":
            done.append(run)  # never cached: the next bisection tries again
            verdict = "abort"
            break
        cache.add(key, commit, run)
        done.append(run)
        cached = False
    deciding = next((r for r in done if judge(r, symptom)[0] == verdict), done[-1])
    reason = judge(deciding, symptom)[1]
    if verdict == "good" and len(done) > 1:
        reason = f"{len(done)} clean runs"
    step = Step(commit=commit, subject=_subject(layout, commit), verdict=verdict,
                reason=reason, outcome=deciding.outcome,
                seconds=round(time.monotonic() - started, 1), cached=cached, runs=len(done),
                done=done)
    if not cached:  # the record of the step that did the work stays
        write_typed(layout.bisect_step(commit) / "step.json", step.row())
    return step


def _retry_on_host_failure(settings: Settings, failed: Run, dest: Path) -> Run:
    """A step the machine failed runs once more, with half the make jobs after running out
    of memory.  Never a skip: a second failure stops the bisection (the caller)."""
    if failed.out_of_memory:
        jobs = max(1, kmake.jobs(settings) // 2)
        settings = derive(settings, {"kernel": {"jobs": jobs}}, "the step's second try")
        log.warning("the machine failed this step (%s); once more with kernel.jobs=%d",
                    failed.reason, jobs)
    else:
        log.warning("the machine failed this step (%s); once more", failed.reason)
    return run_once(settings, dest)


# ------------------------------------------------------------------ git


def _git(repo: Path, *args: str) -> str:
    try:
        return commands.run(["git", "--git-dir", repo, *args]).strip()
    except CommandError as exc:
        raise EnvironmentProblem(f"git failed in the bisection's clone {repo}:\n"
                                 f"{exc.output_tail}") from None


def _subject(layout: Layout, commit: str) -> str:
    if not layout.bisect_repo.is_dir():
        return ""
    return _git(layout.bisect_repo, "log", "-1", "--format=%s", commit)


def _resolve(settings: Settings, ref: str, setting: str) -> str:
    repo = settings.resolve(settings.source.repo)
    try:
        return commands.run(["git", "-C", repo, "rev-parse", "--verify", "--quiet",
                             f"{ref}^{{commit}}"]).strip()
    except CommandError:
        raise UserError(f"{setting} = {ref!r} is not a commit in {repo}") from None


def prepare_clone(settings: Settings) -> Path:
    """A bare clone of source.repo sharing its objects; the user's repository is only read."""
    src = settings.source
    clone = settings.layout.bisect_repo
    repo = str(settings.resolve(src.repo))
    if clone.is_dir() and not git.borrows_from(clone, Path(repo)):
        # A clone of another repository (or of one that moved): its objects are not these.
        remove_tree(clone)
    if not clone.is_dir():
        clone.parent.mkdir(parents=True, exist_ok=True)
        try:
            commands.run(["git", "clone", "-q", "--bare", "--shared", repo, clone])
        except CommandError as exc:
            raise UserError(f"source.repo {repo} cannot be cloned:\n{exc.output_tail}") from None
    else:
        _git(clone, "fetch", "-q", "--force", repo, "+refs/heads/*:refs/heads/*",
             "+refs/tags/*:refs/tags/*")
    return clone


def _bisect(clone: Path, *args: str) -> str:
    try:
        return commands.run(["git", "--git-dir", clone, "bisect", *args]).strip()
    except CommandError as exc:
        if SKIPPED_ONLY in exc.output_tail:
            return exc.output_tail  # git's way to say "ambiguous" is exit status 2
        raise EnvironmentProblem(f"git bisect failed in {clone}:\n{exc.output_tail}") from None


# ------------------------------------------------------------------ the bisection


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
    good, bad = _resolve(settings, b.good, "bisect.good"), _resolve(settings, b.bad, "bisect.bad")
    old, new = (good, bad) if b.find == "regression" else (bad, good)
    clone = prepare_clone(settings)
    try:
        _git(clone, "merge-base", "--is-ancestor", old, new)
    except EnvironmentProblem:
        older, newer = ("good", "bad") if b.find == "regression" else ("bad", "good")
        raise UserError(f"bisect.{older} ({old[:12]}) is not an ancestor of bisect.{newer} "
                        f"({new[:12]}): bisect.find={b.find} needs bisect.{older} to be the "
                        "older ref") from None
    count = int(_git(clone, "rev-list", "--count", f"{old}..{new}", "--", *b.paths) or 0)
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
    _bisect(clone, "reset")
    out = _bisect(clone, "start", "--no-checkout", f"--term-old={term_old}",
                  f"--term-new={term_new}", new, old, "--", *b.paths)
    while not FIRST.search(out) and SKIPPED_ONLY not in out:
        commit = _git(clone, "rev-parse", "BISECT_HEAD")
        step = test_commit(settings, repo, commit, symptom, b.runs, cache)
        steps.append(step)
        _print_row(step)
        if step.verdict == "abort":
            raise EnvironmentProblem(f"stopped at {commit[:12]}: {step.reason}. The verdicts so "
                                     "far are cached; run the bisection again once it is fixed")
        out = _bisect(clone, verdict_term[step.verdict] if step.verdict != "skip" else "skip",
                      commit)
    atomic_write_text(layout.bisect_log, _bisect(clone, "log") + "\n")
    _bisect(clone, "reset")
    report = _report(settings, clone, out, steps, symptom, old, new, count,
                     time.monotonic() - started)
    write_typed(layout.bisect_report, report)
    _print_end(report, clone)
    if report.candidates:
        shown = ", ".join(c[:12] for c in report.candidates)
        raise BisectAmbiguous(f"skipped commits leave {len(report.candidates)} candidates: "
                              f"{shown} (report: {layout.bisect_report})")
    return report


def _report(settings: Settings, clone: Path, out: str, steps: list[Step], symptom: Symptom,
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
        first_bad = FirstBad(culprit, _git(clone, "log", "-1", "--format=%s", culprit))
    good_ref, bad_ref = (old, new) if b.find == "regression" else (new, old)
    return BisectReport(
        find=b.find, first_bad=first_bad, candidates=candidates, good=good_ref, bad=bad_ref,
        symptom=symptom, commits_in_range=count, steps=[step.row() for step in steps],
        tested=tested, step_bound=bound, confidence=confidence, seconds=round(seconds, 1),
        schema=BISECT_SCHEMA)


def _print_end(report: BisectReport, clone: Path) -> None:
    print(f"\n{report.tested} step(s) (bound {report.step_bound}), {report.seconds:.0f} s",
          flush=True)
    if report.candidates:
        print("skipped commits leave several candidates (as git bisect says):")
        for commit in report.candidates:
            print("  " + _git(clone, "log", "-1", "--format=%h %s", commit))
        return
    culprit = report.first_bad
    word = "first bad commit" if report.find == "regression" else "first fixed commit"
    print(f"{word}: {culprit.commit}\n")
    print(_git(clone, "show", "--stat", "--format=medium", culprit.commit))
    if report.find == "regression":
        print(f"\nFixes: {culprit.commit[:12]} (\"{culprit.subject}\")")
    print(f"confidence: {report.confidence.note}", flush=True)


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
        commit = _resolve(settings, settings.source.ref, "source.ref")
        cache = VerdictCache(settings.layout.bisect_verdicts)
        result = test_commit(settings, repo, commit, symptom, settings.bisect.runs, cache)
    except PipelineError as exc:
        print(f"pipeline step: {exc}", flush=True)
        return STEP_EXIT["abort"]
    print(f"pipeline step: {commit[:12]} is {result.verdict}: {result.reason}", flush=True)
    return STEP_EXIT[result.verdict]
