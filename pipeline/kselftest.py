"""The kselftest suite's results: each KVM selftest's verdict, alone and under injection.

In the guest (images/suites/kselftest) every selftest is one case of the
`kselftest` suite.  Its subtests are the KTAP document of the kernel's
runner, which ran the test twice: as NAME alone and as NAME-injected, with
the injector aimed at its process.  The case's own result says whether the
injector's checks held (aimed, trampoline balanced, counters adding up,
modules unloading), a `kselftest_injections: N` diagnostic counts the
injections into the test's threads (the timer's and the points'), and one
`kselftest_point: FUNCTION N` line per injection point says how many were
at that KVM function.

`merge()` replaces each such case by one leaf carrying the test's verdict:

    alone     injected    the case
    passed    passed      passed, when at least kselftest.exercised_at
                          injections reached the test's threads; else "not
                          exercised" (its own status: it proves little about
                          scheduling; below test.min_exercised_percent of the
                          selftests exercised, the run fails)
    passed    not passed  failed: passes alone, fails under injection (for a
                          known test too, with the list's reason beside it:
                          a known flake and an injector bug look alike; with
                          no injection into its threads, that is said too)
    skipped   -           skipped, with the reason the test printed; the run
                          fails unless the known list says the test skips
                          here ("skips"), or test.allow_skips allows it
    failed    -           failed; a known failure (images/kselftest-known)
                          is todo, with the list's reason, but only when it
                          fails the way the list says (its output holds the
                          entry's text, or it timed out for "hangs"): any
                          other failure of a listed test is a failure
    the injector's checks failed: failed;  the runner cut off: crashed

The count-only case (`count_only`) is the suite's own and stays as it is,
apart from its subtests (the runner's results, each test once more), whose
failures it takes on; a known test's failure there, the way the list says,
is only noted, with the list's reason, as its failure alone is.

images/kselftest-known holds one entry a line, three tab-separated fields:
a glob over test names, what the entry tolerates, and why:

    debug_regs<TAB>output: Unhandled exception<TAB>TCG's nested SVM ...
    memslot_perf_test<TAB>hangs<TAB>runs past the per-test timeout ...
    vmx_*<TAB>skips<TAB>needs Intel VMX ...

"output: TEXT": a failure whose output has TEXT in a line; "hangs": the
runner's timeout ("TIMEOUT N seconds"); "skips": a skip.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .ktap import Status, Test

SUITE = "kselftest"
INJECTED_SUFFIX = "-injected"
COUNTED_SUFFIX = "-counted"
COUNT_ONLY = "count_only"
# "ok 1 selftests: kvm: NAME": the runner's name for a test of collection kvm.
_RUNNER_NAME = re.compile(r"^selftests: \S+: (\S+)$")
_INJECTIONS = re.compile(r"^kselftest_injections:\s*([0-9]{1,12})$")
_POINT = re.compile(r"^kselftest_point:\s*(\S+)\s+([0-9]{1,12})$")
# How kselftest's helpers say why a test skipped: "1..0 # SKIP - reason",
# "ok 1 # SKIP reason" or a library's "SKIP: reason"; the runner prefixes "# ".
_SKIP_REASON = re.compile(r"SKIP\b[\s:-]*(.*)$")
# Lines of a failing test's output the summary shows.
OUTPUT_TAIL = 15
# A test failing in its injected pass although no sleep was injected into its
# threads: only the injector's timer ran beside it (e.g. a timing check that a
# busy host's stall breaks), so the injector is not the first suspect.
NOTHING_INJECTED = "no injection into its threads"
NOT_INJECTED_INTO = "no injection reached its threads: it says nothing about scheduling"
# What a known list entry may tolerate: a skip (which then does not fail a run,
# as any other skip of a selftest does), a timeout, a failure saying TEXT.
SKIPS = "skips"
HANGS = "hangs"
OUTPUT = "output: "
# The kselftest runner's result comment for a test it killed.
_TIMEOUT = re.compile(r"^TIMEOUT [0-9]+ seconds$")


@dataclass(frozen=True)
class Verdict:
    """One selftest: how it did alone and under injection."""

    name: str
    status: str  # the merged case's Status value
    alone: str
    injected: str
    injections: int | None  # None: the guest did not report a count
    why: str
    output: tuple[str, ...] = ()  # the failing run's last lines
    known: str = ""  # the known list's entry naming the test: "tolerates: reason"
    known_skip: bool = False  # a skip the known list expects here
    # Injections at each injection point (KVM function), part of `injections`.
    points: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Known:
    """An entry of images/kselftest-known."""

    pattern: str
    tolerates: str  # "output: TEXT", "hangs" or "skips"
    reason: str

    def __str__(self) -> str:
        return f"{self.tolerates}: {self.reason}"

    def tolerates_failure(self, run: Test | None) -> bool:
        """The run failed the way this entry says it does."""
        if run is None:
            return False
        if self.tolerates == HANGS:
            return any(_TIMEOUT.match(line) for line in run.diagnostics)
        if self.tolerates.startswith(OUTPUT):
            text = self.tolerates.removeprefix(OUTPUT)
            return any(text in line for line in run.diagnostics)
        return False  # "skips" tolerates no failure


def load_known(path: Path) -> list[Known]:
    """images/kselftest-known's entries; comments and blank lines skipped."""
    known = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        tolerates = fields[1].strip() if len(fields) == 3 else ""
        # Stripped, "output: " with no TEXT is "output:", which is refused.
        if not (tolerates in (SKIPS, HANGS) or tolerates.startswith(OUTPUT)):
            raise UserError(
                f"{path}:{number}: want GLOB<TAB>TOLERATES<TAB>REASON, where TOLERATES is "
                f"'{OUTPUT}TEXT' (a line of the failure's output holds TEXT), '{HANGS}' "
                f"(it times out) or '{SKIPS}'; got {line!r}")
        known.append(Known(fields[0].strip(), tolerates, fields[2].strip()))
    return known


