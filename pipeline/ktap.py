"""A KTAP parser (Documentation/dev-tools/ktap.rst), in the manner of kunit_tool.

`parse(lines)` reads a line stream lazily and returns a tree of `Test`s with
a `Status` each and rolled-up `Counts`.  It never raises: malformed lines
become recorded errors, a stream that stops before its plan is complete
marks the enclosing test CRASHED, and a missing plan is noted.  The same
parser reads a saved log offline.

A diagnostic line `# duration_ms: N` right before a result line, as our
guest's ktap_run (images/lib/ktap.sh) prints for every case and suite, is
that test's wall time: it becomes `Test.seconds` instead of a diagnostic.
A malformed one stays a diagnostic and records no time.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


class Status(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    TODO = "todo"          # "not ok ... # TODO": a known failure, not counted as one
    CRASHED = "crashed"    # the stream ended before the test's result
    NO_TESTS = "no tests"
    # Not KTAP's: a test that passed under injection without getting any, so it
    # says nothing about scheduling (pipeline.kselftest gives it this status).
    NOT_EXERCISED = "not exercised"


@dataclass
class Counts:
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    todo: int = 0
    crashed: int = 0
    not_exercised: int = 0
    errors: int = 0

    def add(self, other: Counts) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @property
    def total(self) -> int:
        return (self.passed + self.failed + self.skipped + self.todo + self.crashed
                + self.not_exercised)


@dataclass
class Test:
    name: str
    status: Status = Status.NO_TESTS
    number: int | None = None
    directive: str = ""               # the text after "# SKIP" / "# TODO"
    diagnostics: list[str] = field(default_factory=list)
    subtests: list[Test] = field(default_factory=list)
    expected_count: int | None = None  # from the plan line "1..N"
    errors: list[str] = field(default_factory=list)
    seconds: float | None = None      # wall time, from a "# duration_ms: N" line

    def counts(self) -> Counts:
        """Leaf results below this test (itself, if it has no subtests)."""
        total = Counts(errors=len(self.errors))
        if not self.subtests:
            attribute = {Status.PASSED: "passed", Status.FAILED: "failed",
                         Status.SKIPPED: "skipped", Status.TODO: "todo",
                         Status.CRASHED: "crashed",
                         Status.NOT_EXERCISED: "not_exercised"}.get(self.status)
            if attribute:
                setattr(total, attribute, 1)
            return total
        for sub in self.subtests:
            total.add(sub.counts())
        return total

    def walk(self) -> Iterator[tuple[list[str], Test]]:
        """Every test below this one with its path of names."""
        for sub in self.subtests:
            yield [sub.name], sub
            for path, inner in sub.walk():
                yield [sub.name, *path], inner


_VERSION = re.compile(r"^(?:KTAP|TAP) version (\d+)$")
_PLAN = re.compile(r"^1\.\.(\d+)(?:\s*#.*)?$")
_RESULT = re.compile(r"^(ok|not ok)(?:\s+(\d+))?(?:\s+-)?\s*([^#]*?)\s*(?:#\s*(.*))?$")
_SUBTEST = re.compile(r"^# Subtest: (.*)$")
_DIRECTIVE = re.compile(r"^(SKIP|TODO|XFAIL)\b\s*(.*)$", re.IGNORECASE)
# Bounded, so that float() of a match can neither fail nor overflow.
_DURATION = re.compile(r"^duration_ms:\s*([0-9]{1,12}(?:\.[0-9]{1,6})?)$")
INDENT = 4


@dataclass
class _Line:
    number: int
    indent: int
    text: str


class _Lines:
    """A peekable stream of lines with the (kernel log) prefix stripped."""

    def __init__(self, lines: Iterable[str]):
        self._iter = iter(lines)
        self._number = 0
        self._peeked: _Line | None = None
        self._prefix: str | None = None

    def _next_raw(self) -> _Line | None:
        for raw in self._iter:
            self._number += 1
            raw = raw.rstrip("\r\n")
            if self._prefix is None:
                match = re.search(r"(?:KTAP|TAP) version \d+", raw)
                if not match:
                    continue  # noise before the first header (e.g. console lines)
                # The prefix (e.g. a printk timestamp) has the same width on every
                # line, as kunit_tool assumes; spaces before the header are indentation.
                self._prefix = raw[:match.start()].rstrip(" ")
            line = raw[len(self._prefix):]
            stripped = line.lstrip(" ")
            return _Line(self._number, len(line) - len(stripped), stripped.rstrip())
        return None

    def peek(self) -> _Line | None:
        if self._peeked is None:
            self._peeked = self._next_raw()
        return self._peeked

    def pop(self) -> _Line | None:
        line = self.peek()
        self._peeked = None
        return line


def _take_duration(diagnostics: list[str]) -> float | None:
    """Seconds from a `duration_ms: N` last diagnostic, which it removes; else None."""
    if diagnostics and (match := _DURATION.match(diagnostics[-1])):
        diagnostics.pop()
        return float(match.group(1)) / 1000
    return None


def _result_test(match: re.Match, subtests: list[Test], diagnostics: list[str],
                 name_hint: str) -> Test:
    ok, number, name, comment = match.group(1), match.group(2), match.group(3), match.group(4)
    seconds = _take_duration(diagnostics)
    test = Test(name=name or name_hint or "(unnamed)", number=int(number) if number else None,
                diagnostics=diagnostics, subtests=subtests, seconds=seconds)
    directive = _DIRECTIVE.match(comment or "")
    kind = directive.group(1).upper() if directive else ""
    if kind == "SKIP":
        test.status, test.directive = Status.SKIPPED, directive.group(2)
    elif kind in ("TODO", "XFAIL") and ok == "not ok":
        test.status, test.directive = Status.TODO, directive.group(2)
    else:
        test.status = Status.PASSED if ok == "ok" else Status.FAILED
        if comment:
            test.diagnostics.append(comment)
    return test


def _parse_block(lines: _Lines, indent: int, parent: Test, nested: bool) -> None:
    """Fill `parent` with the tests at `indent` until the block ends.

    A nested block is followed by its parent's result line for it; the stream
    ending first means that test never finished.
    """
    pending = Test(name="")
    diagnostics: list[str] = []
    seen_plan = False
    while (line := lines.peek()) is not None:
        if line.indent > indent:
            # A nested block: the subtests of the result line that follows it.
            pending = Test(name="")
            _parse_block(lines, line.indent, pending, nested=True)
            parent.errors.extend(pending.errors)
            if pending.status is Status.CRASHED:
                pending.name = pending.name or "(unnamed)"
                parent.subtests.append(pending)
                parent.status = Status.CRASHED
                return
            continue
        if line.indent < indent:
            break
        lines.pop()
        text = line.text
        if _VERSION.match(text) or not text:
            continue
        if match := _SUBTEST.match(text):
            parent.name = parent.name or match.group(1)
            continue
        if match := _PLAN.match(text):
            if seen_plan:
                parent.errors.append(f"line {line.number}: second plan {text!r}")
            parent.expected_count = int(match.group(1))
            seen_plan = True
            continue
        if match := _RESULT.match(text):
            test = _result_test(match, pending.subtests, diagnostics, pending.name)
            test.expected_count = pending.expected_count
            expected_number = len(parent.subtests) + 1
            if test.number is not None and test.number != expected_number:
                parent.errors.append(f"line {line.number}: test number {test.number}, "
                                     f"expected {expected_number}")
            parent.subtests.append(test)
            pending, diagnostics = Test(name=""), []
            continue
        if text.startswith("#"):
            diagnostics.append(text[1:].strip())
            continue
        parent.errors.append(f"line {line.number}: not KTAP: {text!r}")

    parent.diagnostics.extend(diagnostics)
    if pending.subtests:
        pending.name = pending.name or "(unnamed)"
        pending.status = Status.CRASHED
        parent.subtests.append(pending)
    if not seen_plan:
        parent.errors.append(f"{parent.name or 'top level'}: no plan line (1..N)")
    elif len(parent.subtests) < (parent.expected_count or 0):
        parent.errors.append(f"{parent.name or 'top level'}: planned {parent.expected_count} "
                             f"tests, got {len(parent.subtests)}")
        parent.status = Status.CRASHED
        return
    if nested and lines.peek() is None:
        parent.status = Status.CRASHED  # the stream ended before this block's result line


def _rolled_up(test: Test) -> Status:
    if not test.subtests:
        return Status.NO_TESTS
    statuses = {sub.status for sub in test.subtests}
    if Status.CRASHED in statuses:
        return Status.CRASHED
    if Status.FAILED in statuses:
        return Status.FAILED
    if statuses <= {Status.SKIPPED}:
        return Status.SKIPPED
    return Status.PASSED


def parse(lines: Iterable[str], name: str = "main") -> Test:
    """The tree of tests in a KTAP stream; never raises."""
    root = Test(name=name)
    stream = _Lines(lines)
    first = stream.peek()
    if first is None:
        root.errors.append("no KTAP version line: the stream is empty or not KTAP")
        return root
    _parse_block(stream, first.indent, root, nested=False)
    crashed = root.status is Status.CRASHED
    root.status = Status.CRASHED if crashed else _rolled_up(root)
    return root
