"""The guest run (tasks `boot`, `test`): kernel command line, case selection, the
run itself and the repeat summary.  QEMU's process handling is in `qemu`.

The guest's init runs the suite named on the kernel command line; KTAP comes
back on the "ktap" virtio-serial port and the suite's exit status on the
"status" port, apart from the noisy console.  The console is a line stream
under two deadlines (init must start within boot.boot_timeout, the whole
run ends within boot.test_timeout), teed to build/results/console.log.
"""

from __future__ import annotations

import fnmatch
import logging
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from . import console, history, kcidb, kselftest, ktap, progress, qemu
from . import report as report_page
from .errors import MissingStepError, RunFailed, UserError
from .records import write_typed
from .results import (
    RESULTS_SCHEMA,
    Outcome,
    RepeatResult,
    RunReport,
    RunResult,
    classify_outcome,
    read_record,
    skips,
    summary,
    write_json,
    write_junit,
)
from .settings import Settings
from .util import atomic_write_text, remove_tree

log = logging.getLogger("pipeline")

INIT = "/usr/local/sbin/pipeline-init"
INIT_MARKER = "pipeline-init: running suite"
RESULT_FILES = ("console.log", "ktap.log", "status", "junit.xml", "results.json", "kcidb.json",
                "report.html", "vcpus.txt")



def kernel_cmdline(settings: Settings, suite: str, extra: tuple[str, ...] = ()) -> list[str]:
    return ["console=ttyS0", "root=/dev/vda", "rw", "panic=-1", f"init={INIT}",
            f"pipeline.suite={suite}", *settings.test.guest_parameters(),
            *settings.kselftest.guest_parameters(),
            *settings.boot.cmdline.split(), *extra]


def selected_suites(settings: Settings) -> str:
    """The suites of boot.suite that test.cases selects, comma-separated; not the
    selftests' suite when they are not built (kselftest.build=false)."""
    suites = [name for name in settings.boot.suite.split(",")
              if name and (settings.kselftest.build or name != kselftest.SUITE)]
    patterns = [p for p in settings.test.cases.split(",") if p]
    if not patterns:
        return ",".join(suites)
    # A pattern's part before the first dot names suites ("kvm.*" -> "kvm").
    chosen = {pattern: [s for s in suites if fnmatch.fnmatchcase(s, pattern.split(".", 1)[0])]
              for pattern in patterns}
    for pattern, matched in chosen.items():
        if not matched:
            raise UserError(
                f"test.cases: {pattern!r} matches none of the suites in boot.suite "
                f"({', '.join(suites)}); name one of them, e.g. {suites[0]}.CASE"
            )
    return ",".join(s for s in suites if any(s in matched for matched in chosen.values()))


def extra_disks(settings: Settings) -> tuple[Path, ...]:
    """boot.disks as paths (relative ones to the project), each an existing file."""
    disks = tuple(settings.resolve(name) for name in settings.boot.disks.split(",") if name)
    for disk in disks:
        if not disk.is_file():
            raise UserError(f"boot.disks: {disk} does not exist (or is not a file); name "
                            f"existing files, comma-separated, or leave it empty")
    return disks


def qemu_command(settings: Settings, accel: qemu.Accelerator, suite: str,
                 extra: tuple[str, ...] = (), results: Path | None = None,
                 monitor: Path | None = None) -> qemu.QemuCommand:
    layout = settings.layout
    results = results or layout.results
    return qemu.QemuCommand(
        accel=qemu.with_cpu(accel, settings.boot.cpu),
        kernel=layout.bzimage,
        cmdline=kernel_cmdline(settings, suite, extra),
        memory_mb=settings.boot.memory_mb,
        smp=settings.boot.smp,
        root_disk=layout.rootfs,
        disks=extra_disks(settings),
        ports={"ktap": results / "ktap.log", "status": results / "status"},
        monitor=monitor,
    )


def port_lines(path: Path) -> Iterator[str]:
    """The lines of a virtio-serial port's host file (empty if it was never written)."""
    try:
        with open(path, errors="replace") as handle:
            for line in handle:
                yield line.rstrip("\r\n")
    except FileNotFoundError:
        return


def read_results(settings: Settings, ktap_log: Path,
                 suite: str = "main") -> tuple[ktap.Test, list[kselftest.Verdict]]:
    """The parsed KTAP of a run, the kselftest suite's cases turned into verdicts."""
    tree = ktap.parse(port_lines(ktap_log), name=suite)
    return kselftest.merge(tree, settings.layout.kselftest_known,
                           exercised_at=settings.kselftest.exercised_at)


def accelerator(settings: Settings) -> qemu.Choice:
    layout = settings.layout
    return qemu.choose_accelerator(settings.boot.accel, layout.bzimage, layout.accel_verdict,
                                   layout.results / "kvm-probe.log")