def known_entry(name: str, known: list[Known]) -> Known | None:
    return next((entry for entry in known if fnmatch.fnmatchcase(name, entry.pattern)), None)


def _runner_name(test: Test) -> str:
    match = _RUNNER_NAME.match(test.name)
    return match.group(1) if match else test.name


def _skip_reason(test: Test) -> str:
    for line in reversed(test.diagnostics):
        if match := _SKIP_REASON.search(line):
            return match.group(1).strip() or "skipped"
    return test.directive or "the test skipped (it printed no reason)"


def injections_of(case: Test) -> int | None:
    """The `kselftest_injections: N` count of a selftest case; None when it has none."""
    for line in case.diagnostics:
        if match := _INJECTIONS.match(line):
            return int(match.group(1))
    return None


def _points(case: Test) -> dict[str, int]:
    return {match.group(1): int(match.group(2))
            for line in case.diagnostics if (match := _POINT.match(line))}


def _tail(test: Test) -> list[str]:
    return test.diagnostics[-OUTPUT_TAIL:]


def _too_few(injections: int | None, exercised_at: int) -> str:
    if injections is None:
        return "the guest reported no injection count"
    if injections == 0:
        return NOT_INJECTED_INTO
    return (f"only {injections} injection(s) reached its threads, fewer than "
            f"kselftest.exercised_at={exercised_at}: too few to say much about scheduling")


