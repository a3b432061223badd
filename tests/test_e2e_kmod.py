"""The injector modules on real parts: built against our kernel, loaded in a real guest.

Shares conftest.kernel_build (the default kernel, kmod and image in build/test).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from helpers import E2E_BUILD, OUR_CASES, ROOT

from pipeline import ktap

pytestmark = pytest.mark.slow

KMOD_SOURCES = sorted(p for p in (ROOT / "kmod").iterdir()
                      if p.suffix in (".c", ".h", ".S"))


@pytest.mark.parametrize("source", KMOD_SOURCES, ids=lambda p: p.name)
def test_checkpatch_strict_clean(kernel_build, source):
    checkpatch = kernel_build.layout.tree / "scripts" / "checkpatch.pl"
    proc = subprocess.run(["perl", str(checkpatch), "--strict", "--no-tree", "-f", str(source)],
                          capture_output=True, text=True)
    assert "total: 0 errors, 0 warnings, 0 checks" in proc.stdout, proc.stdout


def test_built_with_w1_and_no_warnings(kernel_build):
    log = (kernel_build.layout.build / "logs" / "kmod.log").read_text()
    assert re.search(r"^\$ .* W=1 modules", log, re.M)
    assert "warning:" not in log.lower()
    for name in ("sched_inject.ko", "inject_target.ko"):
        ko = kernel_build.layout.artifacts / "kmod" / name
        info = subprocess.run(["modinfo", "-F", "vermagic", str(ko)], capture_output=True,
                              text=True, check=True).stdout
        release = json.loads((kernel_build.layout.artifacts / "kernel.json").read_text())["release"]
        assert info.startswith(release + " ")


# The KVM selftests the default suite's run selects (test_e2e_kselftest checks
# them): ten quick ones, two of which reach KVM's emulator (the default
# kernel's injection ranges), about 2 minutes here alone and under injection.
SELECTION = ("xapic_state_test,svm_int_ctl_test,coalesced_io_test,set_sregs_test,smm_test,"
             "sync_regs_test,userspace_io_test,kvm_clock_test,svm_vmcall_test,cpuid_test")



def run_test(*overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", "test", f"paths.build={E2E_BUILD}",
                           *overrides], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def default_run(kernel_build) -> subprocess.CompletedProcess:
    """`doit test` as a user runs it: every suite of the embedded default, once,
    with a selection of the KVM selftests."""
    proc = run_test(f"kselftest.tests={SELECTION}")
    assert proc.returncode == 0, proc.stdout[-4000:]
    results = json.loads((kernel_build.layout.results / "results.json").read_text())
    assert results["outcome"] == "passed" and results["console_findings"] == []
    assert results["counts"]["skipped"] == 0
    return proc


@pytest.fixture(scope="module")
def default_suite(kernel_build, default_run) -> ktap.Test:
    return ktap.parse((kernel_build.layout.results / "ktap.log").read_text().splitlines())


def test_each_case_shows_as_it_finishes_and_the_run_leaves_its_page_and_kcidb(
        kernel_build, default_run, default_suite):
    """Live progress named every case (in a log: plain lines, no terminal codes);
    report.html and kcidb.json are there, the latter valid by KCIDB's schema."""
    import kcidb_io

    cases = [".".join(names[:2]) for names, test in default_suite.walk() if len(names) == 2]
    shown = [line.split()[1] for line in default_run.stdout.splitlines()
             if line.startswith("  ok      ")]
    assert shown == cases and "\x1b[" not in default_run.stdout
    results = kernel_build.layout.results
    page = (results / "report.html").read_text()
    assert all(f'id="{section}"' in page for section in ("outcome", "cases", "injections"))
    assert all(case in page for case in cases)
    document = json.loads((results / "kcidb.json").read_text())
    kcidb_io.schema.LATEST.validate(document)
    assert [test["path"] for test in document["tests"]][1:] == cases


def case(tree: ktap.Test, dotted: str) -> ktap.Test:
    return next(test for names, test in tree.walk() if ".".join(names) == dotted)


