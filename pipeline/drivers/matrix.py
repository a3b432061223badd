"""`doit matrix`: the chain over kernel lines x variants x patched/stock, one summary.

Each cell is the whole chain (`build`, then `test`) in a build dir of its own,
<paths.build>/matrix/CELL, with the settings of the run plus the cell's
(source.package, kernel.variant, patch.enabled) and the matrix.settings
entries whose glob matches its name.  A cell's failure is a row of the
summary, not the end of the matrix: every picked cell runs, then the summary
(a table on stdout, summary.json, one junit.xml with a testsuite per cell)
says how each went; the matrix fails with the first failing cell's exit code.

`doit -n N matrix` runs cells in parallel processes.  Builds may overlap, but
a guest waits for a free guest slot: one per `boot.smp` cores, at least one,
so guests never share cores with each other (a case's timing would then
measure the contention, and its thresholds stay as they are).
"""

from __future__ import annotations

import fcntl
import os
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import msgspec

from .. import chain, kcidb, report
from ..errors import MatrixFailed, PipelineError
from ..ktap import Counts, Status, Test
from ..layout import Layout
from ..records import read_typed, write_typed
from ..results import RunResult, junit_case, read_record
from ..settings import Settings
from ..util import atomic_write_text
from .cells import Cell, cell_dir, cell_record, cell_settings, picked_cells

# Each cell's headline counters: (name, case, the diagnostic line's number).
HEADLINES = (
    ("injections", "smoke.injection_rate", r"injections (\d+) in \d+ s"),
    ("kvm_injections", "kvm.kvm_under_injection", r"injections in KVM code: (\d+)"),
    ("patch_effect_seen", "kvm.kvm_patch_effect", r"preempt-disabled sections: (\d+)"),
    ("patch_effect_would_inject", "kvm.kvm_patch_effect", r"would be injected: (\d+)"),
)
GUEST_SLOT_POLL = 2.0  # seconds between looks for a free guest slot



# cell.json and summary.json; a file of another schema reads as missing.
MATRIX_SCHEMA = 1


class CellRun(msgspec.Struct, frozen=True, kw_only=True):
    """build/matrix/CELL/cell.json: how the cell's chain went (`run_cell`)."""

    cell: str
    line: str
    variant: str
    patch: str
    exit_code: int | None  # None: the cell did not run
    failed_at: str | None  # settings, build or test; None: it passed
    error: str
    seconds: float | None
    started: float = 0.0  # when it started (epoch seconds): older results are not its
    build_dir: str = ""
    schema: int  # MATRIX_SCHEMA when written; a file without one reads as missing


class CellRow(CellRun, frozen=True, kw_only=True):
    """A cell in summary.json: its run, its outcome, every case's status, its counters."""

    outcome: str
    cases: dict[str, str]
    headline: dict[str, int]


class MatrixSummary(msgspec.Struct, frozen=True, kw_only=True):
    """build/matrix/summary.json."""

    cells: list[CellRow]
    passed: bool
    schema: int  # MATRIX_SCHEMA when written; a file without one reads as missing