def _verdict(case: Test, known: list[Known], exercised_at: int) -> tuple[Test, Verdict]:
    """The leaf replacing one selftest's case, and its verdict: exercised when at least
    `exercised_at` injections reached the test's threads."""
    runs = {_runner_name(sub): sub for sub in case.subtests}
    alone = runs.get(case.name)
    injected = runs.get(case.name + INJECTED_SUFFIX)
    injections = injections_of(case)
    points = _points(case)
    entry = known_entry(case.name, known)
    reason = str(entry) if entry else ""
    known_skip = False
    alone_status = alone.status if alone else Status.CRASHED
    injected_status = injected.status if injected else Status.CRASHED
    status, directive = Status.PASSED, ""
    why = "passes alone and under injection"
    output: list[str] = []
    if Status.CRASHED in (case.status, alone_status, injected_status):
        status, why = Status.CRASHED, "the runner's output ended before the test's result"
    elif alone_status is Status.SKIPPED:
        status = Status.SKIPPED
        directive = why = _skip_reason(alone)
        if entry and entry.tolerates == SKIPS:
            known_skip = True
            directive = why = f"{why} (known: {reason})"
    elif alone_status is not Status.PASSED:
        why = "fails alone"
        if entry and entry.tolerates_failure(alone):
            status, directive = Status.TODO, f"known: {reason}"
            why += f" (known: {reason})"
        else:
            status = Status.FAILED
            if entry:
                why += (f", not the way the known list says it does ({reason}): "
                        f"{_unlike(entry)}")
        output = _tail(alone)
    elif injected_status is not Status.PASSED:
        # Still a failure: a known flake and an injector bug look alike here.
        status, why = Status.FAILED, "passes alone, FAILS UNDER INJECTION"
        if injections == 0:
            why += f" with {NOTHING_INJECTED} (look at the test's own timing first)"
        if reason:
            why += f" (on the known list, which may explain it: {reason})"
        output = _tail(injected)
    elif case.status is Status.FAILED:
        status, why = Status.FAILED, "the injector's checks failed (see the case's output)"
    elif injections is None or injections < exercised_at:
        status = Status.NOT_EXERCISED
        directive = why = ("not exercised: passes alone and under injection, but "
                           + _too_few(injections, exercised_at))
    head = [f"alone: {alone_status.value}", f"under injection: {injected_status.value}",
            f"injections into its threads: {'?' if injections is None else injections}",
            *([f"of which at points: {by_function(points)}"] if points else []),
            f"verdict: {why}"]
    if output:
        head += ["output:", *output]
    diagnostics = head + [line for line in case.diagnostics
                          if not (_INJECTIONS.match(line) or _POINT.match(line))]
    for run in (alone, injected):
        if run is not None:
            diagnostics += [f"[{run.name}] {line}" for line in run.diagnostics]
    leaf = dataclasses.replace(case, status=status, directive=directive, subtests=[],
                               diagnostics=diagnostics)
    return leaf, Verdict(case.name, status.value, alone_status.value, injected_status.value,
                         injections, why, tuple(output), reason, known_skip, points)


def _unlike(entry: Known) -> str:
    if entry.tolerates == SKIPS:
        return "it failed instead of skipping"
    if entry.tolerates == HANGS:
        return "it failed without timing out"
    return f"no line of its output says {entry.tolerates.removeprefix(OUTPUT)!r}"


def _known_failure(run: Test, known: list[Known]) -> str | None:
    """The known list's entry for a failed run of the count-only pass, when it failed
    the way the entry says."""
    entry = known_entry(_runner_name(run).removesuffix(COUNTED_SUFFIX), known)
    return str(entry) if entry and entry.tolerates_failure(run) else None


def _count_only(case: Test, known: list[Known]) -> Test:
    """The count-only case, failed by any test that failed while counted, but for
    a known failure (images/kselftest-known), which is only noted, as alone."""
    # Each failed run's name -> the known list's entry for its failure, if any.
    failed = {sub.name: _known_failure(sub, known)
              for sub in case.subtests if sub.status not in (Status.PASSED, Status.SKIPPED)}
    status = case.status
    diagnostics = list(case.diagnostics)
    unknown = [name for name, reason in failed.items() if reason is None]
    if unknown and status is Status.PASSED:
        status = Status.FAILED
        diagnostics.append(f"failed while counted (nothing injected): {', '.join(unknown)}")
    diagnostics += [f"known failure while counted: {name} (known: {reason})"
                    for name, reason in failed.items() if reason is not None]
    for sub in case.subtests:
        diagnostics.append(f"[{sub.name}] {sub.status.value}")
        if sub.name in failed:
            diagnostics += [f"[{sub.name}] {line}" for line in _tail(sub)]
    return dataclasses.replace(case, status=status, subtests=[], diagnostics=diagnostics)


