"""`doit matrix`: cells from settings, each cell's settings, the guest slots, the summary.

The cells' real builds and guests are test_e2e_matrix's; here the summary is
made from result files written by pipeline.results from golden KTAP.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from helpers import ROOT, doit

from pipeline import ktap
from pipeline.drivers import cells, matrix
from pipeline.drivers.cells import Cell
from pipeline.errors import MatrixFailed, SettingsError
from pipeline.results import Outcome, RunReport, write_json

GOLDEN = Path(__file__).parent / "golden"


def test_cells_are_lines_by_variants_by_patch(make_settings):
    config = make_settings(**{"matrix.lines": "linux-source-6.12,linux-source-6.1",
                              "matrix.variants": "default,debug", "matrix.patch": "stock"})
    assert [cell.name for cell in cells.picked_cells(config)] == [
        "6.12-default-stock", "6.12-debug-stock", "6.1-default-stock", "6.1-debug-stock"]
    picked = make_settings(**{"matrix.cells": "6.1-*,*-debug-patched"})
    assert [cell.name for cell in cells.picked_cells(picked)] == [
        "6.12-debug-patched", "6.1-default-patched", "6.1-default-stock", "6.1-debug-patched",
        "6.1-debug-stock"]
    with pytest.raises(SettingsError, match=r"picks no cell with '6\.2-\*'.*6\.12-default"):
        cells.picked_cells(make_settings(**{"matrix.cells": "6.1-*,6.2-*"}))


@pytest.mark.parametrize(("key", "value", "message"), [
    ("matrix.variants", "default,fast", "one or more of default, debug"),
    ("matrix.patch", "", "one or more of patched, stock"),
    ("matrix.lines", "linux-6.12", "Debian kernel source packages"),
    ("matrix.settings", '{"*-debug-*" = {boot.nope = 1}}',
     r"sets boot\.nope for '\*-debug-\*': there is no such setting"),
    ("matrix.settings", '{"*-debug-*" = {boot.smp = "two"}}',
     r"boot\.smp in matrix\.settings\['\*-debug-\*'\] in the command line is 'two': it must be "
     "a whole number"),
    ("matrix.settings", "*-debug-*:boot.smp=2", "it must be a TOML inline table"),
    ("matrix.settings", '{"*-debug-*" = {boot = 400}}', "must be a table of cell globs, each a table of section tables"),
    ("matrix.lines", "linux-source-6.12,linux-source-6.12", "names linux-source-6.12 twice"),
    ("matrix.settings", '{"*" = {paths.build = "/tmp/x"}}', "sets paths.build .*what makes a cell"),
    ("matrix.settings", '{"6.1-*" = {kernel.variant = "debug"}}', "sets kernel.variant"),
    ("matrix.settings", '{"*" = {lava.matrix = true}}', "sets lava.matrix"),
    ("matrix.settings", '{"6.1-*" = {test.cases = "smoke kvm"}}',
     r"test\.cases in matrix\.settings\['6\.1-\*'\] in the command line is 'smoke kvm'"),
])
def test_bad_matrix_settings_are_refused(make_settings, key, value, message):
    with pytest.raises(SettingsError, match=message):
        make_settings(**{key: value})


def test_a_cell_has_its_settings_and_the_matching_entries(make_settings):
    config = make_settings(**{
        "source.version": "6.12.57-1", "test.repeat": "5", "boot.smp": "1",
        "matrix.settings": '{"*-debug-*" = {boot.boot_timeout = 400}, '
                           '"6.1-*" = {test.cases = "smoke,kvm.kvm_patch_effect"}, '
                           '"*" = {boot.smp = 2}}'})
    debug = cells.cell_settings(config, Cell("linux-source-6.12", "debug", "stock"))
    assert debug.source.kind == "debian" and debug.source.package == "linux-source-6.12"
    assert debug.source.version == ""  # each line takes its newest version
    assert debug.kernel.variant == "debug" and debug.patch.enabled is False
    assert debug.boot.boot_timeout == 400 and debug.test.cases == ""
    assert debug.test.repeat == 1 and debug.boot.smp == 2
    assert debug.layout.build == config.layout.build / "matrix" / "6.12-debug-stock"
    old = cells.cell_settings(config, Cell("linux-source-6.1", "default", "patched"))
    assert old.patch.enabled is True and old.boot.boot_timeout == 120
    assert old.test.cases == "smoke,kvm.kvm_patch_effect"
    # Entries the checks accept one by one but refuse together name the cell.
    bad = make_settings(**{"matrix.settings": '{"*-debug-*" = {kernel.ccache = "off"}, '
                                              '"*" = {kernel.ccache_remote = "redis://h:1"}}'})
    with pytest.raises(SettingsError, match=r"kernel\.ccache_remote in matrix cell "
                                            r"6\.1-debug-stock needs ccache"):
        cells.cell_settings(bad, Cell("linux-source-6.1", "debug", "stock"))


def test_the_default_matrix_settings(make_settings):
    """The embedded default: debug cells slower timeouts and one KVM selftest,
    6.1 cells no selftests (Debian's 6.1 tree does not link them)."""
    config = make_settings()
    debug = cells.cell_settings(config, Cell("linux-source-6.12", "debug", "patched"))
    assert debug.boot.boot_timeout == 400 and debug.kselftest.tests == "xapic_state_test"
    default = cells.cell_settings(config, Cell("linux-source-6.12", "default", "patched"))
    assert default.kselftest.tests == config.kselftest.tests != "xapic_state_test"
    old_debug = cells.cell_settings(config, Cell("linux-source-6.1", "debug", "stock"))
    assert old_debug.kselftest.build is False and old_debug.boot.test_timeout == 3600


def write_cell(config, cell: Cell, exit_code: int, ktap_file: str | None,
               outcome: Outcome = Outcome.PASSED, error: str = "") -> None:
    """What run_cell leaves: its record and, when the cell got to its guest, results.json."""
    directory = cells.cell_dir(config.layout, cell)
    (directory / "results").mkdir(parents=True)
    failed_at = None if exit_code == 0 else ("test" if ktap_file else "build")
    matrix.cell_record(config.layout, cell).write_text(json.dumps({
        "cell": cell.name, "line": cell.line, "variant": cell.variant, "patch": cell.patch,
        "exit_code": exit_code, "failed_at": failed_at, "error": error, "seconds": 61.0,
        "build_dir": str(directory), "schema": matrix.MATRIX_SCHEMA}))
    if ktap_file:
        tree = ktap.parse((GOLDEN / ktap_file).read_text().splitlines(), name="default")
        report = RunReport("default", outcome, "", "tcg", "", 0, {"total": 60.0})
        write_json(directory / "results" / "results.json", report, tree)


def test_summary_table_json_and_one_junit_suite_per_cell(make_settings, capsys):
    config = make_settings(**{"matrix.lines": "linux-source-6.12", "matrix.variants": "default",
                              "matrix.patch": "patched,stock"})
    patched, stock = cells.picked_cells(config)
    write_cell(config, patched, 0, "default-passed.ktap")
    write_cell(config, stock, 0, "default-passed.ktap")
    matrix.finish(config)
    summary = json.loads(config.layout.matrix_summary.read_text())
    assert summary["passed"] is True
    first = summary["cells"][0]
    assert first["cell"] == "6.12-default-patched" and first["outcome"] == "passed"
    assert first["cases"]["smoke.injection_rate"] == "passed" and len(first["cases"]) == 15
    # The golden run's counters: 477 injections in 10 s, 132 in KVM, 777 samples seen
    # in preempt-disabled KVM code, 644 that would be injected.
    assert first["headline"] == {"injections": 477, "kvm_injections": 132,
                                 "patch_effect_seen": 777, "patch_effect_would_inject": 644}
    out = capsys.readouterr().out
    assert "smoke.injection_rate" in out and "6.12-default-stock" in out
    assert "6.12-default-patched: passed, 61 s; injections 477" in out
    suites = ET.parse(config.layout.matrix_junit).getroot().findall("testsuite")
    assert [suite.get("name") for suite in suites] == ["6.12-default-patched",
                                                         "6.12-default-stock"]
    assert all(suite.get("tests") == "15" and suite.get("failures") == "0" for suite in suites)
    assert suites[1].find("testcase").get("classname") == "6.12-default-stock"


def test_failed_cells_are_rows_and_the_matrix_fails_with_the_first_code(make_settings,
                                                                        capsys):
    config = make_settings(**{"matrix.lines": "linux-source-6.12,linux-source-6.1",
                              "matrix.variants": "default", "matrix.patch": "patched"})
    new, old = cells.picked_cells(config)
    write_cell(config, new, 4, None, error="kernel: the kernel does not compile")
    write_cell(config, old, 10, "default-passed.ktap", Outcome.TEST_FAILURES)
    with pytest.raises(MatrixFailed) as failure:
        matrix.finish(config)
    assert failure.value.exit_code == 4
    assert "2 of 2 cells failed: 6.12-default-patched, 6.1-default-patched" in str(failure.value)
    summary = json.loads(config.layout.matrix_summary.read_text())
    assert summary["passed"] is False
    assert summary["cells"][0]["outcome"] == "failed at build"
    assert summary["cells"][0]["cases"] == {}
    assert summary["cells"][1]["outcome"] == "test failures"
    suites = ET.parse(config.layout.matrix_junit).getroot().findall("testsuite")
    broken = suites[0].find("testcase")
    assert broken.get("name") == "cell" and broken.find("failure") is not None
    assert "does not compile" in broken.find("failure").text
    # The guest ran and failed as a whole, every case passing: still a failing suite.
    assert suites[1].get("failures") == "1"
    assert "kernel: the kernel does not compile" in capsys.readouterr().out


def test_a_cell_whose_settings_are_refused_is_a_row_and_the_others_run(make_settings,
                                                                      monkeypatch):
    """matrix.settings entries only a cell's combination refuses fail that cell, with
    the reason, and not the matrix: the next cell still runs."""
    config = make_settings(**{"matrix.lines": "linux-source-6.12,linux-source-6.1",
                              "matrix.variants": "default", "matrix.patch": "patched",
                              "matrix.settings": '{"6.12-*" = {kernel.ccache = "off"}, '
                                                 '"*" = {kernel.ccache_remote = "redis://h:1"}}'})
    ran = []
    monkeypatch.setattr(matrix.chain, "run", lambda words, cell_config: (
        ran.append((words[0], cell_config.layout.build.name)) or matrix.chain.Outcome(4)))
    new, old = cells.picked_cells(config)
    assert matrix.run_cell(config, new).failed_at == "settings"
    assert matrix.run_cell(config, old).failed_at == "build"
    assert ran == [("build", "6.1-default-patched")]
    with pytest.raises(MatrixFailed) as failure:
        matrix.finish(config)
    assert failure.value.exit_code == 2
    summary = json.loads(config.layout.matrix_summary.read_text())
    assert "kernel.ccache_remote in matrix cell 6.12-default-patched needs ccache" \
        in summary["cells"][0]["error"]


def test_an_earlier_runs_results_are_not_this_runs(make_settings):
    config = make_settings(**{"matrix.lines": "linux-source-6.12", "matrix.variants": "default",
                              "matrix.patch": "patched"})
    (cell,) = cells.picked_cells(config)
    write_cell(config, cell, 2, "default-passed.ktap")
    record = json.loads(matrix.cell_record(config.layout, cell).read_text())
    record["started"] = time.time() + 60  # results.json is older than this run
    matrix.cell_record(config.layout, cell).write_text(json.dumps(record))
    with pytest.raises(MatrixFailed):
        matrix.finish(config)
    row = json.loads(config.layout.matrix_summary.read_text())["cells"][0]
    assert row["cases"] == {} and row["outcome"] == "failed at test"


def test_a_cell_not_run_is_a_failed_row(make_settings):
    config = make_settings(**{"matrix.lines": "linux-source-6.12", "matrix.variants": "default",
                              "matrix.patch": "patched"})
    with pytest.raises(MatrixFailed, match="1 of 1 cells failed"):
        matrix.finish(config)
    assert json.loads(config.layout.matrix_summary.read_text())["cells"][0]["outcome"] == \
        "not run"


def hold_slot(config, name: str, log: Path) -> None:
    with matrix.guest_slot(config, config, Cell("linux-source-6.12", "default", name)):
        with log.open("a") as out:
            out.write(f"start {name} {time.monotonic()}\n")
        time.sleep(1.0)
        with log.open("a") as out:
            out.write(f"end {name} {time.monotonic()}\n")


def test_guests_wait_for_a_slot(make_settings, tmp_path, monkeypatch):
    """With one slot (boot.smp = the cores), two cells' guests never overlap."""
    monkeypatch.setattr(matrix, "GUEST_SLOT_POLL", 0.05)
    cores = len(os.sched_getaffinity(0))
    config = make_settings(**{"boot.smp": str(cores)})
    assert matrix.guest_slots(cores) == 1 and matrix.guest_slots(1) == cores
    log = tmp_path / "log"
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=hold_slot, args=(config, name, log))
             for name in ("patched", "stock")]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(10)
    events = sorted((float(t), what) for what, _, t in
                    (line.split() for line in log.read_text().splitlines()))
    assert [what for _, what in events] == ["start", "end", "start", "end"]