def guest_slots(smp: int) -> int:
    """Guests of `smp` vCPUs that fit on the cores this process may use."""
    return max(1, len(os.sched_getaffinity(0)) // smp)


@contextmanager
def guest_slot(config: Settings, cell_config: Settings, cell: Cell) -> Iterator[None]:
    """Hold one of the guest slots (a lock file each, in the matrix's own dir) while a
    cell's guest runs; the cell's boot.smp sizes them."""
    locks = config.layout.matrix / "guest-slots"
    locks.mkdir(parents=True, exist_ok=True)
    slots = guest_slots(cell_config.boot.smp)
    said = False
    while True:
        for number in range(slots):
            handle = open(locks / f"slot-{number}", "w")  # noqa: SIM115 (held past the loop)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield
            finally:
                handle.close()  # releases the lock
            return
        if not said:
            print(f"matrix: {cell.name} built; waiting for a guest slot "
                  f"({slots} for boot.smp={cell_config.boot.smp})", flush=True)
            said = True
        time.sleep(GUEST_SLOT_POLL)


def run_cell(config: Settings, cell: Cell) -> CellRun:
    """Build and test one cell; record and return how it went (a failure included)."""
    record = cell_record(config.layout, cell)
    record.unlink(missing_ok=True)
    started, began = time.monotonic(), time.time()
    stage = "settings"
    try:
        cell_config = cell_settings(config, cell)
    except PipelineError as exc:  # e.g. a matrix.settings value the checks refuse
        outcome = chain.Outcome(exc.exit_code, exc)
    else:
        print(f"=== matrix cell {cell.name}: {cell_config.layout.build}", flush=True)
        stage = "build"
        outcome = chain.run(["build"], cell_config)
        if outcome.ok:
            with guest_slot(config, cell_config, cell):
                stage = "test"
                outcome = chain.run(["test"], cell_config)
    result = CellRun(
        cell=cell.name, line=cell.line, variant=cell.variant, patch=cell.patch,
        exit_code=outcome.code, failed_at=None if outcome.ok else stage,
        error=str(outcome.error) if outcome.error else "",
        seconds=round(time.monotonic() - started, 1), started=began,
        build_dir=str(cell_dir(config.layout, cell)), schema=MATRIX_SCHEMA)
    write_typed(record, result)
    print(f"=== matrix cell {cell.name}: "
          f"{'passed' if outcome.ok else f'failed at {stage} (exit {outcome.code})'} in "
          f"{result.seconds / 60:.0f} min", flush=True)
    return result


def headline(tree: Test) -> dict[str, int]:
    """The HEADLINES counters found in a cell's test tree."""
    diagnostics = {".".join(names): "\n".join(test.diagnostics) for names, test in tree.walk()}
    found = {}
    for name, case, pattern in HEADLINES:
        match = re.search(pattern, diagnostics.get(case, ""))
        if match:
            found[name] = int(match[1])
    return found


def leaves(tree: Test) -> list[tuple[str, Test]]:
    """Every case of a cell's run, by its dotted name."""
    return [(".".join(names), test) for names, test in tree.walk() if not test.subtests]


def read_cell(path: Path) -> CellRun | None:
    """A cell.json; None when missing, unreadable or of another schema."""
    return read_typed(path, CellRun, MATRIX_SCHEMA)


def summarize(config: Settings, cells: list[Cell]) -> MatrixSummary:
    """summary.json and the merged junit.xml of these cells; print the table."""
    rows = []
    for cell in cells:
        record = read_cell(cell_record(config.layout, cell)) or CellRun(
            cell=cell.name, line=cell.line, variant=cell.variant, patch=cell.patch,
            exit_code=None, failed_at="not run", error="", seconds=None, schema=MATRIX_SCHEMA)
        results_path = this_runs_results(config.layout, record)
        results, tree = None, None
        if results_path is not None:
            results = read_record(results_path, RunResult)
            tree = results.tests.tree() if results else None
        outcome = results.outcome if results else (
            "not run" if record.exit_code is None else f"failed at {record.failed_at}")
        row = CellRow(**msgspec.structs.asdict(record), outcome=outcome,
                      cases={name: test.status.value for name, test in leaves(tree)}
                      if tree else {}, headline=headline(tree) if tree else {})
        rows.append((row, tree))
    summary = MatrixSummary(cells=[row for row, _ in rows],
                            passed=all(row.exit_code == 0 for row, _ in rows),
                            schema=MATRIX_SCHEMA)
    write_typed(config.layout.matrix_summary, summary)
    write_junit(config.layout.matrix_junit, rows)
    print(table(summary.cells), flush=True)
    fresh = {row.cell: path for row in summary.cells
             if (path := this_runs_results(config.layout, row)) is not None}
    page = report.best_effort("the matrix's report.html",
                              lambda: write_page(config.layout, summary, fresh))
    if page is not None:
        print(f"matrix report: {page}", flush=True)
    report.best_effort("the matrix's kcidb.json", lambda: kcidb.merge(
        [path.parent / "kcidb.json" for path in fresh.values()], config.layout.matrix_kcidb))
    return summary


def this_runs_results(layout: Layout, run: CellRun) -> Path | None:
    """The cell's results.json if this run of the cell wrote it: a build that failed, or
    a test step that stopped before its guest (a bad case glob), leaves the last run's."""
    path = layout.matrix / run.cell / "results" / "results.json"
    if run.failed_at in (None, "test") and path.is_file() \
            and path.stat().st_mtime >= run.started:
        return path
    return None


def write_page(layout: Layout, summary: MatrixSummary, fresh: dict[str, Path]) -> Path:
    """build/matrix/report.html: the cells' grid (line x variant by patched/stock) with
    their outcomes and links to the pages of the runs in `fresh` (cell -> its
    results.json of this run), each case per cell, the counters."""
    grid: dict[tuple[str, str], dict[str, CellRow]] = {}
    for row in summary.cells:
        grid.setdefault((row.line, row.variant), {})[row.patch] = row
    patches = list(dict.fromkeys(row.patch for row in summary.cells))
    links = {}
    for row in summary.cells:
        page = fresh[row.cell].parent / "report.html" if row.cell in fresh else None
        links[row.cell] = page.relative_to(layout.matrix).as_posix() \
            if page is not None and page.is_file() else ""
    names = list(dict.fromkeys(name for row in summary.cells for name in row.cases))
    counters = list(dict.fromkeys(name for row in summary.cells for name in row.headline))
    charts = {name: report.bar_chart({row.cell: row.headline[name] for row in summary.cells
                                      if name in row.headline}, name)
              for name in counters}
    return report.write_page(layout.matrix_page, "matrix.html.j2", summary=summary,
                             failing=[row.cell for row in summary.cells if row.exit_code != 0],
                             grid=grid, patches=patches, links=links, cases=names,
                             charts=charts)


def table(cells: list[CellRow]) -> str:
    """Cases down, cells across: a result letter each; then each cell's line."""
    letter = {Status.PASSED.value: "ok", Status.FAILED.value: "FAIL",
              Status.SKIPPED.value: "skip", Status.CRASHED.value: "CRASH",
              Status.NOT_EXERCISED.value: "idle", Status.TODO.value: "known"}
    names = list(dict.fromkeys(name for cell in cells for name in cell.cases))  # run order
    width = max([len(name) for name in names] + [4])
    columns = [cell.cell for cell in cells]
    lines = [f"{'case':<{width}}  " + "  ".join(columns)]
    for name in names:
        marks = [letter.get(cell.cases.get(name, ""), cell.cases.get(name, "-"))
                 for cell in cells]
        cells_text = "  ".join(f"{mark:<{len(column)}}"
                               for mark, column in zip(marks, columns, strict=True))
        lines.append(f"{name:<{width}}  {cells_text}".rstrip())
    lines.append("")
    for cell in cells:
        counters = ", ".join(f"{k} {v}" for k, v in cell.headline.items())
        seconds = f", {cell.seconds:.0f} s" if cell.seconds is not None else ""
        lines.append(f"{cell.cell}: {cell.outcome}{seconds}"
                     + (f"; {counters}" if counters else "")
                     + (f"\n    {cell.error}" if cell.error else ""))
    return "\n".join(lines)


def write_junit(path: Path, rows: list[tuple[CellRow, Test | None]]) -> None:
    """One <testsuite> per cell (its cases as <testcase>s named SUITE.CASE); a cell
    that did not get to its tests is one failing <testcase>."""
    suites = ET.Element("testsuites", name="matrix")
    for record, tree in rows:
        cases = leaves(tree) if tree else []
        counts = tree.counts() if tree else Counts()
        broken = record.exit_code != 0 and not (counts.failed or counts.crashed)
        suite = ET.SubElement(suites, "testsuite", name=record.cell,
                              tests=str(len(cases) + broken),
                              failures=str(counts.failed + broken), errors=str(counts.crashed),
                              skipped=str(counts.skipped + counts.todo
                                          + counts.not_exercised))
        for name, test in cases:
            junit_case(suite, record.cell, name, test)
        if broken:
            case = ET.SubElement(suite, "testcase", classname=record.cell, name="cell")
            ET.SubElement(case, "failure", message=record.outcome).text = record.error
    ET.indent(suites)
    atomic_write_text(path, ET.tostring(suites, encoding="unicode") + "\n")


def finish(config: Settings) -> None:
    """The `matrix:summary` step: summarise the picked cells; fail if one failed."""
    summary = summarize(config, picked_cells(config))
    shown = config.layout.matrix_summary
    print(f"matrix summary: {shown} and {config.layout.matrix_junit}", flush=True)
    failing = [cell for cell in summary.cells if cell.exit_code != 0]
    if failing:
        first = failing[0]
        raise MatrixFailed(
            f"{len(failing)} of {len(summary.cells)} cells failed: "
            f"{', '.join(cell.cell for cell in failing)} (first: {first.cell}, "
            f"{first.outcome}; its build dir {first.build_dir or '?'})",
            first.exit_code or 1)
