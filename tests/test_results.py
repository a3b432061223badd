"""Outcome classification and the result files (JUnit XML, JSON)."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pipeline import console, ktap, results
from pipeline.results import (
    Outcome,
    RunReport,
    classify_outcome,
    skips,
    summary,
    write_json,
    write_junit,
)

GOLDEN = Path(__file__).parent / "golden"
PASSED_TREE = ktap.parse((GOLDEN / "boot-passed.ktap").read_text().splitlines(), name="boot")
PANIC = console.classify((GOLDEN / "panic.console").read_text().splitlines())
WARN = console.classify(["WARNING: CPU: 0 PID: 1 at x.c:1 f+0x1/0x2"])


def outcome(**kw):
    args = {"kernel_started": True, "timed_out": None, "findings": [], "guest_status": 0,
            "tree": PASSED_TREE, **kw}
    return classify_outcome(**args)[0]


@pytest.mark.parametrize(("kw", "expected"), [
    ({}, Outcome.PASSED),
    ({"kernel_started": False}, Outcome.QEMU_FAILED),
    # Killed at the boot deadline before the kernel's first line: a timeout, not QEMU.
    ({"kernel_started": False, "timed_out": "boot", "guest_status": None}, Outcome.BOOT_TIMEOUT),
    ({"findings": PANIC, "guest_status": None}, Outcome.KERNEL_PANIC),
    ({"timed_out": "boot", "guest_status": None}, Outcome.BOOT_TIMEOUT),
    ({"timed_out": "run", "guest_status": None}, Outcome.TEST_TIMEOUT),
    ({"findings": WARN}, Outcome.CONSOLE_BADNESS),
    ({"guest_status": None}, Outcome.TEST_FAILURES),
    ({"guest_status": 1}, Outcome.TEST_FAILURES),
    ({"tree": ktap.parse((GOLDEN / "boot-truncated.ktap").read_text().splitlines())},
     Outcome.TEST_FAILURES),
    # A panic outranks the timeout it causes and the console noise around it.
    ({"findings": WARN + PANIC, "timed_out": "run"}, Outcome.KERNEL_PANIC),
])
def test_outcome_precedence(kw, expected):
    assert outcome(**kw) is expected


def test_a_skip_fails_the_run_on_every_accelerator_unless_allowed():
    """Off TCG too: a host without nested virtualisation skips every KVM case, and a
    run that ran none of them must not pass; allowed by glob, it passes and says so."""
    tree = ktap.parse(["KTAP version 1", "1..2", "    KTAP version 1", "    1..2",
                       "    ok 1 a", "    ok 2 b # SKIP the CPU offers neither svm nor vmx",
                       "ok 1 kvm", "    KTAP version 1", "    1..2",
                       "    ok 1 kernel_release",
                       "    ok 2 dev_kvm # SKIP the CPU offers neither svm nor vmx",
                       "ok 2 boot"])
    run = {"kernel_started": True, "timed_out": None, "findings": [], "guest_status": 0,
           "tree": tree}
    found = skips(tree, [], [])
    assert [(s.name, s.reason, s.allowed) for s in found] == [
        ("kvm.b", "the CPU offers neither svm nor vmx", False),
        ("boot.dev_kvm", "the CPU offers neither svm nor vmx", False)]
    result, why = classify_outcome(**run, skipped=found)
    assert result is Outcome.TEST_FAILURES
    assert why.startswith("2 case(s) skipped, and a case that does not run fails the run: "
                          "kvm.b (the CPU offers neither svm nor vmx); boot.dev_kvm")
    assert "no nested virtualisation" in why
    assert why.endswith("test.allow_skips='kvm.b,boot.dev_kvm'")
    allowed = skips(tree, [], ["kvm.*", "boot.dev_*"])
    result, why = classify_outcome(**run, skipped=allowed)
    assert result is Outcome.PASSED
    assert why == "2 passed, 2 skipped (allowed: kvm.b, boot.dev_kvm)"
    # Half allowed is not allowed.
    result, why = classify_outcome(**run, skipped=skips(tree, [], ["kvm.*"]))
    assert result is Outcome.TEST_FAILURES and "kvm.b" not in why


def test_exit_codes_are_distinct():
    codes = [o.value for o in Outcome]
    assert len(set(codes)) == len(codes)
    assert 125 not in codes  # git bisect run's "skip"


def report(result: Outcome, why: str = "why") -> RunReport:
    return RunReport(suite="boot", outcome=result, why=why, accel="tcg", accel_why="probe",
                     guest_status=0, seconds={"total": 4.2}, qemu_argv=["qemu"])


def test_json_and_junit_for_a_pass(tmp_path):
    write_json(tmp_path / "r.json", report(Outcome.PASSED), PASSED_TREE)
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["outcome"] == "passed" and data["exit_code"] == 0
    assert data["counts"]["passed"] == 5
    assert data["accelerator"] == {"name": "tcg", "why": "probe"}
    write_junit(tmp_path / "j.xml", report(Outcome.PASSED), PASSED_TREE)
    suites = ET.parse(tmp_path / "j.xml").getroot()
    (suite,) = suites
    assert suite.get("tests") == "5" and suite.get("failures") == "0"
    assert [c.get("name") for c in suite] == [
        "kernel_release", "modprobe_kvm", "modprobe_vendor", "dev_kvm", "kvm_guest_hlt"]


def test_junit_for_failures_and_crash(tmp_path):
    tree = ktap.parse("KTAP version 1\n1..1\n    KTAP version 1\n    # Subtest: s\n    1..3\n"
                      "    # it broke\n    not ok 1 a\n    ok 2 b # SKIP no\n".splitlines())
    write_junit(tmp_path / "j.xml", report(Outcome.TEST_FAILURES, "1 failed"), tree)
    suites = ET.parse(tmp_path / "j.xml").getroot()
    suite, guest = suites
    a, b = suite
    assert a.find("failure").text == "it broke"
    assert b.find("skipped") is not None
    assert guest.find("testcase/failure").get("message") == "test failures"


def test_summary_table():
    text = summary(report(Outcome.PASSED, "5 passed"), PASSED_TREE)
    assert "boot.kvm_guest_hlt" in text and "boot: passed (5 passed)" in text


# --- per-test durations (the guest's "# duration_ms: N" lines)

DEFAULT_TREE = ktap.parse((GOLDEN / "default-passed.ktap").read_text().splitlines(),
                          name="smoke,lifecycle,sections,kvm")


def test_junit_and_json_carry_the_guests_durations(tmp_path):
    write_junit(tmp_path / "j.xml", report(Outcome.PASSED), DEFAULT_TREE)
    suites = ET.parse(tmp_path / "j.xml").getroot()
    assert [s.get("name") for s in suites] == ["smoke", "lifecycle", "sections", "kvm"]
    for suite, top in zip(suites, DEFAULT_TREE.subtests, strict=True):
        assert suite.get("time") == f"{top.seconds:.3f}"
        for case, leaf in zip(suite, top.subtests, strict=True):
            assert case.get("name") == leaf.name
            assert case.get("time") == f"{leaf.seconds:.3f}" and float(case.get("time")) > 0
    times = {c.get("name"): float(c.get("time")) for s in suites for c in s}
    assert 11 <= times["injection_rate"] < 30  # 10 s injecting, 1 s for the last sleeper

    write_json(tmp_path / "r.json", report(Outcome.PASSED), DEFAULT_TREE)
    data = json.loads((tmp_path / "r.json").read_text())["tests"]
    assert data["seconds"] is None
    smoke = data["subtests"][0]
    assert smoke["name"] == "smoke" and smoke["seconds"] == round(DEFAULT_TREE.subtests[0].seconds, 3)
    rate = smoke["subtests"][0]
    assert rate["name"] == "injection_rate" and rate["seconds"] == times["injection_rate"]
    assert not any(d.startswith("duration_ms") for d in rate["diagnostics"])


def test_suite_time_falls_back_to_the_sum_of_its_cases(tmp_path):
    tree = ktap.parse("KTAP version 1\n1..2\n    KTAP version 1\n    # Subtest: s\n    1..2\n"
                      "    # duration_ms: 1500\n    ok 1 a\n    # duration_ms: 250\n    ok 2 b\n"
                      "ok 1 s\n    KTAP version 1\n    # Subtest: t\n    1..2\n"
                      "    # duration_ms: 1500\n    ok 1 a\n    # duration_ms: soon\n    ok 2 b\n"
                      "ok 2 t\n".splitlines())
    write_junit(tmp_path / "j.xml", report(Outcome.PASSED), tree)
    s, t = ET.parse(tmp_path / "j.xml").getroot()
    assert s.get("time") == "1.750" and [c.get("time") for c in s] == ["1.500", "0.250"]
    # A case without a (valid) time has none, and its suite's sum is unknown.
    assert t.get("time") is None and [c.get("time") for c in t] == ["1.500", None]


def test_no_durations_no_times(tmp_path):
    write_junit(tmp_path / "j.xml", report(Outcome.PASSED), PASSED_TREE)
    suites = ET.parse(tmp_path / "j.xml").getroot()
    assert all(e.get("time") is None for e in suites.iter())
    write_json(tmp_path / "r.json", report(Outcome.PASSED), PASSED_TREE)
    data = json.loads((tmp_path / "r.json").read_text())["tests"]
    assert data["subtests"][0]["subtests"][0]["seconds"] is None


def test_summary_shows_case_times():
    text = summary(report(Outcome.PASSED), DEFAULT_TREE)
    rate = DEFAULT_TREE.subtests[0].subtests[0].seconds
    (line,) = [line for line in text.splitlines() if line.startswith("smoke.injection_rate ")]
    assert line.split() == ["smoke.injection_rate", f"{rate:.1f}", "passed"]


def test_a_tree_comes_back_from_its_json(tmp_path):
    tree = ktap.parse((GOLDEN / "default-passed.ktap").read_text().splitlines(), name="default")
    report = RunReport("default", Outcome.PASSED, "", "tcg", "", 0, {"total": 1.0})
    write_json(tmp_path / "results.json", report, tree)
    record = results.read_record(tmp_path / "results.json", results.RunResult)
    back = record.tests.tree()
    assert record.suite == "default" and record.outcome == "passed" and record.exit_code == 0
    assert [(names, t.status, t.diagnostics, t.seconds) for names, t in back.walk()] == \
        [(names, t.status, t.diagnostics, t.seconds) for names, t in tree.walk()]


def test_a_record_of_another_schema_reads_as_missing(tmp_path):
    report = RunReport("default", Outcome.TEST_FAILURES, "1 failed", "tcg", "", 0, {})
    path = tmp_path / "results.json"
    write_json(path, report, PASSED_TREE)
    assert results.read_record(path, results.RunResult).outcome == "test failures"
    path.write_text(path.read_text().replace(f'"schema": {results.RESULTS_SCHEMA}',
                                             '"schema": 999'))
    assert results.read_record(path, results.RunResult) is None
    data = json.loads(path.read_text())
    del data["schema"]  # as an older pipeline wrote it
    path.write_text(json.dumps(data))
    assert results.read_record(path, results.RunResult) is None
    path.write_text("{not json")
    assert results.read_record(path, results.RunResult) is None
    assert results.read_record(tmp_path / "missing.json", results.RunResult) is None