def _guest_status(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def worth_showing(line: str) -> bool:
    """A console line for live progress: init's own, or a kernel complaint."""
    return "pipeline-init:" in line or bool(console.classify([line]))


# What a finished case's line says of its status.
STATUS_WORDS = {ktap.Status.PASSED: "ok", ktap.Status.FAILED: "FAILED",
                ktap.Status.SKIPPED: "skip", ktap.Status.TODO: "todo"}


class CaseFollower:
    """The suite's KTAP, read as the guest writes it: each case once, as it finishes.

    The file is parsed whole each time it grows (KTAP is parsed, never
    grepped; a run's is some thousand lines): a case counts once its result
    line is there.  A case is a suite's direct test; a selftest's two runs
    (alone, injected) show as their case's one line."""

    def __init__(self, ktap_log: Path, suite: str):
        self.ktap_log, self.suite = ktap_log, suite
        self.size = -1
        self.shown: set[str] = set()

    def finished(self) -> list[str]:
        """Lines for the cases that finished since the last call."""
        try:
            size = self.ktap_log.stat().st_size
        except FileNotFoundError:
            return []
        if size == self.size:
            return []
        self.size = size
        # Complete lines only: the guest may be halfway through one ("ok 2 tw").
        text = self.ktap_log.read_text(errors="replace")
        complete = text[:text.rfind("\n") + 1].splitlines()
        lines = []
        for names, test in ktap.parse(complete, name=self.suite).walk():
            name = ".".join(names)
            if len(names) > 2 or (len(names) == 1 and test.subtests) \
                    or test.status not in STATUS_WORDS or name in self.shown:
                continue
            self.shown.add(name)
            lines.append(case_line(name, test))
        return lines


def case_line(name: str, test: ktap.Test) -> str:
    """'  ok      kselftest.cpuid_test  alone ok, injected ok, 0 injections  5.4 s'"""
    details = []
    if name.startswith(f"{kselftest.SUITE}.") and test.subtests:
        # The kernel's runner ran it alone, then as NAME-injected.
        details += [f"{'injected' if sub.name.endswith('-injected') else 'alone'} "
                    f"{STATUS_WORDS.get(sub.status, sub.status.value)}" for sub in test.subtests]
    elif test.subtests:
        passed = sum(sub.status is ktap.Status.PASSED for sub in test.subtests)
        details.append(f"{passed}/{len(test.subtests)} passed")
    if (injections := kselftest.injections_of(test)) is not None:
        details.append(f"{injections} injections")
    if test.status is ktap.Status.SKIPPED and test.directive:
        details.append(test.directive)
    seconds = f"  {test.seconds:.1f} s" if test.seconds is not None else ""
    shown = f"  {', '.join(details)}" if details else ""
    return f"  {STATUS_WORDS[test.status]:<7} {name}{shown}{seconds}"


def run_suite(settings: Settings, suite: str, extra_cmdline: tuple[str, ...] = (),
              results: Path | None = None) -> RunReport:
    """Boot, run `suite`, write results (to `results`, by default
    build/results/); raise RunFailed unless it passed."""
    layout = settings.layout
    for artifact in (layout.bzimage, layout.rootfs):
        if not artifact.exists():
            raise MissingStepError(str(artifact), "build")
    results = results or layout.results
    results.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        remove_tree(results / name)  # no stale result may pass for this run's

    started = time.monotonic()
    choice = accelerator(settings)
    log.info("accelerator: %s (%s)", choice.accel.name, choice.why)
    # The last finished run of this suite says how long and how many cases to expect.
    last = history.last_run(layout, suite)
    last_result = read_record(last / "results.json", RunResult) if last else None
    expected_cases = len(CaseFollower(last / "ktap.log", suite).finished()) if last else 0
    follower = CaseFollower(results / "ktap.log", suite)
    # The monitor's socket lives in a short temporary path: a unix socket's
    # path may not exceed 107 bytes, which a deep build dir would.
    with tempfile.TemporaryDirectory(prefix="kvm-pipeline-") as sockets, \
            progress.Progress(f"guest {suite}", last_result.seconds.get("total")
                              if last_result else None) as shown:

        def show_line(line: str) -> None:
            if worth_showing(line):
                shown.done(f"  guest| {line}")

        def show_cases() -> None:
            for line in follower.finished():
                shown.done(line)
            of = f" of {expected_cases}" if expected_cases else ""
            shown.tick(f"{len(follower.shown)}{of} cases done")

        monitor = Path(sockets) / "monitor"
        argv = qemu_command(settings, choice.accel, suite, extra_cmdline, results,
                            monitor).argv()
        run = qemu.stream(argv, results / "console.log",
                          deadline=settings.boot.test_timeout, marker=INIT_MARKER,
                          marker_deadline=settings.boot.boot_timeout, on_line=show_line,
                          on_tick=show_cases,
                          on_timeout=lambda: record_vcpus(monitor, layout.system_map,
                                                          results / "vcpus.txt"))
        show_cases()  # the last ones

    findings = console.classify(run.lines)
    tree, verdicts = read_results(settings, results / "ktap.log", suite)
    guest_status = _guest_status(results / "status")
    started_kernel = any("Linux version" in line for line in run.lines)
    skipped = skips(tree, verdicts, [glob for glob in settings.test.allow_skips.split(",")
                                     if glob])
    outcome, why = classify_outcome(kernel_started=started_kernel, timed_out=run.timed_out,
                                    findings=findings, guest_status=guest_status, tree=tree,
                                    skipped=skipped,
                                    exercised=kselftest.exercised_share(verdicts),
                                    min_exercised_percent=settings.test.min_exercised_percent)
    if outcome is Outcome.QEMU_FAILED and run.lines:
        why += ": " + " / ".join(run.lines[-3:])
    report = RunReport(
        suite=suite, outcome=outcome, why=why, accel=choice.accel.name, accel_why=choice.why,
        guest_status=guest_status, findings=findings, qemu_argv=argv, kselftests=verdicts,
        skips=skipped,
        seconds={"total": time.monotonic() - started, "qemu": run.seconds,
                 "to_init": run.first_marker_seconds or 0.0},
    )
    written = write_json(results / "results.json", report, tree)
    write_junit(results / "junit.xml", report, tree)
    report_page.best_effort("kcidb.json", lambda: kcidb.write(layout, written, results))
    page = report_page.best_effort("report.html", lambda: report_page.write(layout, results))
    print(summary(report, tree), flush=True)
    if page is not None:
        print(f"report: {page}", flush=True)
    if outcome is not Outcome.PASSED:
        hung = f", vCPUs at the deadline: {results / 'vcpus.txt'}" \
            if (results / "vcpus.txt").is_file() else ""
        raise RunFailed(outcome, f"{why} (console: {results / 'console.log'}{hung})")
    return report


def record_vcpus(monitor: Path, system_map: Path, out: Path) -> None:
    """Where every vCPU of a guest that missed its deadline was: each one's
    RIP (named from System.map when it is the kernel's) and registers."""
    try:
        registers = qemu.monitor_command(monitor, "info registers -a")
    except OSError as exc:  # a guest that never got far enough for a monitor
        log.warning("could not read the hung guest's registers: %s", exc)
        return
    atomic_write_text(out, "\n".join(qemu.symbolize(registers, system_map))
                      + "\n\n" + registers.strip() + "\n")
    log.info("the hung guest's vCPUs: %s", out)


def boot_checks(settings: Settings) -> RunReport | None:
    """The `boot` task: the boot-check suite."""
    if not settings.boot.dry_run:
        history.keep_previous(settings.layout)
    return run_or_print(settings, "boot")


def test_suite(settings: Settings) -> RunReport | None:
    """The `test` task: the cases test.cases selects from boot.suite,
    test.repeat times."""
    suite = selected_suites(settings)
    if not settings.boot.dry_run:
        history.keep_previous(settings.layout)
    if settings.test.repeat == 1 or settings.boot.dry_run:
        return run_or_print(settings, suite)
    return repeat_suite(settings, suite, settings.test.repeat)


def repeat_suite(settings: Settings, suite: str, times: int) -> RunReport:
    """Run `suite` in `times` fresh guests; summarise each case's results.

    Every run goes on after a failed one; the first failure is raised at
    the end, so the exit code says how the first bad run went.  repeat.json
    is rewritten after every run: a repeat cut short (Ctrl-C, a killed job)
    still says how its finished runs went, and the history names it by them.
    """
    results = settings.layout.results
    remove_tree(results)
    runs: list[tuple[RunReport | None, RunFailed | None]] = []
    outcomes: list[str] = []
    per_case: dict[str, Counter[str]] = {}
    for number in range(1, times + 1):
        print(f"=== run {number} of {times}", flush=True)
        run_results = results / f"run-{number}"
        report, failure = None, None
        try:
            report = run_suite(settings, suite, results=run_results)
        except RunFailed as exc:
            failure = exc
        runs.append((report, failure))
        outcomes.append(report.outcome.label if report else failure.outcome.label)
        tree, _ = read_results(settings, run_results / "ktap.log", suite)
        for names, test in tree.walk():
            if not test.subtests:
                per_case.setdefault(".".join(names), Counter())[test.status.value] += 1
        write_typed(results / "repeat.json", RepeatResult(
            suite=suite, runs=number, planned=times, outcomes=outcomes,
            cases={name: dict(counts) for name, counts in per_case.items()},
            schema=RESULTS_SCHEMA))
    width = max([len(name) for name in per_case] + [4])
    print(f"{'case':<{width}}  passed/runs", flush=True)
    for name, counts in per_case.items():
        others = ", ".join(f"{k} {v}" for k, v in counts.items() if k != "passed")
        print(f"{name:<{width}}  {counts.get('passed', 0)}/{times}"
              + (f"  ({others})" if others else ""))
    print(f"runs: {', '.join(outcomes)} (results in {results}/run-N/)", flush=True)
    failure = next((failure for _, failure in runs if failure), None)
    if failure:
        raise failure
    return runs[-1][0]


def run_or_print(settings: Settings, suite: str) -> RunReport | None:
    if not settings.boot.dry_run:
        return run_suite(settings, suite)
    # A dry run: the command line a human can read or paste.
    choice = accelerator(settings)
    print(f"# accelerator {choice.accel.name}: {choice.why}")
    print(qemu_command(settings, choice.accel, suite).shell())
    return None
