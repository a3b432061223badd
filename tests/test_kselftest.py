"""The kselftest suite's results: the kernel runner's nested KTAP merged into verdicts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from helpers import ROOT

from pipeline import kselftest, ktap, results
from pipeline.errors import UserError
from pipeline.results import Outcome, classify_outcome

GOLDEN = Path(__file__).parent / "golden"
KNOWN_FILE = ROOT / "images" / "kselftest-known"
KNOWN = kselftest.load_known(KNOWN_FILE)
# kselftest.exercised_at's default.
EXERCISED_AT = 10


def runner_result(number: int, name: str, result: str, output: tuple[str, ...]) -> list[str]:
    return [f"        # selftests: kvm: {name}", *(f"        # {line}" for line in output),
            f"        {result} {number} selftests: kvm: {name}"]


def selftest_case(number: int, name: str, alone: str = "ok", injected: str = "ok",
                  injections: int = 17, case_result: str = "ok",
                  alone_output: tuple[str, ...] = ("1..1", "ok 1 it works"),
                  injected_output: tuple[str, ...] = ("1..1", "ok 1 it works"),
                  points: tuple[tuple[str, int], ...] = ()) -> list[str]:
    """One case as images/suites/kselftest prints it: the runner's document, then ours."""
    return ["        TAP version 13", "        1..2",
            "        # timeout set to 120",
            *runner_result(1, name, alone, alone_output),
            "        # timeout set to 120",
            *runner_result(2, f"{name}-injected", injected, injected_output),
            f"    # kselftest_injections: {injections}",
            *(f"    # kselftest_point: {function} {count}" for function, count in points),
            "    # injections 7, trampoline entries 7, exits 7",
            f"    {case_result} {number} {name}"]


def stream(*cases: list[str]) -> list[str]:
    lines = ["KTAP version 1", "1..1", "    KTAP version 1", "    # Subtest: kselftest",
             f"    1..{len(cases)}"]
    for case in cases:
        lines += case
    return [*lines, "ok 1 kselftest"]


def merged(*cases: list[str]) -> tuple[ktap.Test, dict[str, ktap.Test], list]:
    tree, verdicts = kselftest.merge(ktap.parse(stream(*cases)), KNOWN_FILE,
                                      exercised_at=EXERCISED_AT)
    suite = tree.subtests[0]
    return tree, {case.name: case for case in suite.subtests}, verdicts


def test_golden_guest_run_becomes_one_case_per_selftest():
    """A real run of `doit test` (default kernel, TCG, every default suite and
    selftest): each selftest's case becomes a leaf with its verdict, the
    count-only case stays, nothing is lost or left nested, the other suites
    are untouched."""
    raw = ktap.parse((GOLDEN / "kselftest-run.ktap").read_text().splitlines())
    suite = next(top for top in raw.subtests if top.name == "kselftest")
    assert raw.errors == [] and len(suite.subtests) > 30
    tree, verdicts = kselftest.merge(raw, KNOWN_FILE, exercised_at=EXERCISED_AT)
    assert [top.name for top in tree.subtests] == [top.name for top in raw.subtests]
    assert [top for top in tree.subtests if top.name != "kselftest"] == \
        [top for top in raw.subtests if top.name != "kselftest"]
    cases = next(top for top in tree.subtests if top.name == "kselftest").subtests
    assert [c.name for c in cases] == [c.name for c in suite.subtests]
    assert all(not c.subtests for c in cases)
    assert cases[-1].name == "count_only"
    assert [v.name for v in verdicts] == [c.name for c in cases[:-1]]
    for verdict, case in zip(verdicts, suite.subtests[:-1], strict=True):
        alone, injected = case.subtests
        assert injected.name == f"selftests: kvm: {verdict.name}-injected"
        assert (verdict.alone, verdict.injected) == (alone.status.value, injected.status.value)
        assert verdict.injections is not None
    assert any(v.injections for v in verdicts)  # the emulator ranges do get hit
    counts = next(top for top in tree.subtests if top.name == "kselftest").counts()
    assert counts.total == len(cases) and counts.failed == counts.crashed == 0
    # Skip reasons come from the tests' own output, never left empty.
    for case in cases:
        if case.status is ktap.Status.SKIPPED:
            assert case.directive and case.directive != "skipped", case.name


