"""Negative controls: every case of smoke, lifecycle, sections and kvm fails, with the
FAILED line it promises, when the fault it exists to catch is planted; on a real guest.

A fault is a small edit of a copy of kmod/ (or KVM built without the KVM series'
includes, or a KVM points list with a wrong entry), built against the shared e2e
kernel (conftest.kernel_build) into a directory of its own: the shipped module has
no fault switch.  The faulty modules
go to the guest on a second disk; the `faults` suite (images/suites/faults) binds
each over the installed module of its name, runs the one case and checks how it
failed.  One boot runs every control.  The "Negative controls" table of
docs/test-suites.md is this file's CONTROLS.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import E2E_BUILD, OUR_SUITES, ROOT, show, suite_cases

from pipeline import kmake, ktap, records
from pipeline.records import SourceRecord

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Fault:
    what: str  # what is broken, in docs/test-suites.md's words
    edits: tuple[tuple[str, str, str], ...]  # (kmod file, text, replacement)


FAULTS = {
    "no_sleep": Fault("the trampoline never sleeps", (
        ("sched_inject_tramp_body.c", "\tinj_sleep_and_switch();\n", ""),)),
    "r10_clobbered": Fault("the trampoline returns with %r10 inverted", (
        ("sched_inject_tramp.S", "\tpopq\t%r10\n", "\tpopq\t%r10\n\tnotq\t%r10\n"),)),
    "count_only_ignored": Fault("count_only=1 injects anyway", (
        ("sched_inject_timer.c", "if (READ_ONCE(inj_count_only)) {",
         "if (0 && READ_ONCE(inj_count_only)) {"),)),
    "comm_never_matches": Fault("a 'comm NAME' target matches no task", (
        ("sched_inject_timer.c", "return !strncmp(task->comm, target->comm, TASK_COMM_LEN);",
         "return false;"),)),
    "no_retry": Fault("a sleep that did not switch is not taken again", (
        ("sched_inject_tramp_body.c", "if (++tries > INJ_SLEEP_RETRIES_MAX) {",
         "if (++tries > 0) {"),)),
    "knob_range_unchecked": Fault("period_us and sleep_ms accept any value", (
        ("sched_inject_main.c", "if (value < knob->min || value > knob->max) {", "if (0) {"),)),
    "enable_without_target": Fault("enable does not need a target", (
        ("sched_inject_timer.c", "if (!rcu_access_pointer(inj_target)) {", "if (0) {"),)),
    "probe_check_ignored": Fault("a range need not start on an instruction boundary", (
        ("sched_inject_ranges.c", "ret = inj_probe_check(start);\n\tif (ret) {",
         "ret = inj_probe_check(start);\n\tif (0) {"),)),
    "hotplug_stops_timers": Fault("a CPU going offline stops every CPU's timer for good", (
        ("sched_inject_timer.c",
         "hrtimer_cancel(&per_cpu_ptr(&inj_cpus, cpu)->timer);",
         "for_each_possible_cpu(cpu)\n\t\thrtimer_cancel(&per_cpu_ptr(&inj_cpus, cpu)->timer);"),
        ("sched_inject_timer.c", "\t/* Runs on @cpu itself, so PINNED pins the timer there. */\n",
         "\tif (inj_hp_state >= 0)\n\t\treturn 0;\n"))),
    "points_need_every_cpu": Fault("a point injects only while every CPU is online", (
        ("sched_inject_points.c", "\tif (!READ_ONCE(inj_enabled))\n\t\treturn 0;\n",
         "\tif (!READ_ONCE(inj_enabled) || num_online_cpus() < num_possible_cpus())\n"
         "\t\treturn 0;\n"),)),
    "module_exit_disables": Fault("a module going away disables the injector", (
        ("sched_inject_ranges.c", "\t\t\tinj_publish_ranges(set);\n",
         "\t\t\tinj_publish_ranges(set);\n\t\t\tinj_disable_locked();\n"),)),
    "debugfs_leaked": Fault("unloading leaves the debugfs directory behind", (
        ("sched_inject_debugfs.c", "\tdebugfs_remove_recursive(inj_dir);\n", ""),)),
    "ranges_ignored": Fault("every address is inside the ranges (|| for &&)", (
        ("sched_inject_timer.c", "if (ip >= set->ranges[i].start && ip < set->ranges[i].end)",
         "if (ip >= set->ranges[i].start || ip < set->ranges[i].end)"),)),
    "preempt_count_ignored": Fault("preempt_count is not checked", (
        ("sched_inject_timer.c", "if (pc != HARDIRQ_OFFSET) {",
         "if (0 && pc != HARDIRQ_OFFSET) {"),)),
    "resume_never_taken": Fault("a task resumed at a point is sent into the trampoline again", (
        ("sched_inject_points.c", "\t\tinj_release_resume(i);\n\t\treturn true;\n",
         "\t\tinj_release_resume(i);\n\t\treturn false;\n"),)),
    "no_rate_limit": Fault("a point ignores min_interval_us", (
        ("sched_inject_points.c", "if (inj_too_soon())", "if (0 && inj_too_soon())"),)),
    "no_refill": Fault("a point's rate limit never earns an injection", (
        ("sched_inject_points.c", "\tif (at > since)\n\t\tearned =",
         "\tif (0 && at > since)\n\t\tearned ="),)),
    "own_point_accepted": Fault("a point in the injector's own text is accepted", (
        ("sched_inject_points.c",
         "if (within_module((unsigned long)point->kp.addr, THIS_MODULE)) {",
         "if (0 && within_module((unsigned long)point->kp.addr, THIS_MODULE)) {"),)),
}
# Not a kmod/ fault: KVM built from the patched tree with every include of
# <linux/kvm_preempt_count.h> removed (stock KVM), the image still saying
# the series is applied.
STOCK_KVM = "stock_kvm"
STOCK_KVM_WHAT = "KVM without the KVM series (the image says it is applied)"
# Not a kmod/ fault either: images/kvm-points with a function KVM calls with
# interrupts off (svm_vcpu_run, before entering the guest).  The injector
# refuses every hit there, so the fault is safe to plant on any kernel.
WRONG_POINT = "wrong_point"
WRONG_POINT_ENTRY = "kvm:kvm_load_guest_xsave_state"
WRONG_POINT_WHAT = f"the KVM points list has {WRONG_POINT_ENTRY}, entered with interrupts off"


@dataclass(frozen=True)
class Control:
    case: str  # SUITE.CASE
    fault: str  # a FAULTS key or STOCK_KVM
    expect: str  # in the case's "FAILED: ..." line
    run: str = ""  # PIPELINE_CASES when cases before it must run too

    @property
    def name(self) -> str:
        """Its case in the faults suite: SUITE_CASE, and the fault for a case's second."""
        first = next(control for control in CONTROLS if control.case == self.case)
        name = self.case.replace(".", "_")
        return name if first is self else f"{name}_{self.fault}"


