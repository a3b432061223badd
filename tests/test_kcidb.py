"""kcidb.json: a guest run as KernelCI's database takes it, valid by KCIDB's own schema
(the kcidb-io package)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import kcidb_io
import pytest
from test_manifest import save_build

from pipeline import kcidb, kselftest, ktap
from pipeline.records import SeriesRecord
from pipeline.results import Outcome, RunReport, RunResult, read_record, write_json

GOLDEN = Path(__file__).parent / "golden"


def a_run(settings, results: Path, golden: str, outcome: Outcome, why: str = "") -> RunResult:
    """results.json as run_suite writes it for the guest's KTAP in tests/golden/."""
    tree = ktap.parse((GOLDEN / golden).read_text().splitlines())
    known = Path(__file__).parent.parent / "images" / "kselftest-known"
    tree, verdicts = kselftest.merge(tree, known, exercised_at=settings.kselftest.exercised_at)
    results.mkdir(parents=True, exist_ok=True)
    write_json(results / "results.json", RunReport(
        suite="main", outcome=outcome, why=why, accel="tcg", accel_why="no usable KVM",
        guest_status=0, seconds={"total": 700.0, "to_init": 3.5}, kselftests=verdicts),
        tree)
    return read_record(results / "results.json", RunResult)


@pytest.fixture
def built(make_settings):
    settings = make_settings()
    save_build(settings.layout)
    return settings


def test_a_run_is_a_valid_kcidb_document_with_a_test_per_case(built, tmp_path):
    results = tmp_path / "results"
    run = a_run(built, results, "kselftest-run.ktap", Outcome.PASSED)
    dest = kcidb.write(built.layout, run, results)
    document = json.loads(dest.read_text())
    kcidb_io.schema.LATEST.validate(document)  # raises when it is not KCIDB's
    assert document["version"] == {"major": 5, "minor": 3}
    (checkout,), (build,) = document["checkouts"], document["builds"]
    assert build["checkout_id"] == checkout["id"]
    tests = document["tests"]
    assert {test["build_id"] for test in tests} == {build["id"]}
    assert len({test["id"] for test in tests}) == len(tests)
    paths = [test["path"] for test in tests]
    assert paths[0] == "boot" and "smoke.injection_rate" in paths
    selftests = [test for test in tests if test["path"].startswith("kselftest.")]
    assert len(selftests) == 41  # one per selftest, not per run of it
    cpuid = next(test for test in selftests if test["path"] == "kselftest.cpuid_test")
    assert cpuid["misc"] == {"injections": 0} and cpuid["duration"] == 5.41
    assert build["misc"]["artifacts_sha256"]["bzImage"] == "b" * 64
    assert checkout["tree_name"] == "linux-source-6.12"


def test_statuses_say_what_kcidb_means(built, tmp_path):
    results = tmp_path / "results"
    lines = ["KTAP version 1", "1..1", "    KTAP version 1", "    # Subtest: smoke", "    1..4",
             "    ok 1 one", "    # it broke here", "    not ok 2 two",
             "    not ok 3 three # SKIP no KVM", "    not ok 4 four # TODO known"]
    tree = ktap.parse(lines)
    results.mkdir()
    write_json(results / "results.json", RunReport(
        suite="smoke", outcome=Outcome.BOOT_TIMEOUT, why="init did not start", accel="tcg",
        accel_why="forced", guest_status=None, seconds={"total": 1.0}), tree)
    run = read_record(results / "results.json", RunResult)
    document = json.loads(kcidb.write(built.layout, run, results).read_text())
    kcidb_io.schema.LATEST.validate(document)
    status = {test["path"]: test["status"] for test in document["tests"]}
    assert status == {"boot": "FAIL", "smoke.one": "PASS", "smoke.two": "FAIL",
                      "smoke.three": "SKIP", "smoke.four": "SKIP"}
    two = next(test for test in document["tests"] if test["path"] == "smoke.two")
    assert two["log_excerpt"] == "it broke here"


def test_the_patchset_hash_is_kcidbs(built):
    """sha256sum *.patch | cut -c-64 | sha256sum, as KCIDB's schema spells it."""
    from pipeline import records

    series = records.require(SeriesRecord, built.layout)
    by_shell = hashlib.sha256(("p" * 64 + "\n").encode()).hexdigest()
    assert kcidb.patchset_hash(series) == by_shell
    stock = SeriesRecord(tree_id="t", kernel_version="6.12", series=None, patches=(),
                         patch_sha256={}, digest="d")
    assert kcidb.patchset_hash(stock) == ""


def test_a_matrix_or_bisection_merges_its_runs_documents(built, tmp_path):
    """Each checkout and build once, every run's tests; a run without a document (it
    failed before its guest) is left out."""
    paths = []
    for number, outcome in enumerate((Outcome.PASSED, Outcome.TEST_FAILURES)):
        results = tmp_path / f"run-{number}"
        run = a_run(built, results, "boot-passed.ktap", outcome)
        paths.append(kcidb.write(built.layout, run, results))
    one = json.loads(paths[0].read_text())
    merged = kcidb.merge([*paths, tmp_path / "run-9" / "kcidb.json"], tmp_path / "all.json")
    document = json.loads(merged.read_text())
    kcidb_io.schema.LATEST.validate(document)
    assert len(document["checkouts"]) == len(document["builds"]) == 1
    assert len(document["tests"]) == 2 * len(one["tests"])
    assert kcidb.merge([tmp_path / "none.json"], tmp_path / "nothing.json") is None


def test_a_merge_of_nothing_leaves_no_earlier_document(tmp_path):
    dest = tmp_path / "kcidb.json"
    dest.write_text('{"tests": ["from an earlier matrix"]}')
    (tmp_path / "odd.json").write_text('["not", "a", "document"]')
    assert kcidb.merge([tmp_path / "odd.json", tmp_path / "none.json"], dest) is None
    assert not dest.exists()


def test_a_page_or_document_that_cannot_be_made_is_not_the_runs_failure(monkeypatch, caplog):
    from pipeline import report

    def broken():
        raise ModuleNotFoundError("No module named 'matplotlib'")

    assert report.best_effort("report.html", broken) is None
    assert "no report.html: ModuleNotFoundError" in caplog.text
