"""The modules against the other kernels: the debug variant and Linux 6.1.

Each builds a kernel of its own (kept in build/test-<name> between runs):
the debug one exercises the trampoline's annotations for real (ORC, return
thunks, IBT, objtool), 6.1 the compatibility probes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT, doit

from pipeline import ktap, settings

pytestmark = pytest.mark.slow


def build_kmod(name: str, *overrides: str) -> settings.Settings:
    build = f"build/test-{name}"
    doit("kmod", f"paths.build={build}", *overrides)
    return settings.load(ROOT, {"paths.build": build,
                                **dict(o.split("=", 1) for o in overrides)})


@pytest.fixture(scope="session")
def debug_build() -> settings.Settings:
    return build_kmod("debug", "kernel.variant=debug")


@pytest.fixture(scope="session")
def debug_image(debug_build) -> settings.Settings:
    doit("image", "paths.build=build/test-debug", "kernel.variant=debug")
    return debug_build


@pytest.fixture(scope="session")
def linux61_build() -> settings.Settings:
    return build_kmod("6.1", "source.package=linux-source-6.1")


def sections(ko) -> set[str]:
    out = subprocess.run(["readelf", "-SW", str(ko)], capture_output=True, text=True,
                         check=True).stdout
    return {word for line in out.splitlines() for word in line.split() if word.startswith(".")}


def test_debug_kernel_config(debug_build):
    config = (debug_build.layout.artifacts / "kernel.config").read_text()
    for option in ("CONFIG_PREEMPT_COUNT=y", "CONFIG_PROVE_LOCKING=y", "CONFIG_KASAN=y",
                   "CONFIG_UNWINDER_ORC=y", "CONFIG_MITIGATION_RETHUNK=y",
                   "CONFIG_X86_KERNEL_IBT=y"):
        assert option in config


def test_debug_modules_carry_orc_and_return_sites(debug_build):
    """objtool ran silent (the kmod task fails on any warning) and annotated the modules."""
    log = (debug_build.layout.build / "logs" / "kmod.log").read_text()
    assert "warning" not in log.lower()
    ko = debug_build.layout.artifacts / "kmod" / "sched_inject.ko"
    found = sections(ko)
    assert {".orc_unwind", ".orc_unwind_ip", ".return_sites"} <= found, sorted(found)


def test_modules_build_against_linux_6_1(linux61_build):
    meta = (linux61_build.layout.artifacts / "kernel.json").read_text()
    assert '"kernel_version": "6.1.' in meta
    for name in ("sched_inject.ko", "inject_target.ko"):
        assert (linux61_build.layout.artifacts / "kmod" / name).is_file()


# The KVM selftests the debug kernel runs (KASAN makes each several times
# slower: xapic_state_test takes 45 s a run here), without the count-only pass,
# which PREEMPT_COUNT makes redundant (and which ran xapic_state_test past the
# runner's 120 s).
DEBUG_SELECTION = "state_test,xapic_state_test"


def test_debug_kernel_runs_every_case_clean(debug_image):
    """Cases 1-7 and a few KVM selftests alone and under injection, on
    PREEMPT_COUNT + lockdep + KASAN + ORC + return thunks + IBT,
    with no lockdep, KASAN or might_sleep report (or any other) on the console.
    KASAN and lockdep under TCG are slow: the timeouts are the debug kernel's, and
    the smoke, kvm and lifecycle cases run shorter than the default suite's, with
    wide margins still (480 injections in 10 s against a floor of 150; 47 of 50
    cycles unloading with one in flight against a fifth): two minutes less of CI.
    The sections cases keep their 10 s, since whole_module needs samples inside
    every section.  The default kernel runs everything at full length in
    test_e2e_kmod."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", "test",
                           "paths.build=build/test-debug", "kernel.variant=debug",
                           "boot.boot_timeout=400", "boot.test_timeout=2400",
                           "test.injection_seconds=5", "test.kvm_seconds=10",
                           "test.lifecycle_cycles=20", f"kselftest.tests={DEBUG_SELECTION}",
                           "test.cases=smoke,lifecycle,sections,kvm,"
                           + ",".join(f"kselftest.{name}" for name in DEBUG_SELECTION.split(","))],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    results = json.loads((debug_image.layout.results / "results.json").read_text())
    assert results["console_findings"] == []
    selftests = DEBUG_SELECTION.split(",")
    assert results["counts"]["passed"] == 15 + len(selftests)
    assert results["counts"]["skipped"] == 0
    # With PREEMPT_COUNT the ranges are all of kvm and kvm-amd: lockdep, KASAN and
    # might_sleep stay silent with the selftests' threads put to sleep in KVM
    # (state_test got 11 injections here, xapic_state_test 1138).
    verdicts = {v["name"]: v for v in results["kselftests"]}
    assert sorted(verdicts) == sorted(selftests)
    assert all(v["status"] == "passed" for v in verdicts.values()), verdicts
    assert verdicts["xapic_state_test"]["injections"] > 100
    tree = ktap.parse((debug_image.layout.results / "ktap.log").read_text().splitlines())
    diagnostics = {".".join(names): "\n".join(test.diagnostics) for names, test in tree.walk()}
    # The PREEMPT_COUNT side of every kernel-dependent case ran.
    assert "a range over the whole target module is allowed" in \
        diagnostics["lifecycle.bad_ranges_refused"]
    assert "injecting over the whole module" in diagnostics["sections.whole_module"]
    assert "ranges are all of kvm and kvm-amd's text" in \
        diagnostics["kvm.kvm_under_injection"]
    assert "PREEMPT_COUNT kernel: samples in kvm inside preempt-disabled sections" in \
        diagnostics["kvm.kvm_patch_effect"]
    assert "ranges are all of kvm and kvm-amd's text" in diagnostics["kselftest.state_test"]