# The KVM selftest whose case stands for the kselftest suite's per-test checks.
KSELFTEST = "xapic_state_test"


# In the order the guest runs them: debugfs_leaked leaves a directory no
# module can create again, so it goes last.
CONTROLS = (
    Control("smoke.injection_rate", "no_sleep", "an injected sleep was shorter than sleep_ms"),
    Control("smoke.register_integrity", "r10_clobbered", "no register or flag corrupted"),
    Control("smoke.count_only_edits_nothing", "count_only_ignored",
            "some samples would inject (would_inject 0)"),
    Control("smoke.target_by_comm_and_tgid", "comm_never_matches",
            "target comm inject_target was injected into"),
    Control("smoke.stalled_sleep_still_switches", "no_retry", "a voluntary switch per injection"),
    Control("smoke.point_register_integrity", "resume_never_taken",
            "one resume per injection (0 for"),
    Control("smoke.point_rate_limited", "no_rate_limit", "at most the burst and one injection per interval ("),
    Control("lifecycle.bad_parameters_refused", "knob_range_unchecked",
            "accepted: modprobe sched_inject period_us=10"),
    Control("lifecycle.bad_target_and_knobs_refused", "enable_without_target",
            "accepted: enable without a target"),
    Control("lifecycle.bad_ranges_refused", "probe_check_ignored",
            "accepted: not an instruction boundary"),
    Control("lifecycle.bad_points_refused", "own_point_accepted",
            "accepted: a point in the injector's own text"),
    Control("lifecycle.unload_with_injections_in_flight", "no_sleep",
            # Not "(got 0)": one in 50 samples may catch the short trip through it.
            "at least a fifth (10) unloaded in flight (got"),
    Control("lifecycle.unload_with_points_in_flight", "no_sleep",
            "a point's sleep in flight when the unload began (cycle "),
    Control("lifecycle.cpu_hotplug_during_injection", "hotplug_stops_timers",
            "injections while cpu1 was offline (round 1:"),
    Control("lifecycle.cpu_hotplug_during_injection", "points_need_every_cpu",
            "injections at the point while cpu1 was offline (round 1:"),
    Control("lifecycle.target_exits_during_injection", "module_exit_disables",
            "the timers keep firing"),
    Control("sections.loop_only", "ranges_ignored", "no injection inside a section"),
    # Its samples inside local_bh_disable are then refused by the FPU check.
    Control("sections.whole_module", "preempt_count_ignored",
            "local_bh_disable: no sample inside it was refused for its own state"),
    Control("kvm.kvm_under_injection", "no_sleep",
            "vCPU switches at least 90% of the injections (0 of"),
    Control("kvm.kvm_under_injection", WRONG_POINT, "no point refused for what the task held"),
    # A task's first burst is earned too (its budget starts at time 0): none at all.
    Control("kvm.kvm_under_injection", "no_refill",
            "at least 1000 injections at KVM's points (got 0)"),
    Control("kvm.kvm_patch_effect", STOCK_KVM, "samples inside KVM's preempt-disabled sections (0)"),
    Control("kvm.kvm_patch_effect", STOCK_KVM,
            "every hit of kvm_amd:svm_prepare_switch_to_guest refused for preempt_count (0 refused"),
    # The selftests' own check of the list: one selftest stands for all (the
    # suite runs the same check after each).
    Control(f"kselftest.{KSELFTEST}", WRONG_POINT, "no point refused for what the task held"),
    Control("lifecycle.nothing_left_registered", "debugfs_leaked",
            "no passing case left a module or debugfs dir behind (1 did)",
            run="lifecycle.bad_target_and_knobs_refused,lifecycle.nothing_left_registered"),
)
KVM_POINTS = ROOT / "images" / "kvm-points"


