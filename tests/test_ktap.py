"""The KTAP parser on logs captured from our own guest runs, and on edge cases."""

from pathlib import Path

import pytest

from pipeline import ktap
from pipeline.ktap import Status

GOLDEN = Path(__file__).parent / "golden"


def parse_text(text: str) -> ktap.Test:
    return ktap.parse(text.splitlines())


def test_captured_boot_run_passes():
    tree = ktap.parse((GOLDEN / "boot-passed.ktap").read_text().splitlines(), name="boot")
    assert tree.status is Status.PASSED
    assert tree.errors == []
    (suite,) = tree.subtests
    assert suite.name == "boot" and suite.status is Status.PASSED
    assert [t.name for t in suite.subtests] == [
        "kernel_release", "modprobe_kvm", "modprobe_vendor", "dev_kvm", "kvm_guest_hlt"]
    assert suite.subtests[4].diagnostics[-1] == "guest wrote '4' and halted"
    counts = tree.counts()
    assert (counts.passed, counts.failed, counts.total) == (5, 0, 5)


def test_captured_truncated_run_is_crashed():
    """A guest that hung in its fifth test: the stream stops mid-suite."""
    tree = ktap.parse((GOLDEN / "boot-truncated.ktap").read_text().splitlines())
    assert tree.status is Status.CRASHED
    (suite,) = tree.subtests
    assert suite.status is Status.CRASHED
    assert len(suite.subtests) == 4
    assert any("planned 5 tests, got 4" in e for e in tree.errors)


def test_missing_plan_is_recorded():
    tree = parse_text("KTAP version 1\nok 1 first\nnot ok 2 second\n")
    assert tree.status is Status.FAILED
    assert any("no plan line" in e for e in tree.errors)
    assert tree.counts().failed == 1


def test_directives_skip_and_todo():
    tree = parse_text("KTAP version 1\n1..3\nok 1 a # SKIP no svm\nnot ok 2 b # TODO known\n"
                      "ok 3 c # some comment\n")
    a, b, c = tree.subtests
    assert (a.status, a.directive) == (Status.SKIPPED, "no svm")
    assert (b.status, b.directive) == (Status.TODO, "known")
    assert c.status is Status.PASSED and c.diagnostics == ["some comment"]
    counts = tree.counts()
    assert (counts.passed, counts.skipped, counts.todo, counts.failed) == (1, 1, 1, 0)
    assert tree.status is Status.PASSED


def test_all_skipped_is_skipped():
    tree = parse_text("KTAP version 1\n1..1\nok 1 a # SKIP why\n")
    assert tree.status is Status.SKIPPED


def test_nested_suites_kunit_style():
    text = """\
KTAP version 1
1..2
    KTAP version 1
    # Subtest: first
    1..2
    ok 1 a
    # a diagnostic for b
    not ok 2 b
not ok 1 first
    KTAP version 1
    # Subtest: second
    1..1
        KTAP version 1
        # Subtest: deeper
        1..1
        ok 1 leaf
    ok 1 deeper
ok 2 second
"""
    tree = parse_text(text)
    first, second = tree.subtests
    assert first.status is Status.FAILED
    assert first.subtests[1].diagnostics == ["a diagnostic for b"]
    assert second.subtests[0].subtests[0].name == "leaf"
    assert tree.status is Status.FAILED
    paths = [".".join(p) for p, t in tree.walk() if not t.subtests]
    assert paths == ["first.a", "first.b", "second.deeper.leaf"]
    assert tree.errors == []


def test_console_prefix_is_stripped():
    lines = ["[    1.000] random boot noise", "[    2.000] KTAP version 1", "[    2.001] 1..1",
             "[    2.002]     KTAP version 1", "[    2.003]     # Subtest: s",
             "[    2.004]     1..1", "[    2.005]     ok 1 t", "[    2.006] ok 1 s"]
    tree = ktap.parse(lines)
    assert tree.status is Status.PASSED
    assert tree.subtests[0].subtests[0].name == "t"


def test_malformed_lines_are_recorded_not_raised():
    tree = parse_text("KTAP version 1\n1..2\nok 1 a\nthis is not ktap\nok 3 c\n")
    assert any("not KTAP" in e for e in tree.errors)
    assert any("test number 3, expected 2" in e for e in tree.errors)


@pytest.mark.parametrize("text", ["", "no header at all\n", "KTAP version 1\n",
                                  "KTAP version 1\n1..x\n\x00\x01\n", "KTAP version 1\n    \n"])
def test_never_raises(text):
    tree = parse_text(text)
    assert tree.status in (Status.NO_TESTS, Status.CRASHED)
    assert tree.errors