def stats(test: ktap.Test) -> dict[str, str]:
    """The `name value` lines (the injector's and target's counters) of a case."""
    return dict(line.split(" ", 1) for line in test.diagnostics
                if re.fullmatch(r"[a-z_]+ \S+", line))


def number(test: ktap.Test, pattern: str) -> int:
    match = re.search(pattern, "\n".join(test.diagnostics))
    assert match, f"{pattern!r} not in {test.diagnostics}"
    return int(match[1])


def test_every_case_passes_and_kunit_reads_the_stream(kernel_build, default_suite):
    """Our cases pass; kunit.py reads the whole stream, the kernel runner's
    results nested in the kselftest cases included."""
    leaves = [names for names, test in default_suite.walk() if not test.subtests]
    ours = [names for names in leaves if names[0] != "kselftest"]
    assert len(ours) == OUR_CASES and default_suite.counts().passed == len(leaves)
    selftests = len(SELECTION.split(","))
    # Each selftest's case holds its runs alone and injected; count_only one run each.
    assert len(leaves) == OUR_CASES + 3 * selftests
    kunit = kernel_build.layout.tree / "tools" / "testing" / "kunit" / "kunit.py"
    parsed = subprocess.run([sys.executable, str(kunit), "parse",
                             str(kernel_build.layout.results / "ktap.log")],
                            capture_output=True, text=True)
    assert f"Ran {len(leaves)} tests: passed: {len(leaves)}" in parsed.stdout, \
        parsed.stdout[-2000:]


def test_injection_rate_and_counters(default_suite):
    rate = case(default_suite, "smoke.injection_rate")
    counters = stats(rate)
    injections = int(counters["injections"])
    assert injections >= number(rate, r"want (\d+)\.\.")
    # sleep_ms=2 in ticks (by the clocksource a late tick can end a sleep sooner).
    assert int(counters["sleep_jiffies_min"]) * 1000 >= 2 * int(counters["hz"])
    skips = sum(int(v) for k, v in counters.items() if k.startswith("skip_"))
    assert int(counters["fires"]) == injections + int(counters["would_inject"]) + skips
    assert int(counters["trampoline_exits"]) == injections


def test_a_stalled_sleep_is_slept_again_until_it_switches(default_suite):
    """inject_target stalled the target's CPU inside injected sleeps: some of
    those sleeps returned without a switch, and the injector slept again."""
    stalled = case(default_suite, "smoke.stalled_sleep_still_switches")
    counters = stats(stalled)
    assert int(counters["sent"]) == 100
    assert int(counters["sleep_retries"]) > 0 and counters["sleeps_without_switch"] == "0"
    switches = number(stalled, r"voluntary switches while injected (\d+)")
    assert switches >= int(counters["injections"])


def test_a_thousand_injections_without_corruption(default_suite):
    integrity = case(default_suite, "smoke.register_integrity")
    assert int(stats(integrity)["injections"]) >= 1000
    assert int(stats(integrity)["corruptions"]) == 0


def test_never_inside_a_section(default_suite):
    loop_only = stats(case(default_suite, "sections.loop_only"))
    inside = {k: v for k, v in loop_only.items() if k.endswith("_injected_inside")}
    assert len(inside) == 6 and set(inside.values()) == {"0"}
    whole = case(default_suite, "sections.whole_module")
    # The default kernel has no PREEMPT_COUNT: counting only, some samples
    # land in the sections only ranges keep the injector out of.
    assert number(whole, r"invisible sections: (\d+)") > 0
    assert int(stats(whole)["injections"]) == 0


def test_kvm_under_injection(default_suite):
    kvm = case(default_suite, "kvm.kvm_under_injection")
    assert "no PREEMPT_COUNT: ranges are KVM's instruction emulator functions" in kvm.diagnostics
    assert number(kvm, r"injections by the timer in KVM code: (\d+)") >= 20
    # The targeted path: every point of images/kvm-points placed, 1000 sleeps at them.
    assert number(kvm, r"at KVM's points: (\d+)") >= 1000
    assert any(line.startswith("points: kvm_dev_ioctl ") and "svm_handle_exit" in line
               for line in kvm.diagnostics)
    assert any("all values correct" in line and "voluntary_switches" in line
               for line in kvm.diagnostics)