def test_every_case_has_a_control_and_every_fault_applies():
    """Pure: the table covers each case of the four suites (and a selftest's), every
    fault is used, every edit applies, the wrong point is not on the list already."""
    cases = [f"{suite}.{case}" for suite in OUR_SUITES for case in suite_cases(suite)]
    assert {control.case for control in CONTROLS} == {*cases, f"kselftest.{KSELFTEST}"}
    assert len({control.name for control in CONTROLS}) == len(CONTROLS)
    assert {control.fault for control in CONTROLS} == {*FAULTS, STOCK_KVM, WRONG_POINT}
    for fault in FAULTS.values():
        for name, text, _ in fault.edits:
            assert (ROOT / "kmod" / name).read_text().count(text) == 1, (name, text)
    assert WRONG_POINT_ENTRY not in KVM_POINTS.read_text().split()


def make_for(settings):
    source = records.require(SourceRecord, settings.layout)
    return kmake.for_settings(settings, source.source_date_epoch, compiles=True)


def build_faulty_modules(make: kmake.Make, work: Path) -> dict[str, Path]:
    """sched_inject.ko per fault: one copy of kmod/ built once, then each fault's
    edits made, built (only the edited file compiles again) and undone."""
    shutil.rmtree(work, ignore_errors=True)
    source = work / "kmod"
    shutil.copytree(ROOT / "kmod", source)
    argv = make.argv(f"M={source}", "modules", parallel=True)
    make.run(argv, log_file=work / "baseline.log")
    built = {}
    for name, fault in FAULTS.items():
        originals = {}
        for file, text, replacement in fault.edits:
            path = source / file
            originals.setdefault(path, path.read_text())
            path.write_text(path.read_text().replace(text, replacement, 1))
        try:
            make.run(argv, log_file=work / f"{name}.log")
        finally:
            for path, text in originals.items():
                path.write_text(text)
        built[name] = work / name / "sched_inject.ko"
        built[name].parent.mkdir()
        shutil.copy2(source / "sched_inject.ko", built[name])
    return built


