"""Results of a guest run: the outcome, JUnit XML, JSON and a summary table."""

from __future__ import annotations

import enum
import fnmatch
import typing
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import msgspec

from . import kselftest
from .console import Finding
from .errors import Exit
from .ktap import Status, Test
from .records import read_typed, write_typed
from .util import atomic_write_text


class _GuestOutcome(enum.Enum):
    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


# How a run of the guest ended: the rows of the exit-code table for `boot` and
# `test`, and PASSED; the value is `python -m pipeline`'s exit code.
Outcome = _GuestOutcome("Outcome", [(row.name, row.code) for row in Exit
                                    if row is Exit.PASSED or "test" in row.tasks],
                        module=__name__)


@dataclass
class RunReport:
    suite: str
    outcome: Outcome
    why: str
    accel: str
    accel_why: str
    guest_status: int | None
    seconds: dict[str, float]
    findings: list[Finding] = field(default_factory=list)
    qemu_argv: list[str] = field(default_factory=list)
    kselftests: list[kselftest.Verdict] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)


@dataclass(frozen=True)
class Skip:
    """A case that did not run, and why; `allowed` by test.allow_skips or the known list."""

    name: str
    reason: str
    allowed: bool


# need_vendor's words (images/lib/kvm.sh): the guest's CPU cannot run KVM.
NO_VENDOR = "neither svm nor vmx"


def skips(tree: Test, verdicts: list[kselftest.Verdict], allow: list[str]) -> list[Skip]:
    """Every skipped case: allowed when a glob of `allow` (test.allow_skips) matches its
    name, or when it is a selftest the known list says skips here."""
    known = {f"{kselftest.SUITE}.{v.name}" for v in verdicts
             if v.status == Status.SKIPPED.value and v.known_skip}
    found = []
    for names, test in tree.walk():
        if test.subtests or test.status is not Status.SKIPPED:
            continue
        name = ".".join(names)
        allowed = name in known or any(fnmatch.fnmatchcase(name, glob) for glob in allow)
        found.append(Skip(name, test.directive or "no reason given", allowed))
    return found


def skip_failure(refused: list[Skip]) -> str:
    """Why skips fail the run, each named, and how to allow them."""
    named = "; ".join(f"{skip.name} ({skip.reason})" for skip in refused)
    suites: dict[str, list[str]] = {}
    for skip in refused:
        suites.setdefault(skip.name.split(".", 1)[0], []).append(skip.name)
    globs = ",".join(f"{suite}.*" if len(names) > 1 else names[0]
                     for suite, names in suites.items())
    why = (f"{len(refused)} case(s) skipped, and a case that does not run fails the run: "
           f"{named}.")
    if any(NO_VENDOR in skip.reason for skip in refused):
        why += (" The guest's CPU offers neither SVM nor VMX: this host gives its guests "
                "no nested virtualisation (load kvm_amd or kvm_intel with nested=1, or "
                "run under TCG with boot.accel=tcg, whose -cpu max has SVM).")
    return why + f" To accept these skips on this machine: test.allow_skips='{globs}'"


def classify_outcome(*, kernel_started: bool, timed_out: str | None, findings: list[Finding],
                     guest_status: int | None, tree: Test, skipped: Sequence[Skip] = (),
                     exercised: tuple[int, int] = (0, 0),
                     min_exercised_percent: int = 0) -> tuple[Outcome, str]:
    """One outcome for the run, the most fundamental problem first.

    A skip not allowed (`skipped`, from skips()) fails the run: a green run
    must have run what it claims.  `exercised`: (selftests exercised, selftests
    that passed alone and under injection); fewer than `min_exercised_percent`
    of those exercised fails the run.
    """
    if not kernel_started and not timed_out:
        return Outcome.QEMU_FAILED, "QEMU exited before the kernel printed anything"
    panic = next((f for f in findings if f.kind == "panic"), None)
    if panic:
        return Outcome.KERNEL_PANIC, f"console line {panic.line_number}: {panic.line}"
    if timed_out == "boot":
        return Outcome.BOOT_TIMEOUT, "the guest's init did not start before boot.boot_timeout"
    if timed_out:
        return Outcome.TEST_TIMEOUT, "the run did not finish before boot.test_timeout"
    if findings:
        first = findings[0]
        return (Outcome.CONSOLE_BADNESS,
                f"{len(findings)} kernel report(s), first: {first.kind} at console line "
                f"{first.line_number}: {first.line}")
    if guest_status is None:
        return Outcome.TEST_FAILURES, "the guest sent no exit status: the suite did not finish"
    counts = tree.counts()
    if tree.status in (Status.CRASHED, Status.NO_TESTS) or counts.failed or counts.crashed:
        return (Outcome.TEST_FAILURES,
                f"{counts.failed} failed, {counts.crashed} crashed, KTAP {tree.status.value}")
    if guest_status != 0:
        return Outcome.TEST_FAILURES, f"the suite exited with status {guest_status}"
    refused = [skip for skip in skipped if not skip.allowed]
    if refused:
        return Outcome.TEST_FAILURES, skip_failure(refused)
    done, run = exercised
    if run and done * 100 < min_exercised_percent * run:
        return (Outcome.TEST_FAILURES,
                f"exercised {done} of the {run} selftests that passed under injection (enough "
                "injections reached their threads), fewer than "
                f"test.min_exercised_percent={min_exercised_percent} % of them: the summary "
                "names the others and their counts. A selection of "
                "selftests that hardly enter KVM is not tested by injection; to accept it, "
                "lower test.min_exercised_percent (or kselftest.exercised_at)")
    allowed = f", {len(skipped)} skipped (allowed: {', '.join(s.name for s in skipped)})" \
        if skipped else ""
    exercised_part = f", exercised {done} of {run} selftests" if run else ""
    return Outcome.PASSED, f"{counts.passed} passed{allowed}{exercised_part}"