def test_passes_alone_fails_under_injection_fails_and_is_named_with_its_output():
    tree, cases, verdicts = merged(
        selftest_case(1, "set_sregs_test", injected="not ok",
                      injected_output=("==== Test Assertion Failure ====",
                                       "x86_64/set_sregs_test.c:99: r == 0")),
        selftest_case(2, "smm_test"))
    failed = cases["set_sregs_test"]
    assert failed.status is ktap.Status.FAILED
    assert "verdict: passes alone, FAILS UNDER INJECTION" in failed.diagnostics
    assert "x86_64/set_sregs_test.c:99: r == 0" in failed.diagnostics
    assert cases["smm_test"].status is ktap.Status.PASSED
    lines = kselftest.summary_lines(verdicts)
    assert "FAILS UNDER INJECTION: set_sregs_test (passes alone); its output:" in lines
    assert "  x86_64/set_sregs_test.c:99: r == 0" in lines
    outcome, _ = classify_outcome(kernel_started=True, timed_out=None, findings=[],
                                  guest_status=0, tree=tree)
    assert outcome is Outcome.TEST_FAILURES


def test_injections_at_points_are_counted_per_selftest_and_per_function(tmp_path):
    """The guest's kselftest_point lines: per selftest in the verdict, summed per
    function (most first) in the summary and results.json."""
    _, cases, verdicts = merged(
        selftest_case(1, "state_test", injections=40,
                      points=(("svm_handle_exit", 20), ("kvm_fast_pio", 12))),
        selftest_case(2, "smm_test", injections=9, points=(("kvm_fast_pio", 9),)),
        selftest_case(3, "cpuid_test", injections=3))
    assert [v.points for v in verdicts] == [{"svm_handle_exit": 20, "kvm_fast_pio": 12},
                                            {"kvm_fast_pio": 9}, {}]
    assert "of which at points: svm_handle_exit 20, kvm_fast_pio 12" in \
        cases["state_test"].diagnostics
    assert not any(line.startswith("kselftest_point") for line in cases["state_test"].diagnostics)
    assert kselftest.points_total(verdicts) == {"kvm_fast_pio": 21, "svm_handle_exit": 20}
    lines = kselftest.summary_lines(verdicts)
    assert re.search(r"^state_test +passed +passed +40 +32$", "\n".join(lines), re.MULTILINE)
    assert "injections at points, all selftests: kvm_fast_pio 21, svm_handle_exit 20" in lines


def skipping(number: int, name: str, reason: str) -> list[str]:
    # The runner says "# SKIP" on its result line for exit code 4.
    return [line.replace(f"ok 1 selftests: kvm: {name}", f"ok 1 selftests: kvm: {name} # SKIP")
            for line in selftest_case(number, name, alone_output=(f"1..0 # SKIP - {reason}",))]


def test_a_skip_keeps_the_tests_reason_and_fails_unless_known_or_allowed():
    """A lost option turns a test into a skip: that fails the run, unless the known
    list says the test skips here ("skips") or test.allow_skips allows it."""
    tree, cases, verdicts = merged(skipping(1, "svm_nested_soft_inject_test", "Requires: NRIPS"),
                                   skipping(2, "vmx_dirty_log_test", "Requires: VMX"))
    skipped = cases["svm_nested_soft_inject_test"]
    assert skipped.status is ktap.Status.SKIPPED and skipped.directive == "Requires: NRIPS"
    known = cases["vmx_dirty_log_test"]
    assert known.status is ktap.Status.SKIPPED
    assert known.directive == "Requires: VMX (known: skips: needs Intel VMX: TCG's -cpu max " \
                              "offers AMD SVM only)"
    found = results.skips(tree, verdicts, [])
    assert [(skip.name, skip.allowed) for skip in found] == [
        ("kselftest.svm_nested_soft_inject_test", False), ("kselftest.vmx_dirty_log_test", True)]
    outcome, why = classify_outcome(kernel_started=True, timed_out=None, findings=[],
                                    guest_status=0, tree=tree, skipped=found)
    assert outcome is Outcome.TEST_FAILURES
    assert "kselftest.svm_nested_soft_inject_test (Requires: NRIPS)" in why
    assert "vmx_dirty_log_test" not in why
    assert "test.allow_skips='kselftest.svm_nested_soft_inject_test'" in why
    allowed = results.skips(tree, verdicts, ["kselftest.svm_*"])
    outcome, why = classify_outcome(kernel_started=True, timed_out=None, findings=[],
                                    guest_status=0, tree=tree, skipped=allowed)
    assert outcome is Outcome.PASSED
    assert "2 skipped (allowed: kselftest.svm_nested_soft_inject_test, " \
           "kselftest.vmx_dirty_log_test)" in why