def test_doit_lists_a_task_per_cell_and_the_summary():
    proc = doit("list", "--all", "matrix", "matrix.lines=linux-source-6.12",
                "matrix.variants=default", "matrix.cells=*-stock")
    names = [line.split()[0] for line in proc.stdout.splitlines()]
    assert names == ["matrix", "matrix:6.12-default-stock", "matrix:summary"]
    # A bad pick fails `doit matrix` alone, with the reason.
    bad = doit("matrix:summary", "matrix.cells=7.0-*", check=False)
    assert bad.returncode != 0 and "picks no cell with '7.0-*'" in bad.stdout + bad.stderr
    assert doit("list", "matrix.cells=7.0-*").returncode == 0


def test_parallel_cells_that_fail_are_rows_of_the_summary(tmp_path):
    """`doit -n 2 matrix` with two cells whose kernel line does not exist: both fail
    at fetch, side by side, and the summary says so with the first one's exit code."""
    build = tmp_path / "m"
    proc = doit("-n", "2", "matrix", "matrix.lines=linux-source-6.99,linux-source-6.98",
                "matrix.variants=default", "matrix.patch=stock", f"paths.build={build}",
                check=False)
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((build / "matrix" / "summary.json").read_text())
    assert [c["outcome"] for c in summary["cells"]] == ["failed at build"] * 2
    assert all("linux-source-6.9" in c["error"] for c in summary["cells"])
    assert "2 of 2 cells failed: 6.99-default-stock, 6.98-default-stock" in \
        proc.stdout + proc.stderr
    # `python -m pipeline matrix` exits with the first failing cell's code: 2, no
    # such source package (the cells' records are rewritten).
    again = subprocess.run([sys.executable, "-m", "pipeline", "matrix",
                            "matrix.lines=linux-source-6.99", "matrix.variants=default",
                            "matrix.patch=stock", f"paths.build={build}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 2, again.stdout[-3000:] + again.stderr[-3000:]
