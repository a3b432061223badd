"""The kernel's KVM selftests: built from the tree, run in the real guest alone and
under injection.

Shares conftest.kernel_build (build/test) and test_e2e_kmod's run of the
default suite, which selects SELECTION through kselftest.tests: the selftests
ride along in the boot every default case uses.
"""

from __future__ import annotations

import fnmatch
import json
import re

import pytest
from test_e2e_kmod import SELECTION

from pipeline import kselftest, records
from pipeline.records import SelftestsRecord

pytestmark = pytest.mark.slow


def test_selftests_are_built_from_the_fetched_tree(kernel_build):
    layout = kernel_build.layout
    record = records.load(SelftestsRecord, layout)
    assert record is not None and len(record.tests) >= 80
    log = layout.log("selftests").read_text()
    # uapi headers from this tree, not the host's; every path mapped out of the binaries.
    assert re.search(rf"^\$ .*make -C {layout.tree} O={layout.selftests_work} .*headers_install",
                     log, re.M)
    assert f"-isystem {layout.selftests_work}/usr/include" in log
    assert f"-ffile-prefix-map={layout.build}/=" in log
    for name in ("run_kselftest.sh", "kselftest/runner.sh", "kvm/state_test"):
        assert (layout.selftests / name).is_file(), name
    state_test = (layout.selftests / "kvm" / "state_test").read_bytes()
    assert str(layout.build).encode() not in state_test
    listed = [entry.removeprefix("kvm:") for entry in record.tests]
    # The known list names only tests this tree has (a stale entry would hide nothing).
    for pattern, reason in kselftest.load_known(layout.kselftest_known):
        assert fnmatch.filter(listed, pattern), (pattern, reason)
    assert set(SELECTION.split(",")) <= set(listed)


def test_selection_passes_alone_and_under_injection(kernel_build, default_suite):
    """Every selected selftest passes alone and with the injector in its threads;
    injections are counted per test, and the emulator ranges are really hit."""
    results = json.loads((kernel_build.layout.results / "results.json").read_text())
    verdicts = {v["name"]: v for v in results["kselftests"]}
    assert sorted(verdicts) == sorted(SELECTION.split(","))
    for name, verdict in verdicts.items():
        assert (verdict["alone"], verdict["injected"], verdict["status"]) == \
            ("passed", "passed", "passed"), (name, verdict)
        assert isinstance(verdict["injections"], int), name
    # These emulate APIC accesses or exit to userspace for MMIO: KVM's emulator runs.
    assert sum(verdicts[name]["injections"] for name in
               ("xapic_state_test", "coalesced_io_test")) > 0
    suite = next(top for top in default_suite.subtests if top.name == "kselftest")
    count_only = next(case for case in suite.subtests if case.name == "count_only")
    text = "\n".join(count_only.diagnostics)
    assert count_only.status.value == "passed"
    seen = int(re.search(r"would inject, (\d+) inside preempt-disabled", text)[1])
    assert seen > 0  # the patch makes KVM's preempt-disabled sections visible