def test_a_failure_alone_is_known_only_when_it_fails_the_way_the_list_says():
    """The known list tolerates a failure by its signature, not by the test's name:
    a listed test failing some other way fails the run, naming the entry."""
    entry = kselftest.known_entry("debug_regs", KNOWN)
    said = entry.tolerates.removeprefix(kselftest.OUTPUT)
    tree, cases, verdicts = merged(
        selftest_case(1, "debug_regs", alone="not ok", alone_output=("1..1", f"# {said}")),
        selftest_case(2, "monitor_mwait_test", alone="not ok",
                      alone_output=("1..1", "# Segmentation fault")),
        selftest_case(3, "set_sregs_test", alone="not ok"))
    known = cases["debug_regs"]
    assert known.status is ktap.Status.TODO
    assert known.directive == f"known: {entry}"
    otherwise = cases["monitor_mwait_test"]
    assert otherwise.status is ktap.Status.FAILED and not otherwise.directive
    other = kselftest.known_entry("monitor_mwait_test", KNOWN)
    assert verdicts[1].why == (
        f"fails alone, not the way the known list says it does ({other}): no line of its "
        f"output says {other.tolerates.removeprefix(kselftest.OUTPUT)!r}")
    assert cases["set_sregs_test"].status is ktap.Status.FAILED
    assert verdicts[2].why == "fails alone"
    assert [v.known for v in verdicts] == [str(entry), str(other), ""]
    assert tree.counts().todo == 1 and tree.counts().failed == 2


def test_a_known_hang_is_the_runners_timeout_and_a_known_skip_tolerates_no_failure():
    timed_out = [line.replace("not ok 1 selftests: kvm: memslot_perf_test",
                              "not ok 1 selftests: kvm: memslot_perf_test # TIMEOUT 120 seconds")
                 for line in selftest_case(1, "memslot_perf_test", alone="not ok")]
    _, cases, verdicts = merged(timed_out,
                                selftest_case(2, "hyperv_tlb_flush", alone="not ok"),
                                selftest_case(3, "amx_test", alone="not ok"))
    assert cases["memslot_perf_test"].status is ktap.Status.TODO
    assert cases["hyperv_tlb_flush"].status is ktap.Status.FAILED
    assert verdicts[1].why.endswith("it failed without timing out")
    assert cases["amx_test"].status is ktap.Status.FAILED
    assert verdicts[2].why.endswith("it failed instead of skipping")


@pytest.mark.parametrize("line", [
    "debug_regs\tTCG does not deliver #BP",  # two fields
    "debug_regs\tcrashes\tTCG does not deliver #BP",  # no such kind
    "debug_regs\toutput:\tTCG does not deliver #BP",  # output of nothing
    "debug_regs output: Unhandled exception TCG does not deliver #BP",  # spaces, no tabs
])
def test_a_known_list_line_without_its_signature_is_refused_with_its_place(tmp_path, line):
    known = tmp_path / "kselftest-known"
    known.write_text(f"# comment\n\n{line}\n")
    with pytest.raises(UserError, match=r"kselftest-known:3: want GLOB<TAB>TOLERATES<TAB>"
                                        r"REASON, where TOLERATES is 'output: TEXT'"):
        kselftest.load_known(known)


