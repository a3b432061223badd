"""The KTAP parser on logs captured from our own guest runs, and on edge cases."""

import os
import re
import shutil
import subprocess
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


# --- per-test durations: "# duration_ms: N" right before a result line

ROOT = Path(__file__).resolve().parent.parent
LIB = ROOT / "images" / "lib"
SUITES = ROOT / "images" / "suites"
DEFAULT_SUITE = ["smoke", "lifecycle", "sections", "kvm"]


def test_captured_default_run_has_durations():
    """A real `doit test` run of the default suites: every case and suite timed."""
    tree = ktap.parse((GOLDEN / "default-passed.ktap").read_text().splitlines())
    assert tree.status is Status.PASSED and tree.errors == []
    assert [s.name for s in tree.subtests] == DEFAULT_SUITE
    leaves = {".".join(p): t for p, t in tree.walk() if not t.subtests}
    assert len(leaves) == 15
    for name, test in leaves.items():
        assert test.seconds is not None and test.seconds > 0, name
        assert not any(line.startswith("duration_ms") for line in test.diagnostics), name
    # smoke.injection_rate injects for 10 s and waits 1 s more; the KVM case runs
    # its workload 5 s without and 20 s with injection.
    assert 11 <= leaves["smoke.injection_rate"].seconds < 30
    assert 25 <= leaves["kvm.kvm_under_injection"].seconds < 90
    for suite in tree.subtests:
        cases = sum(t.seconds for t in suite.subtests)
        assert suite.seconds is not None and cases <= suite.seconds < cases + 5, suite.name
    assert tree.seconds is None  # init prints no time for the whole stream


def test_captured_run_without_durations_has_none():
    tree = ktap.parse((GOLDEN / "boot-passed.ktap").read_text().splitlines())
    assert all(t.seconds is None for _, t in tree.walk())


def test_duration_lines_become_seconds():
    tree = parse_text("""\
KTAP version 1
1..1
    KTAP version 1
    # Subtest: s
    1..3
    # duration_ms: 5
    # output of a
    # duration_ms: 1230
    ok 1 a
    # no svm
    # duration_ms: 40
    ok 2 b # SKIP no svm
    # it broke
    # duration_ms:7.5
    not ok 3 c
# duration_ms: 1300
not ok 1 s
""")
    (suite,) = tree.subtests
    a, b, c = suite.subtests
    assert (a.seconds, b.seconds, c.seconds, suite.seconds) == (1.23, 0.04, 0.0075, 1.3)
    # Only the line right before the result is the time; one before is the case's own.
    assert a.diagnostics == ["duration_ms: 5", "output of a"]
    assert (b.status, b.directive, b.diagnostics) == (Status.SKIPPED, "no svm", ["no svm"])
    assert c.diagnostics == ["it broke"] and suite.diagnostics == []
    assert tree.errors == []


@pytest.mark.parametrize("value", ["", "abc", "-5", "1e3", "12 ms", "0x10", "nan", "inf",
                                   "1.2.3", "9" * 13, "9" * 5000, "1." + "0" * 7, "١٢"])
def test_malformed_duration_records_nothing(value):
    tree = parse_text(f"KTAP version 1\n1..1\n# duration_ms: {value}\nok 1 a\n")
    (a,) = tree.subtests
    assert a.seconds is None and a.status is Status.PASSED
    assert a.diagnostics == [f"duration_ms: {value}".strip()]


def test_duration_not_right_before_the_result_is_a_diagnostic():
    tree = parse_text("KTAP version 1\n1..1\n# duration_ms: 100\n# later output\nok 1 a\n")
    assert tree.subtests[0].seconds is None
    assert tree.subtests[0].diagnostics == ["duration_ms: 100", "later output"]


# --- the guest's shell library, run here under dash as the guest runs it