def _seconds(test: Test) -> float | None:
    """The test's wall time: its own, else the sum of its leaves' when each has one."""
    if test.seconds is not None or not test.subtests:
        return test.seconds
    leaves = [leaf for _, leaf in test.walk() if not leaf.subtests]
    if any(leaf.seconds is None for leaf in leaves):
        return None
    return sum(leaf.seconds for leaf in leaves)


def _junit_time(seconds: float) -> str:
    return f"{seconds:.3f}"


# results.json and repeat.json: what a guest run hands to the history, the matrix and
# anyone reading results; a file of another schema (or none) reads as missing.
RESULTS_SCHEMA = 1


class TestResult(msgspec.Struct, frozen=True, kw_only=True):
    """A KTAP test (and its subtests) as results.json holds it."""

    name: str
    status: str
    seconds: float | None
    directive: str
    diagnostics: list[str]
    errors: list[str]
    subtests: list[TestResult]

    @classmethod
    def of(cls, test: Test) -> TestResult:
        return cls(name=test.name, status=test.status.value,
                   seconds=None if test.seconds is None else round(test.seconds, 3),
                   directive=test.directive, diagnostics=test.diagnostics, errors=test.errors,
                   subtests=[cls.of(sub) for sub in test.subtests])

    def cases(self) -> list[tuple[list[str], TestResult]]:
        """A run's cases with their names: each suite's direct tests (a selftest's two
        runs are its one case), and any test straight under the run."""
        found = []
        for suite in self.subtests:
            if not suite.subtests:
                found.append(([suite.name], suite))
            found += [([suite.name, case.name], case) for case in suite.subtests]
        return found

    def tree(self) -> Test:
        """The KTAP test tree back."""
        return Test(name=self.name, status=Status(self.status), seconds=self.seconds,
                    directive=self.directive or "", diagnostics=list(self.diagnostics),
                    errors=list(self.errors), subtests=[sub.tree() for sub in self.subtests])


class Accelerator(msgspec.Struct, frozen=True):
    name: str
    why: str


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """build/results/results.json: how one guest run went."""

    suite: str
    outcome: str  # an Outcome's label
    exit_code: int
    why: str
    accelerator: Accelerator
    guest_status: int | None
    seconds: dict[str, float]
    counts: dict[str, int]
    console_findings: list[Finding]
    kselftests: list[kselftest.Verdict]
    selftests_exercised: int
    injections_at_points: dict[str, int]  # KVM function -> injections, most first
    skips: list[Skip]
    qemu_argv: list[str]
    tests: TestResult
    schema: int  # RESULTS_SCHEMA when written; a file without one reads as missing


class RepeatResult(msgspec.Struct, frozen=True, kw_only=True):
    """build/results/repeat.json: a repeated run so far (rewritten after every run)."""

    suite: str
    runs: int
    planned: int
    outcomes: list[str]
    cases: dict[str, dict[str, int]]  # case -> status -> runs
    schema: int  # RESULTS_SCHEMA when written; a file without one reads as missing


Record = typing.TypeVar("Record", RunResult, RepeatResult)


def write_json(path: Path, report: RunReport, tree: Test) -> RunResult:
    """results.json; the record written."""
    record = RunResult(
        suite=report.suite, outcome=report.outcome.label, exit_code=report.outcome.value,
        why=report.why, accelerator=Accelerator(report.accel, report.accel_why),
        guest_status=report.guest_status,
        seconds={k: round(v, 2) for k, v in report.seconds.items()},
        counts=asdict(tree.counts()), console_findings=report.findings,
        kselftests=report.kselftests,
        selftests_exercised=kselftest.exercised(report.kselftests),
        injections_at_points=kselftest.points_total(report.kselftests), skips=report.skips,
        qemu_argv=report.qemu_argv, tests=TestResult.of(tree), schema=RESULTS_SCHEMA)
    write_typed(path, record)
    return record