def test_a_pass_with_too_few_injections_is_not_exercised_and_the_injectors_checks_count():
    tree, cases, verdicts = merged(selftest_case(1, "cpuid_test", injections=0),
                                   selftest_case(2, "smm_test", case_result="not ok"),
                                   selftest_case(3, "sync_regs_test", injections=EXERCISED_AT - 1),
                                   selftest_case(4, "set_sregs_test", injections=EXERCISED_AT))
    idle = cases["cpuid_test"]
    assert idle.status is ktap.Status.NOT_EXERCISED
    assert idle.directive.startswith("not exercised: passes alone and under injection, but no "
                                     "injection reached its threads")
    few = cases["sync_regs_test"]
    assert few.status is ktap.Status.NOT_EXERCISED
    assert few.directive.endswith("only 9 injection(s) reached its threads, fewer than "
                                  "kselftest.exercised_at=10: too few to say much about "
                                  "scheduling")
    assert cases["smm_test"].status is ktap.Status.FAILED
    assert cases["set_sregs_test"].status is ktap.Status.PASSED
    assert verdicts[0].injections == 0 and verdicts[0].status == "not exercised"
    assert tree.counts().not_exercised == 2 and tree.counts().passed == 1
    lines = kselftest.summary_lines(verdicts)
    assert ("not exercised (passed, but too few injections reached their threads): "
            "cpuid_test (0), sync_regs_test (9)") in lines
    assert lines[-1] == ("selftests: 4 of 4 pass alone and under injection, exercised 1 of 4, "
                         "36 injections in all, known 0")
    assert kselftest.exercised(verdicts) == 1


def test_too_few_exercised_selftests_fail_the_run():
    """The share is of the selftests that passed alone and under injection: a skip
    (allowed here) counts neither way."""
    tree, _, verdicts = merged(selftest_case(1, "cpuid_test", injections=0),
                               *(selftest_case(number, f"test_{number}", injections=40)
                                 for number in range(2, 11)),
                               skipping(11, "skipper", "no SVM"))
    assert kselftest.exercised_share(verdicts) == (9, 10)
    run = {"kernel_started": True, "timed_out": None, "findings": [], "guest_status": 0,
           "tree": tree, "exercised": kselftest.exercised_share(verdicts)}
    outcome, why = classify_outcome(**run, min_exercised_percent=90)
    assert outcome is Outcome.PASSED and "exercised 9 of 10 selftests" in why
    outcome, why = classify_outcome(**run, min_exercised_percent=91)
    assert outcome is Outcome.TEST_FAILURES
    assert why.startswith("exercised 9 of the 10 selftests that passed under injection "
                          "(enough injections reached their threads), fewer than "
                          "test.min_exercised_percent=91 % of them")
    assert "lower test.min_exercised_percent" in why


def test_a_run_cut_off_inside_the_runner_is_crashed():
    lines = stream(selftest_case(1, "state_test"))
    cut = lines[:lines.index("        # selftests: kvm: state_test-injected") + 1]
    tree, verdicts = kselftest.merge(ktap.parse(cut), KNOWN_FILE,
                                     exercised_at=EXERCISED_AT)
    case = tree.subtests[0].subtests[0]
    assert case.status is ktap.Status.CRASHED
    assert tree.counts().crashed == 1 and verdicts[0].status == "crashed"


def test_count_only_takes_on_a_failure_of_its_runs():
    count_only = ["        TAP version 13", "        1..1",
                  *runner_result(1, "set_sregs_test-counted", "not ok", ("it broke",)),
                  "    ok 1 count_only"]
    _, cases, verdicts = merged(count_only)
    assert cases["count_only"].status is ktap.Status.FAILED and verdicts == []
    assert "failed while counted (nothing injected): selftests: kvm: set_sregs_test-counted" \
        in cases["count_only"].diagnostics
    assert "[selftests: kvm: set_sregs_test-counted] it broke" \
        in cases["count_only"].diagnostics


def test_a_known_test_failing_under_injection_still_fails_with_the_lists_reason_beside():
    """Selected anyway, a known-flaky test that passes alone and fails injected:
    the flake may explain it, but so may the injector, so it stays a failure."""
    tree, cases, verdicts = merged(selftest_case(1, "state_test", injected="not ok",
                                                 injected_output=("#UD",)))
    entry = kselftest.known_entry("state_test", KNOWN)
    failed = cases["state_test"]
    assert failed.status is ktap.Status.FAILED and not failed.directive
    verdict = next(line for line in failed.diagnostics if line.startswith("verdict: "))
    assert verdict == ("verdict: passes alone, FAILS UNDER INJECTION (on the known list, "
                       f"which may explain it: {entry})"), verdict
    assert "flaky under QEMU 7.2" in entry.reason
    lines = kselftest.summary_lines(verdicts)
    assert f"FAILS UNDER INJECTION: state_test (passes alone; on the known list: {entry}); " \
        "its output:" in lines, lines
    outcome, _ = classify_outcome(kernel_started=True, timed_out=None, findings=[],
                                  guest_status=0, tree=tree)
    assert outcome is Outcome.TEST_FAILURES


