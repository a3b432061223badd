"""Results of a guest run: the outcome, JUnit XML, JSON and a summary table."""

from __future__ import annotations

import enum
import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import kselftest
from .console import Finding
from .ktap import Status, Test
from .util import atomic_write_text


class Outcome(enum.Enum):
    """How a run ended; the value is `python -m pipeline`'s exit code."""

    PASSED = 0
    TEST_FAILURES = 10
    CONSOLE_BADNESS = 11
    KERNEL_PANIC = 12
    BOOT_TIMEOUT = 13
    TEST_TIMEOUT = 14
    QEMU_FAILED = 15

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", " ")


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


def classify_outcome(*, kernel_started: bool, timed_out: str | None, findings: list[Finding],
                     guest_status: int | None, tree: Test,
                     skips_allowed: bool = True) -> tuple[Outcome, str]:
    """One outcome for the run, the most fundamental problem first.

    `skips_allowed` is false under TCG with -cpu max, which offers
    everything a case needs (SVM included): a skip there is a failure.
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
    # A KVM selftest's skip is the kernel test's own verdict on this machine
    # (with its reason), not one of our cases going quiet.
    skipped = [".".join(names) for names, test in tree.walk()
               if not test.subtests and test.status is Status.SKIPPED
               and names[0] != kselftest.SUITE]
    if skipped and not skips_allowed:
        return (Outcome.TEST_FAILURES,
                f"{len(skipped)} case(s) skipped under TCG with -cpu max, where every case "
                f"must run: {', '.join(skipped)}")
    return Outcome.PASSED, f"{counts.passed} passed, {counts.skipped} skipped"


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


def _test_json(test: Test) -> dict:
    return {
        "name": test.name,
        "status": test.status.value,
        "seconds": None if test.seconds is None else round(test.seconds, 3),
        "directive": test.directive,
        "diagnostics": test.diagnostics,
        "errors": test.errors,
        "subtests": [_test_json(sub) for sub in test.subtests],
    }


def write_json(path: Path, report: RunReport, tree: Test) -> None:
    data = {
        "suite": report.suite,
        "outcome": report.outcome.label,
        "exit_code": report.outcome.value,
        "why": report.why,
        "accelerator": {"name": report.accel, "why": report.accel_why},
        "guest_status": report.guest_status,
        "seconds": {k: round(v, 2) for k, v in report.seconds.items()},
        "counts": asdict(tree.counts()),
        "console_findings": [asdict(f) for f in report.findings],
        "kselftests": [asdict(v) for v in report.kselftests],
        "qemu_argv": report.qemu_argv,
        "tests": _test_json(tree),
    }
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def test_from_json(data: dict) -> Test:
    """A test tree back from its results.json form (_test_json)."""
    return Test(name=data["name"], status=Status(data["status"]), seconds=data["seconds"],
                directive=data["directive"] or "", diagnostics=list(data["diagnostics"]),
                errors=list(data["errors"]),
                subtests=[test_from_json(sub) for sub in data["subtests"]])


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
    elif leaf.status in (Status.SKIPPED, Status.TODO):
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
                              skipped=str(counts.skipped + counts.todo))
        if (seconds := _seconds(top)) is not None:
            suite.set("time", _junit_time(seconds))
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
    counts = tree.counts()
    lines.append("")
    lines.append(f"{report.suite}: {report.outcome.label} ({report.why})")
    lines.append(f"{counts.passed} passed, {counts.failed} failed, {counts.skipped} skipped, "
                 f"{counts.crashed} crashed; accelerator {report.accel} ({report.accel_why}); "
                 f"{report.seconds.get('total', 0):.1f} s")
    return "\n".join(lines)
