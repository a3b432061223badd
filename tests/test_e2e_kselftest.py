"""The kernel's KVM selftests: built from the tree, run in the real guest alone and
under injection.

Shares conftest.kernel_build (build/test).  The suite's own run is part of
test_e2e_kmod's run of the default suite, which selects SELECTION through
kselftest.tests (the selftests ride along in the boot every default case
uses); its checks are there, next to the fixture.
"""

from __future__ import annotations

import fnmatch
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
    for entry in kselftest.load_known(layout.kselftest_known):
        assert fnmatch.filter(listed, entry.pattern), entry
    assert set(SELECTION.split(",")) <= set(listed)