def test_a_failure_under_injection_with_nothing_injected_says_so():
    """A timing check failing in the injected pass with 0 injections into the
    test's threads (as hyperv_clock's did once on a busy host): still a
    failure, but the verdict and the summary say nothing was injected, so the
    user looks at the test's timing before the injector."""
    tree, cases, verdicts = merged(
        selftest_case(1, "kvm_clock_test", injected="not ok", injections=0,
                      injected_output=("==== Test Assertion Failure ====",)),
        selftest_case(2, "smm_test", injected="not ok", injections=3))
    idle, hit = cases["kvm_clock_test"], cases["smm_test"]
    assert idle.status is hit.status is ktap.Status.FAILED
    assert ("verdict: passes alone, FAILS UNDER INJECTION with no injection into its "
            "threads (look at the test's own timing first)") in idle.diagnostics
    assert "verdict: passes alone, FAILS UNDER INJECTION" in hit.diagnostics
    lines = kselftest.summary_lines(verdicts)
    assert ("FAILS UNDER INJECTION: kvm_clock_test (passes alone; no injection into its "
            "threads); its output:") in lines
    assert "FAILS UNDER INJECTION: smm_test (passes alone); its output:" in lines
    outcome, _ = classify_outcome(kernel_started=True, timed_out=None, findings=[],
                                  guest_status=0, tree=tree)
    assert outcome is Outcome.TEST_FAILURES


def test_count_only_notes_a_known_failure_as_the_alone_run_does():
    """A test on the known list, selected anyway, that fails while counted the way
    the list says: noted with the entry, not a failure of the count (it is not the
    injector's).  Failing another way, it fails the count."""
    entry = kselftest.known_entry("state_test", KNOWN)
    said = entry.tolerates.removeprefix(kselftest.OUTPUT)
    count_only = ["        TAP version 13", "        1..1",
                  *runner_result(1, "state_test-counted", "not ok", (f"# {said} at RIP",)),
                  "    ok 1 count_only"]
    _, cases, _ = merged(count_only)
    diagnostics = cases["count_only"].diagnostics
    assert cases["count_only"].status is ktap.Status.PASSED
    assert ("known failure while counted: selftests: kvm: state_test-counted "
            f"(known: {entry})") in diagnostics, diagnostics
    otherwise = ["        TAP version 13", "        1..1",
                 *runner_result(1, "state_test-counted", "not ok", ("# it broke",)),
                 "    ok 1 count_only"]
    _, cases, _ = merged(otherwise)
    assert cases["count_only"].status is ktap.Status.FAILED


def test_other_suites_are_left_alone():
    tree = ktap.parse(["KTAP version 1", "1..1", "    KTAP version 1", "    # Subtest: smoke",
                       "    1..1", "    ok 1 a", "ok 1 smoke"])
    assert kselftest.merge(tree, KNOWN_FILE, exercised_at=EXERCISED_AT) == (tree, [])


def test_the_known_list_gives_a_signature_and_a_reason_for_every_entry():
    assert KNOWN and all(entry.pattern and entry.tolerates and entry.reason for entry in KNOWN)
    assert str(kselftest.known_entry("vmx_dirty_log_test", KNOWN)).startswith(
        "skips: needs Intel VMX")
    assert kselftest.known_entry("set_sregs_test", KNOWN) is None


