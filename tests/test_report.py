"""report.html: a run's page, rendered from its records and opened in a real headless
browser (Debian's chromium and chromedriver, through selenium)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import ROOT
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from test_kcidb import GOLDEN, a_run
from test_manifest import save_build

from pipeline import history, report
from pipeline.drivers import matrix
from pipeline.drivers.bisect import report as bisect_report
from pipeline.results import Outcome

SCREENSHOTS = ROOT / "build" / "test-artifacts"
SECTIONS = ("outcome", "kernel", "cases", "injections", "history")


@pytest.fixture(scope="module")
def browser():
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,2000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def failing_run(settings, results: Path) -> None:
    """The golden run with smoke.injection_rate failing, after two kept passing runs."""
    for number in range(2):
        a_run(settings, settings.layout.results, "kselftest-run.ktap", Outcome.PASSED)
        os.utime(settings.layout.results, (1_790_000_000 + 3600 * number,) * 2)
        history.keep_previous(settings.layout)
    golden = (GOLDEN / "kselftest-run.ktap").read_text()
    failed = golden.replace("    ok 1 injection_rate\n",
                            "    # FAILED: 3 injections, want 40..\n    not ok 1 injection_rate\n", 1)
    assert failed != golden
    (results.parent / "failed.ktap").write_text(failed)
    a_run(settings, results, str(results.parent / "failed.ktap"), Outcome.TEST_FAILURES,
          "1 failed")


def test_the_run_page_loads_with_every_section_and_the_failure_unfolded(
        make_settings, browser):
    settings = make_settings()
    save_build(settings.layout)
    results = settings.layout.results
    failing_run(settings, results)
    page = report.write(settings.layout, results)
    assert page == results / "report.html"
    browser.get(page.as_uri())
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    for section in SECTIONS:
        assert browser.find_element(By.ID, section).is_displayed(), section
    assert "test failures" in browser.find_element(By.ID, "outcome").text
    rows = {row.find_element(By.TAG_NAME, "td").text: row
            for row in browser.find_elements(By.CSS_SELECTOR, "#cases tr")[1:]}
    failed = rows["smoke.injection_rate"].find_element(By.TAG_NAME, "details")
    passed = rows["smoke.register_integrity"].find_element(By.TAG_NAME, "details")
    assert failed.get_attribute("open") is not None and passed.get_attribute("open") is None
    assert failed.find_element(By.TAG_NAME, "summary").text == \
        "FAILED: 3 injections, want 40.."
    charts = browser.find_elements(By.CSS_SELECTOR, "#injections svg")
    assert len(charts) == 4  # per case, per selftest, sleeps, skip reasons
    grid = browser.find_element(By.CSS_SELECTOR, "#history table").text
    assert grid.count("this run") == 1 and "failed" in grid
    assert browser.find_elements(By.CSS_SELECTOR, "#history svg")  # the trend chart
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(SCREENSHOTS / "report-run.png"))


def test_a_run_without_earlier_runs_or_records_still_gets_a_page(make_settings, tmp_path):
    settings = make_settings()
    a_run(settings, settings.layout.results, "boot-passed.ktap", Outcome.PASSED)
    text = report.write(settings.layout, settings.layout.results).read_text()
    assert "No kernel record in this build dir." in text
    assert "No earlier run of this suite is kept" in text
    assert "<script" not in text and "http" not in text.split("<svg", 1)[0]


def cell_row(name: str, patch: str, **changes) -> matrix.CellRow:
    values = dict(cell=name, line="linux-source-6.12", variant="default", patch=patch,
                  exit_code=0, failed_at=None, error="", seconds=1500.0, outcome="passed",
                  cases={"smoke.injection_rate": "passed", "kvm.kvm_patch_effect": "passed"},
                  headline={"injections": 477, "patch_effect_seen": 12},
                  schema=matrix.MATRIX_SCHEMA)
    return matrix.CellRow(**{**values, **changes})


def test_the_matrix_page_shows_every_cell_and_links_their_runs(make_settings, browser):
    layout = make_settings().layout
    passed = cell_row("6.12-default-patched", "patched")
    failed = cell_row("6.12-default-stock", "stock", exit_code=4, failed_at="build",
                      outcome="failed at build", cases={}, headline={},
                      error="the kernel's build failed: x.c:1: error")
    (layout.matrix / passed.cell / "results").mkdir(parents=True)
    (layout.matrix / passed.cell / "results" / "report.html").write_text("<p>cell</p>")
    summary = matrix.MatrixSummary(cells=[passed, failed], passed=False,
                                   schema=matrix.MATRIX_SCHEMA)
    fresh = {passed.cell: layout.matrix / passed.cell / "results" / "results.json"}
    page = matrix.write_page(layout, summary, fresh)
    browser.get(page.as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    for section in ("outcome", "grid", "cases", "charts"):
        assert browser.find_element(By.ID, section).is_displayed(), section
    assert "1 of 2 cells failed: 6.12-default-stock" in browser.find_element(By.ID,
                                                                             "outcome").text
    grid = browser.find_element(By.ID, "grid")
    assert "failed at build" in grid.text and "x.c:1: error" in grid.text
    link = grid.find_element(By.LINK_TEXT, "its run's page")
    assert link.get_attribute("href").endswith("6.12-default-patched/results/report.html")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#charts svg")) == 2
    assert browser.save_screenshot(str(SCREENSHOTS / "report-matrix.png"))


def test_the_bisect_page_names_the_culprit_with_its_fixes_line(make_settings, browser):
    layout = make_settings().layout
    verdicts = ["bad", "good", "skip", "bad", "good"]
    steps = [bisect_report.StepRow(commit=f"{n}" * 40, subject=f"change {n}", verdict=v,
                                   reason="why", outcome="passed", seconds=60.0 * n,
                                   cached=False, runs=1)
             for n, v in enumerate(verdicts, 1)]
    culprit = bisect_report.FirstBad("4" * 40, "KVM: x86: the planted regression")
    found = bisect_report.BisectReport(
        find="regression", first_bad=culprit, candidates=[], good="2" * 40, bad="1" * 40,
        symptom=bisect_report.Symptom("test failures", ("kvm.kvm_under_injection",), 3, 3),
        commits_in_range=20, steps=steps, tested=5, step_bound=7,
        confidence=bisect_report.Confidence(0.98, "all good verdicts right: 98.0%"),
        seconds=900.0, schema=bisect_report.BISECT_SCHEMA)
    page = bisect_report.write_page(layout, found)
    browser.get(page.as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    outcome = browser.find_element(By.ID, "outcome").text
    assert f'Fixes: {"4" * 12} ("KVM: x86: the planted regression")' in outcome
    rows = browser.find_elements(By.CSS_SELECTOR, "#timeline tr")[1:]
    assert [row.find_elements(By.TAG_NAME, "td")[3].text for row in rows] == verdicts
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline svg")
    assert browser.save_screenshot(str(SCREENSHOTS / "report-bisect.png"))
