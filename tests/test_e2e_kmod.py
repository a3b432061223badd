"""The injector modules on real parts: built against our kernel, loaded in a real guest.

Shares conftest.kernel_build (the default kernel, kmod and image in build/test).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import E2E_BUILD, ROOT

from pipeline import ktap

pytestmark = pytest.mark.slow

KMOD_SOURCES = sorted(p for p in (ROOT / "kmod").iterdir()
                      if p.suffix in (".c", ".h", ".S"))


@pytest.mark.parametrize("source", KMOD_SOURCES, ids=lambda p: p.name)
def test_checkpatch_strict_clean(kernel_build, source):
    checkpatch = kernel_build.tree_dir / "scripts" / "checkpatch.pl"
    proc = subprocess.run(["perl", str(checkpatch), "--strict", "--no-tree", "-f", str(source)],
                          capture_output=True, text=True)
    assert "total: 0 errors, 0 warnings, 0 checks" in proc.stdout, proc.stdout


def test_built_with_w1_and_no_warnings(kernel_build):
    log = (kernel_build.build_dir / "logs" / "kmod.log").read_text()
    assert re.search(r"^\$ .* W=1 modules", log, re.M)
    assert "warning:" not in log.lower()
    for name in ("sched_inject.ko", "inject_target.ko"):
        ko = kernel_build.artifacts_dir / "kmod" / name
        info = subprocess.run(["modinfo", "-F", "vermagic", str(ko)], capture_output=True,
                              text=True, check=True).stdout
        release = json.loads((kernel_build.artifacts_dir / "kernel.json").read_text())["release"]
        assert info.startswith(release + " ")


def diagnostics_value(tree: ktap.Test, case: str, name: str) -> int:
    (suite,) = tree.subtests
    test = next(t for t in suite.subtests if t.name == case)
    for line in test.diagnostics:
        key, _, value = line.partition(" ")
        if key == name:
            return int(value)
    raise AssertionError(f"{name} not in the diagnostics of {case}: {test.diagnostics}")


def test_smoke_injections_into_the_target_loop(kernel_build):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "test", "boot.suite=smoke",
                           f"paths.build={E2E_BUILD}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    results = json.loads((kernel_build.results_dir / "results.json").read_text())
    assert results["outcome"] == "passed" and results["console_findings"] == []
    tree = ktap.parse((kernel_build.results_dir / "ktap.log").read_text().splitlines())
    injections = diagnostics_value(tree, "inject_into_loop", "injections")
    assert injections >= 100
    assert diagnostics_value(tree, "inject_into_loop", "corruptions") == 0
    assert diagnostics_value(tree, "inject_into_loop", "trampoline_exits") == injections
    # Every timer fire counted exactly one outcome.
    (suite,) = tree.subtests
    stats = dict(line.split(" ", 1) for line in
                 next(t for t in suite.subtests if t.name == "inject_into_loop").diagnostics
                 if " " in line)
    skips = sum(int(v) for k, v in stats.items() if k.startswith("skip_"))
    assert int(stats["fires"]) == injections + int(stats["would_inject"]) + skips
    # The target's sections never saw an injection: the range was the loop only.
    for key, value in stats.items():
        if key.endswith("_injected_inside"):
            assert value == "0", key
    # The kernel's own KTAP tooling reads our stream too.
    kunit = kernel_build.tree_dir / "tools" / "testing" / "kunit" / "kunit.py"
    parsed = subprocess.run([sys.executable, str(kunit), "parse",
                             str(kernel_build.results_dir / "ktap.log")],
                            capture_output=True, text=True)
    assert "Ran 8 tests: passed: 8" in parsed.stdout, parsed.stdout[-2000:]


def test_lifecycle_in_guest(kernel_build):
    """Bad input refused, unload with injections in flight, CPU hotplug, target exit."""
    proc = subprocess.run([sys.executable, "-m", "pipeline", "test", "boot.suite=lifecycle",
                           f"paths.build={E2E_BUILD}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    results = json.loads((kernel_build.results_dir / "results.json").read_text())
    assert results["counts"]["passed"] == 7 and results["console_findings"] == []
    tree = ktap.parse((kernel_build.results_dir / "ktap.log").read_text().splitlines())
    (suite,) = tree.subtests
    unload = next(t for t in suite.subtests if t.name == "unload_with_injections_in_flight")
    cycles = re.search(r"(\d+) load/unload cycles, (\d+) of them unloaded with an injection "
                       r"in flight", " ".join(unload.diagnostics))
    assert cycles and int(cycles[1]) == 50 and int(cycles[2]) >= 10