def test_lifecycle(default_suite):
    unload = case(default_suite, "lifecycle.unload_with_injections_in_flight")
    cycles = re.search(r"(\d+) load/unload cycles, (\d+) of them unloaded with an injection "
                       r"in flight", " ".join(unload.diagnostics))
    assert cycles and int(cycles[1]) == 50 and int(cycles[2]) >= 10


# A task's burst at the points (sched_inject's default): every selftest reaches
# KVM's ioctl entries and exit handlers at least that often.
BURST = 10


def test_selection_passes_alone_and_under_injection(kernel_build, default_suite):
    """Every selected selftest passes alone and with the injector in its threads:
    the targeted path (the default kselftest.inject=both) reaches each one's threads
    ten times at least, the harness tests' forked children included (sync_regs_test),
    spread over the KVM functions; the emulator ranges are really hit too."""
    results = json.loads((kernel_build.layout.results / "results.json").read_text())
    verdicts = {v["name"]: v for v in results["kselftests"]}
    assert sorted(verdicts) == sorted(SELECTION.split(","))
    for name, verdict in verdicts.items():
        assert (verdict["alone"], verdict["injected"]) == ("passed", "passed"), (name, verdict)
        assert verdict["status"] == "passed", (name, verdict)
        assert sum(verdict["points"].values()) >= BURST, (name, verdict)
        assert verdict["injections"] >= sum(verdict["points"].values()), (name, verdict)
    assert results["selftests_exercised"] == len(verdicts)
    assert f"exercised {len(verdicts)} of {len(verdicts)} selftests" in results["why"]
    # Not all on the first point of each path: the handlers after it get their share.
    at_points = results["injections_at_points"]
    assert sum(count >= 5 for count in at_points.values()) >= 6, at_points
    # These emulate APIC accesses or exit to userspace for MMIO: KVM's emulator runs.
    assert sum(verdicts[name]["injections"] for name in
               ("xapic_state_test", "coalesced_io_test")) > 0
    suite = next(top for top in default_suite.subtests if top.name == "kselftest")
    count_only = next(case for case in suite.subtests if case.name == "count_only")
    text = "\n".join(count_only.diagnostics)
    assert count_only.status.value == "passed"
    seen = int(re.search(r"would inject, (\d+) inside preempt-disabled", text)[1])
    assert seen > 0  # the patch makes KVM's preempt-disabled sections visible


def test_emulator_still_has_no_hidden_section(kernel_build):
    """The narrow ranges of the kvm and kselftest suites rest on emulate.c taking no lock, RCU,
    preempt or irq-off section (none would show in preempt_count here)."""
    emulate = (kernel_build.layout.tree / "arch" / "x86" / "kvm" / "emulate.c").read_text()
    hidden = re.findall(r"\b(?:raw_)?(?:spin_lock|read_lock|write_lock|rcu_read_lock|"
                        r"preempt_disable|local_irq_disable|local_irq_save)\w*\s*\(|"
                        r"\bget_cpu\s*\(", emulate)
    assert hidden == []
    library = (ROOT / "images" / "lib" / "kvm.sh").read_text()
    functions = re.search(r'EMULATOR_FUNCTIONS="([^"]+)"', library)[1].split()
    for function in functions:
        assert re.search(rf"^\S.*\b{function}\(", emulate, re.M), function


def test_the_patched_kernel_sees_kvms_preempt_disabled_window(default_suite):
    """Case 6, patched side: samples land in KVM's preempt-disabled window and are
    refused.  The stock side (none seen, many that would be injected) is the
    matrix's stock cell (test_e2e_matrix)."""
    patched = case(default_suite, "kvm.kvm_patch_effect")
    assert number(patched, r"preempt-disabled sections: (\d+)") > 0
    # The targeted path: the point just inside the window is refused at every hit.
    assert number(patched, r"preempt_disable\(\): (\d+) refused for preempt_count") > 0
    assert number(patched, r"refused for preempt_count, (\d+) would inject") == 0
    counted = case(default_suite, "kselftest.count_only")
    assert number(counted, r"would inject, (\d+) inside preempt-disabled") > 0