def build_stock_kvm(settings, make: kmake.Make, work: Path) -> Path:
    """kvm.ko, kvm-amd.ko and kvm-intel.ko from the patched tree with every include
    of the series' header removed: KVM as it is without the series."""
    tree = settings.layout.tree
    copy = work / "stock-kvm"
    shutil.rmtree(copy, ignore_errors=True)
    for part in ("arch/x86/kvm", "virt/kvm"):
        shutil.copytree(tree / part, copy / part)
    include = re.compile(r"^#include <linux/kvm_preempt_count\.h>.*\n", re.MULTILINE)
    unpatched = [path for path in copy.rglob("*.c") if include.search(path.read_text())]
    assert unpatched, "the KVM series adds its include to no file: what does stock mean?"
    for path in unpatched:
        path.write_text(include.sub("", path.read_text()))
    make.run(make.argv(f"M={copy / 'arch/x86/kvm'}", "modules", parallel=True),
             log_file=work / "stock-kvm.log")
    return copy / "arch/x86/kvm"


def controls_archive(modules: dict[str, Path], stock_kvm: Path, dest: Path) -> None:
    """The second disk: a tar of "order" and a directory per control."""
    def add_text(tar: tarfile.TarFile, name: str, text: str) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(text.encode())
        tar.addfile(info, io.BytesIO(text.encode()))

    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        add_text(tar, "order", "\n".join(c.name for c in CONTROLS) + "\n")
        for control in CONTROLS:
            name = control.name
            what = {STOCK_KVM: STOCK_KVM_WHAT, WRONG_POINT: WRONG_POINT_WHAT}.get(
                control.fault) or FAULTS[control.fault].what
            lines = [f"case {control.case}", f"expect {control.expect}",
                     f"fault {control.fault}: {what}"]
            if control.run:
                lines.append(f"run {control.run}")
            add_text(tar, f"{name}/control", "\n".join(lines) + "\n")
            if control.fault == STOCK_KVM:
                for ko in ("kvm.ko", "kvm-amd.ko", "kvm-intel.ko"):
                    tar.add(stock_kvm / ko, f"{name}/{ko}")
            elif control.fault == WRONG_POINT:
                add_text(tar, f"{name}/kvm-points",
                         f"{KVM_POINTS.read_text()}{WRONG_POINT_ENTRY}\n")
            else:
                tar.add(modules[control.fault], f"{name}/sched_inject.ko")


def test_every_case_fails_with_its_fault_planted(kernel_build):
    work = kernel_build.layout.build / "faults"
    make = make_for(kernel_build)
    modules = build_faulty_modules(make, work)
    stock_kvm = build_stock_kvm(kernel_build, make, work)
    disk = work / "controls.tar"
    controls_archive(modules, stock_kvm, disk)

    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "test", f"paths.build={E2E_BUILD}",
         "boot.suite=faults", f"boot.disks={disk}"],
        cwd=ROOT, capture_output=True, text=True)
    results = kernel_build.layout.results
    tree = ktap.parse((results / "ktap.log").read_text().splitlines())
    suite = next(test for test in tree.subtests if test.name == "faults")
    verdicts = {case.name: case for case in suite.subtests}
    assert list(verdicts) == [c.name for c in CONTROLS], show(proc)
    for control in CONTROLS:
        case = verdicts[control.name]
        # The inner case's own result and FAILED line, as the guest saw them.
        said = "\n".join(case.diagnostics)
        assert case.status == ktap.Status.PASSED, f"{control}:\n{said}"
        assert "not ok" in said and f"FAILED: {control.expect}" in said, said
    assert proc.returncode == 0, show(proc)
    report = json.loads((results / "results.json").read_text())
    assert report["outcome"] == "passed" and report["counts"]["passed"] == len(CONTROLS)