def read_record(path: Path, kind: type[Record]) -> Record | None:
    """A results.json or repeat.json; None when it is missing, unreadable or of another
    schema (an older pipeline's)."""
    return read_typed(path, kind, RESULTS_SCHEMA)


def junit_case(suite: ET.Element, classname: str, name: str, leaf: Test) -> None:
    """One leaf test as a <testcase> of `suite`: its time, verdict and output."""
    case = ET.SubElement(suite, "testcase", classname=classname, name=name)
    if leaf.seconds is not None:
        case.set("time", _junit_time(leaf.seconds))
    text = "\n".join(leaf.diagnostics)
    if leaf.status is Status.FAILED:
        ET.SubElement(case, "failure", message="not ok").text = text
    elif leaf.status is Status.CRASHED:
        ET.SubElement(case, "error", message="the test did not finish").text = text
    elif leaf.status in (Status.SKIPPED, Status.TODO, Status.NOT_EXERCISED):
        ET.SubElement(case, "skipped", message=leaf.directive)
    elif text:
        ET.SubElement(case, "system-out").text = text


def write_junit(path: Path, report: RunReport, tree: Test) -> None:
    """One <testsuite> per top-level KTAP test, its leaves as <testcase>s.

    `time` is the guest's measure of each case (`Test.seconds`) and of each
    suite (its own, else the sum of its cases'); left out where unknown.
    """
    suites = ET.Element("testsuites", name=report.suite)
    for top in tree.subtests or [tree]:
        leaves = [(p, t) for p, t in top.walk() if not t.subtests] or [([top.name], top)]
        counts = top.counts()
        suite = ET.SubElement(suites, "testsuite", name=top.name, tests=str(len(leaves)),
                              failures=str(counts.failed), errors=str(counts.crashed),
                              skipped=str(counts.skipped + counts.todo
                                          + counts.not_exercised))
        if (seconds := _seconds(top)) is not None:
            suite.set("time", _junit_time(seconds))
        if top.name == kselftest.SUITE and report.kselftests:
            properties = ET.SubElement(suite, "properties")
            for name, value in (
                    ("exercised", kselftest.exercised(report.kselftests)),
                    ("selftests", len(report.kselftests)),
                    ("known", kselftest.known_count(report.kselftests))):
                ET.SubElement(properties, "property", name=name, value=str(value))
        for names, leaf in leaves:
            junit_case(suite, top.name, ".".join(names), leaf)
    if report.outcome is not Outcome.PASSED:
        # The run itself as a test case, so CI shows a panic or timeout as a failure.
        suite = ET.SubElement(suites, "testsuite", name="guest", tests="1", failures="1")
        case = ET.SubElement(suite, "testcase", classname="guest", name="run")
        ET.SubElement(case, "failure", message=report.outcome.label).text = report.why
    ET.indent(suites)
    atomic_write_text(path, ET.tostring(suites, encoding="unicode") + "\n")


def summary(report: RunReport, tree: Test) -> str:
    rows = [(".".join(names), "" if test.seconds is None else f"{test.seconds:.1f}",
             test.status.value + (f" ({test.directive})" if test.directive else ""))
            for names, test in tree.walk() if not test.subtests]
    width = max([len(name) for name, _, _ in rows] + [4])
    lines = [f"{'test':<{width}}  {'time/s':>7}  result", f"{'-' * width}  -------  ------"]
    lines += [f"{name:<{width}}  {seconds:>7}  {status}" for name, seconds, status in rows]
    lines += kselftest.summary_lines(report.kselftests)
    if report.skips:
        lines.append("")
        lines += [f"skipped: {skip.name}: {skip.reason}"
                  f"{' (allowed)' if skip.allowed else ' (NOT ALLOWED: fails the run)'}"
                  for skip in report.skips]
    counts = tree.counts()
    lines.append("")
    lines.append(f"{report.suite}: {report.outcome.label} ({report.why})")
    selftests = ""
    if report.kselftests:
        selftests = (f", exercised {kselftest.exercised(report.kselftests)} of "
                     f"{len(report.kselftests)} selftests, known "
                     f"{kselftest.known_count(report.kselftests)}")
    lines.append(f"{counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped, "
                 f"{counts.not_exercised} not exercised, {counts.todo} known failures, "
                 f"{counts.crashed} crashed{selftests}; accelerator {report.accel} "
                 f"({report.accel_why}); {report.seconds.get('total', 0):.1f} s")
    return "\n".join(lines)