def run_suite(tmp_path: Path, body: str, env: dict[str, str] | None = None) -> str:
    dash = shutil.which("dash")
    if dash is None:
        pytest.skip("no dash here (the guest's /bin/sh)")
    script = tmp_path / "suite"
    script.write_text(f". {LIB / 'ktap.sh'}\n{body}")
    run = subprocess.run([dash, str(script)], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"], **(env or {})}, check=False)
    return "KTAP version 1\n1..1\n" + run.stdout


def test_ktap_run_times_each_case_and_the_suite(tmp_path):
    hooks = tmp_path / "hooks"
    text = run_suite(tmp_path, f"""\
ktap_before_case() {{ echo before >>{hooks}; echo noise; }}
case_quick() {{ echo hi; }}
case_slow() {{ sleep 0.3; echo slept; }}
case_skipped() {{ echo "no svm"; return "$KTAP_SKIP"; }}
case_broken() {{ echo "it broke"; return 1; }}
ktap_run demo quick slow skipped broken
""")
    assert "    # duration_ms: " in text and "\n# duration_ms: " in text
    tree = ktap.parse(text.splitlines())
    assert tree.errors == []
    (suite,) = tree.subtests
    quick, slow, skipped, broken = suite.subtests
    assert [t.status for t in suite.subtests] == [
        Status.PASSED, Status.PASSED, Status.SKIPPED, Status.FAILED]
    assert (quick.diagnostics, slow.diagnostics, skipped.directive, broken.diagnostics) == (
        ["hi"], ["slept"], "no svm", ["it broke"])
    # /proc/uptime counts centiseconds: a multiple of 10 ms.
    assert all(t.seconds is not None for t in [*suite.subtests, suite])
    assert 0.3 <= slow.seconds < 5
    assert suite.seconds >= round(sum(t.seconds for t in suite.subtests), 2)  # centiseconds
    assert hooks.read_text() == "before\n" * 4


def test_a_lava_run_prints_one_flat_line_per_case_on_the_console(tmp_path):
    console = tmp_path / "console"
    body = ("case_good() { :; }\ncase_off() { echo no svm; return \"$KTAP_SKIP\"; }\n"
            "case_bad() { return 1; }\nktap_run demo good off bad\n")
    run_suite(tmp_path, body, env={"PIPELINE_LAVA": "1", "PIPELINE_CONSOLE": str(console)})
    assert console.read_text() == ("pipeline-case: demo.good pass\n"
                                   "pipeline-case: demo.off skip\n"
                                   "pipeline-case: demo.bad fail\n")
    console.unlink()
    run_suite(tmp_path, body, env={"PIPELINE_CONSOLE": str(console)})  # not a LAVA run
    assert not console.exists()


def test_ktap_run_selects_cases_without_a_hook(tmp_path):
    text = run_suite(tmp_path, "case_a() { :; }\ncase_b() { :; }\nktap_run demo a b\n",
                     env={"PIPELINE_CASES": "demo.b"})
    (suite,) = ktap.parse(text.splitlines()).subtests
    assert [t.name for t in suite.subtests] == ["b"] and suite.status is Status.PASSED


def test_expect_names_the_condition_that_failed(tmp_path):
    text = run_suite(tmp_path, """\
case_holds() { n=3; expect "n above 0 (got $n)" [ "$n" -gt 0 ] && echo after; }
case_fails() {
	n=0
	expect "n above 0 (got $n)" [ "$n" -gt 0 ] && expect "never reached" false
}
case_first_of_two() { expect "true holds" true && expect "a shell test (eval)" eval '[ 1 = 2 ]'; }
ktap_run demo holds fails first_of_two
""")
    (suite,) = ktap.parse(text.splitlines()).subtests
    holds, fails, first_of_two = suite.subtests
    assert holds.status is Status.PASSED and holds.diagnostics == ["after"]
    assert fails.status is Status.FAILED and fails.diagnostics == ["FAILED: n above 0 (got 0)"]
    assert first_of_two.diagnostics == ["FAILED: a shell test (eval)"]


def test_a_missing_counter_fails_a_comparison_that_would_pass_on_it(tmp_path):
    """`if [ "$n" -lt 5 ]; then fail` lets an empty n pass: numbers() catches it."""
    text = run_suite(tmp_path, """\
check() { if [ "$1" -lt 5 ]; then echo "FAILED: too few"; return 1; fi; }
case_unguarded() { check ""; }
case_guarded() { numbers injections="" && check ""; }
case_not_a_number() { numbers hz=250 switches=12x; }
case_numbers() { numbers hz=250 switches=12 && check 7; }
ktap_run demo unguarded guarded not_a_number numbers
""")
    (suite,) = ktap.parse(text.splitlines()).subtests
    unguarded, guarded, not_a_number, fine = suite.subtests
    assert unguarded.status is Status.PASSED  # what numbers() is for
    assert guarded.status is Status.FAILED
    assert guarded.diagnostics == ["FAILED: injections is missing or not a number ('')"]
    assert not_a_number.diagnostics == ["FAILED: switches is missing or not a number ('12x')"]
    assert fine.status is Status.PASSED


def test_the_hook_sees_the_case_before_and_how_it_went(tmp_path):
    seen = tmp_path / "seen"
    text = run_suite(tmp_path, f"""\
ktap_before_case() {{ echo "[$ktap_last_case]" >>{seen}; }}
case_a() {{ true; }}
case_b() {{ false; }}
case_c() {{ return "$KTAP_SKIP"; }}
ktap_run demo a b c
""")
    assert ktap.parse(text.splitlines()).subtests[0].status is Status.FAILED
    assert seen.read_text().splitlines() == ["[]", "[a pass]", "[b fail]"]


def test_suites_source_only_the_libraries():
    """images/suites/ holds only suites; each sources images/lib/ files that exist."""
    sourced = set()
    for suite in SUITES.iterdir():
        text = suite.read_text()
        assert text.startswith("#!/bin/sh\n") and os.access(suite, os.X_OK), suite.name
        libs = re.findall(r"^\. /usr/local/lib/pipeline/(\S+)$", text, re.MULTILINE)
        assert libs[0] == "ktap.sh" and "ktap_run " in text, suite.name
        assert all((LIB / lib).is_file() for lib in libs), (suite.name, libs)
        sourced.update(libs)
    assert sourced == {p.name for p in LIB.iterdir()}
    for lib in LIB.iterdir():
        header = lib.read_text().splitlines()[:3]
        assert header[0] == "# SPDX-License-Identifier: GPL-2.0" and header[1].startswith("# ")
    if (dash := shutil.which("dash")) is not None:
        for path in [*LIB.iterdir(), *SUITES.iterdir()]:
            subprocess.run([dash, "-n", str(path)], check=True)