def test_selftests_inputs_key_sees_only_the_files_they_build_from(make_settings, tmp_path):
    """A change to KVM (what our series patches) or the kernel proper keeps the
    selftests; a change to a uapi header, tools/, a syscall table or a new file
    there rebuilds them."""
    from pipeline import selftests

    s = make_settings()
    tree = tmp_path / "linux"
    files = {"Makefile": "VERSION = 9\n", "arch/x86/kvm/x86.c": "int x;\n",
             "kernel/time/timer.c": "int t;\n", "include/uapi/linux/kvm.h": "#define A 1\n",
             "tools/testing/selftests/kvm/x86/state_test.c": "int main(void) {}\n",
             "arch/x86/entry/syscalls/syscall_64.tbl": "0 common read sys_read\n"}
    for name, text in files.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    stock = selftests.inputs_key(s, tree)

    def key_after(name: str, text: str) -> str:
        before = (tree / name).read_text() if (tree / name).exists() else None
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
        try:
            return selftests.inputs_key(s, tree)
        finally:
            (tree / name).unlink()
            if before is not None:
                (tree / name).write_text(before)

    assert key_after("arch/x86/kvm/x86.c", "int x; /* patched */\n") == stock
    assert key_after("kernel/time/timer.c", "int t2;\n") == stock
    assert key_after("include/uapi/linux/kvm.h", "#define A 2\n") != stock
    assert key_after("tools/testing/selftests/kvm/lib/new.c", "\n") != stock
    assert key_after("arch/x86/entry/syscalls/syscall_64.tbl", "\n") != stock
    assert selftests.inputs_key(s, tree) == stock
    (tree / "tools/testing/selftests/kvm/x86/state_test.c").chmod(0o755)
    assert selftests.inputs_key(s, tree) != stock


def test_selection_globs_match_names_not_the_files_beside_the_suite(tmp_path):
    """kselftest.tests=* selects every test, whatever files the guest's current
    directory holds (an unquoted glob would expand to those file names)."""
    suite = (ROOT / "images" / "suites" / "kselftest").read_text()
    wanted = re.search(r"^wanted\(\) \{\n.*?^\}\n", suite, re.M | re.S)[0]
    (tmp_path / "some_file").write_text("")
    script = (f"{wanted}\nfor name in state_test rseq_test; do wanted $name && echo $name; done\n"
              "for f in *; do echo seen $f; done\n")
    out = subprocess.run(["dash", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={"PIPELINE_KSELFTESTS": "*", "PATH": "/usr/bin:/bin"}).stdout
    assert out.split("\n") == ["state_test", "rseq_test", "seen some_file", ""]
    only = subprocess.run(["dash", "-c", f"{wanted}\nwanted state_test || echo no"], cwd=tmp_path,
                          capture_output=True, text=True,
                          env={"PIPELINE_KSELFTESTS": "svm_*,smm_test"}).stdout
    assert only == "no\n"


def test_golden_run_of_the_known_failures_matches_each_by_its_signature(tmp_path):
    """A real run of the 13 listed tests that fail here for good (2026-12-07, default
    kernel, TCG; `kselftest.tests=` naming them): each fails the way its entry says,
    so each is known (todo) and the run passes.  With one entry's text changed,
    that test's failure is no longer the one tolerated: it fails the run."""
    raw = ktap.parse((GOLDEN / "kselftest-known-run.ktap").read_text().splitlines())
    tree, verdicts = kselftest.merge(raw, KNOWN_FILE, exercised_at=EXERCISED_AT)
    assert len(verdicts) == 13
    assert all(v.status == "todo" and v.known for v in verdicts), [
        (v.name, v.status, v.why) for v in verdicts if v.status != "todo"]
    assert tree.counts().todo == 13 and tree.counts().failed == 0
    assert kselftest.known_count(verdicts) == 13
    outcome, _ = classify_outcome(kernel_started=True, timed_out=None, findings=[],
                                  guest_status=0, tree=tree)
    assert outcome is Outcome.PASSED

    planted = tmp_path / "kselftest-known"
    planted.write_text(KNOWN_FILE.read_text().replace(
        "debug_regs\toutput: Unhandled exception '0x3'\t",
        "debug_regs\toutput: Unhandled exception '0x1'\t"))
    tree, verdicts = kselftest.merge(raw, planted, exercised_at=EXERCISED_AT)
    failed = [v for v in verdicts if v.status == "failed"]
    assert [v.name for v in failed] == ["debug_regs"]
    assert "not the way the known list says it does" in failed[0].why
    outcome, _ = classify_outcome(kernel_started=True, timed_out=None, findings=[],
                                  guest_status=0, tree=tree)
    assert outcome is Outcome.TEST_FAILURES