def merge(tree: Test, known_file: Path, *, exercised_at: int) -> tuple[Test, list[Verdict]]:
    """`tree` with the kselftest suite's cases turned into verdicts (no suite: unchanged);
    known failures as `known_file` (images/kselftest-known) lists them; a selftest
    with fewer than `exercised_at` injections into its threads is not exercised."""
    suite = next((top for top in tree.subtests if top.name == SUITE), None)
    if suite is None:
        return tree, []
    known = load_known(known_file)
    cases, verdicts = [], []
    for case in suite.subtests:
        if case.name == COUNT_ONLY:
            cases.append(_count_only(case, known))
        elif case.subtests:
            leaf, verdict = _verdict(case, known, exercised_at)
            cases.append(leaf)
            verdicts.append(verdict)
        else:
            cases.append(case)  # e.g. skipped: no selftests in the image
    merged_suite = dataclasses.replace(suite, subtests=cases)
    tops = [merged_suite if top is suite else top for top in tree.subtests]
    return dataclasses.replace(tree, subtests=tops), verdicts


def summary_lines(verdicts: list[Verdict]) -> list[str]:
    """What the run summary says of the selftests beyond the table."""
    if not verdicts:
        return []
    lines = ["", f"{'selftest':<32} {'alone':<8} {'injected':<9} {'injections':>10} "
             f"{'at points':>9}"]
    for verdict in verdicts:
        count = "?" if verdict.injections is None else str(verdict.injections)
        lines.append(f"{verdict.name:<32} {verdict.alone:<8} {verdict.injected:<9} {count:>10} "
                     f"{sum(verdict.points.values()):>9}")
    functions = points_total(verdicts)
    if functions:
        lines.append(f"injections at points, all selftests: {by_function(functions)}")
    for verdict in verdicts:
        if verdict.alone == "passed" and verdict.injected != "passed":
            untouched = f"; {NOTHING_INJECTED}" if verdict.injections == 0 else ""
            known = f"; on the known list: {verdict.known}" if verdict.known else ""
            lines.append(f"FAILS UNDER INJECTION: {verdict.name} (passes alone{untouched}{known});"
                         " its output:")
            lines += [f"  {line}" for line in verdict.output]
    idle = [f"{v.name} ({'?' if v.injections is None else v.injections})"
            for v in verdicts if v.status == Status.NOT_EXERCISED.value]
    if idle:
        lines.append("not exercised (passed, but too few injections reached their threads): "
                     + ", ".join(idle))
    passed_both = sum(v.alone == "passed" and v.injected == "passed" for v in verdicts)
    lines.append(f"selftests: {passed_both} of {len(verdicts)} pass alone and under injection, "
                 f"exercised {exercised(verdicts)} of {len(verdicts)}, "
                 f"{sum(v.injections or 0 for v in verdicts)} injections in all, "
                 f"known {known_count(verdicts)}")
    return lines


def points_total(verdicts: list[Verdict]) -> dict[str, int]:
    """Injections at each point over every selftest, most first."""
    total: dict[str, int] = {}
    for verdict in verdicts:
        for function, count in verdict.points.items():
            total[function] = total.get(function, 0) + count
    return dict(sorted(total.items(), key=lambda item: (-item[1], item[0])))


def by_function(points: dict[str, int]) -> str:
    return ", ".join(f"{function} {count}" for function, count in points.items())


def known_count(verdicts: list[Verdict]) -> int:
    """Selftests the known list names (run because kselftest.tests selected them)."""
    return sum(bool(v.known) for v in verdicts)


def exercised_share(verdicts: list[Verdict]) -> tuple[int, int]:
    """(selftests exercised, selftests that passed alone and under injection): what
    test.min_exercised_percent judges; skips and known failures are judged elsewhere."""
    candidates = (Status.PASSED.value, Status.NOT_EXERCISED.value)
    return exercised(verdicts), sum(v.status in candidates for v in verdicts)


def exercised(verdicts: list[Verdict]) -> int:
    """Selftests that passed under injection and got enough of it (kselftest.exercised_at):
    the ones that say something about scheduling."""
    return sum(v.status == Status.PASSED.value for v in verdicts)
