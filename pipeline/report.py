"""build/results/report.html: one guest run as a page worth opening.

One self-contained file (no network, no script): the outcome and why, the
accelerator and why, the kernel and the KVM series, every case with its
diagnostics folded (a failed case unfolded), the injections per case and per
selftest, the injected sleeps, the skip reasons, the injections at each KVM
function, and the last runs kept in build/results-history/ as a grid and
trend charts.  Everything comes from the typed records (results.json and the
stage records), never from a log; the charts are matplotlib's SVG, inline.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import history, records
from .layout import Layout
from .records import KernelRecord, SeriesRecord, SourceRecord
from .results import RunResult, TestResult, read_record
from .util import atomic_write_text

log = logging.getLogger("pipeline")

TEMPLATES = Path(__file__).parent / "templates"
HISTORY_RUNS = 10  # runs of the same suite in the trend charts
# Our cases print their counters as diagnostics "NAME VALUE" (images/lib/ktap.sh).
_COUNTER = re.compile(r"^([a-z_]+) (-?[0-9]{1,18})$")


def counters(test: TestResult) -> dict[str, int]:
    """The "name value" counter diagnostics of a case."""
    return {m[1]: int(m[2]) for line in test.diagnostics if (m := _COUNTER.match(line))}


@dataclass
class Case:
    name: str
    status: str
    seconds: float | None
    directive: str
    diagnostics: list[str]
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status in ("failed", "crashed")

    @property
    def failed_line(self) -> str:
        """The case's own "FAILED: ..." diagnostic, what it says went wrong."""
        return next((line for line in self.diagnostics if line.startswith("FAILED:")), "")


def cases(run: RunResult) -> list[Case]:
    """The suites' direct tests, as the live progress shows them."""
    return [Case(".".join(names), test.status, test.seconds, test.directive,
                 test.diagnostics, counters(test)) for names, test in run.tests.cases()]


# ------------------------------------------------------------------ charts


def _figure(height: float):
    from matplotlib.figure import Figure  # only a report pays for matplotlib

    figure = Figure(figsize=(8, height), layout="constrained")
    return figure, figure.add_subplot()


def svg(figure) -> str:
    """The figure as inline SVG: no XML header, the same bytes for the same data."""
    import matplotlib

    matplotlib.rcParams["svg.hashsalt"] = "kvm-pipeline"
    out = io.StringIO()
    figure.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    return text[text.index("<svg"):]


def bar_chart(values: dict[str, float], xlabel: str, colours: dict[str, str] | None = None,
              ) -> str:
    """Horizontal bars, one per name (top to bottom in the given order)."""
    names = list(values)
    figure, axes = _figure(max(1.5, 0.25 * len(names) + 0.8))
    axes.barh(range(len(names)), list(values.values()),
              color=[(colours or {}).get(name, "#4477aa") for name in names])
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    return svg(figure)


def range_chart(ranges: dict[str, tuple[float, float, float]], xlabel: str) -> str:
    """min..max as a line and the mean as a dot, one row per name."""
    names = list(ranges)
    figure, axes = _figure(max(1.5, 0.25 * len(names) + 0.8))
    for row, (low, mean, high) in enumerate(ranges.values()):
        axes.plot([low, high], [row, row], color="#4477aa")
        axes.plot([mean], [row], "o", color="#224466")
    axes.set_yticks(range(len(names)), names, fontsize=7)
    axes.invert_yaxis()
    axes.set_xlabel(xlabel)
    return svg(figure)


def trend_chart(labels: list[str], series: dict[str, list[float | None]]) -> str:
    """One small line chart per series over the runs (oldest left)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 1.6 * len(series)), layout="constrained")
    for number, (name, values) in enumerate(series.items(), 1):
        axes = figure.add_subplot(len(series), 1, number)
        points = [(x, v) for x, v in enumerate(values) if v is not None]
        axes.plot([x for x, _ in points], [v for _, v in points], "o-", color="#4477aa")
        axes.set_title(name, fontsize=8, loc="left")
        axes.set_xticks(range(len(labels)), labels if number == len(series) else [""] * len(labels),
                        fontsize=6, rotation=30)
    return svg(figure)


# ------------------------------------------------------------------ the page


def injection_charts(run: RunResult, found: list[Case]) -> dict[str, str]:
    charts = {}
    injections = {case.name: case.counters["injections"] for case in found
                  if "injections" in case.counters}
    if injections:
        charts["injections per case"] = bar_chart(injections, "injections")
    if run.kselftests:
        exercised = {v.name: v.injections or 0 for v in run.kselftests}
        colours = {v.name: "#4477aa" if v.status != "not exercised" else "#cc6677"
                   for v in run.kselftests}
        charts["injections per selftest (red: not exercised)"] = bar_chart(
            exercised, "injections into its threads", colours)
    sleeps = {case.name: (case.counters["sleep_ns_min"] / 1e6,
                          case.counters["sleep_ns_avg"] / 1e6,
                          case.counters["sleep_ns_max"] / 1e6)
              for case in found if {"sleep_ns_min", "sleep_ns_avg", "sleep_ns_max"}
              <= set(case.counters) and case.counters.get("injections")}
    if sleeps:
        charts["injected sleeps (min, mean, max)"] = range_chart(sleeps, "ms")
    skipped: dict[str, float] = {}
    for case in found:
        for name, value in case.counters.items():
            if name.startswith("skip_") and value:
                skipped[name.removeprefix("skip_")] = skipped.get(
                    name.removeprefix("skip_"), 0) + value
    if skipped:
        charts["why the timer did not inject (all cases)"] = bar_chart(
            dict(sorted(skipped.items(), key=lambda item: -item[1])), "timer fires")
    if run.injections_at_points:
        charts["injections at each KVM function"] = bar_chart(
            dict(run.injections_at_points), "injections")
    return charts


@dataclass
class Past:
    label: str  # the history entry's name: time, suite, outcome
    run: RunResult


def _when(entry: str) -> str:
    """'20261207-223311Z-smoke-passed' -> '12-07 22:33' (UTC)."""
    stamp = entry[:16]
    if not re.fullmatch(r"\d{8}-\d{6}Z", stamp):
        return entry
    return f"{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}"


def past_runs(layout: Layout, suite: str, run: RunResult) -> list[Past]:
    """The kept runs of this suite, oldest first, then this one."""
    kept = []
    for entry in history.entries(layout):
        result = read_record(entry / "results.json", RunResult)
        if result is not None and result.suite == suite:
            kept.append(Past(_when(entry.name), result))
        if len(kept) == HISTORY_RUNS - 1:
            break
    return [*reversed(kept), Past("this run", run)]


def trends(past: list[Past]) -> tuple[list[str], dict[str, list[str]], str]:
    """The runs' labels, each case's status in each run ("-": not in it), and the
    counters' trend chart."""
    labels = [p.label for p in past]
    grid: dict[str, list[str]] = {}
    for number, p in enumerate(past):
        for case in cases(p.run):
            grid.setdefault(case.name, ["-"] * len(past))[number] = case.status
    series = {
        "cases passed": [float(p.run.counts.get("passed", 0)) for p in past],
        "injections (all cases)": [float(sum(c.counters.get("injections", 0)
                                             for c in cases(p.run))) for p in past],
        "selftests exercised": [float(p.run.selftests_exercised) for p in past],
        "minutes": [p.run.seconds.get("total", 0) / 60 for p in past],
    }
    chart = trend_chart(labels, series) if len(past) > 1 else ""
    return labels, grid, chart


def render_page(template: str, **values: object) -> str:
    """One of templates/*.html.j2 (each extends base.html.j2) with `values`."""
    import jinja2  # only a page pays for it

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
        autoescape=True, trim_blocks=True, lstrip_blocks=True)
    return environment.get_template(template).render(**values)


def write_page(dest: Path, template: str, **values: object) -> Path:
    atomic_write_text(dest, render_page(template, **values))
    return dest


def best_effort(what: str, make: Callable[[], Path | None]) -> Path | None:
    """A page or document that shows a run, a matrix or a bisection, made after its
    verdict: whatever keeps it from being made is logged, never their failure."""
    try:
        return make()
    except Exception as exc:  # a missing chart library, a record of an odd shape ...
        log.warning("no %s: %s: %s", what, type(exc).__name__, exc)
        return None


def run_page(layout: Layout, results: Path) -> dict[str, object]:
    """What report.html.j2 shows of the run in `results`."""
    run = read_record(results / "results.json", RunResult)
    if run is None:
        raise FileNotFoundError(f"{results / 'results.json'} is missing or unreadable")
    kernel = records.load(KernelRecord, layout)
    series = records.load(SeriesRecord, layout)
    source = records.load(SourceRecord, layout)
    found = cases(run)
    labels, grid, trend = trends(past_runs(layout, run.suite, run))
    source_line = "unknown (no source record)"
    if source is not None:
        source_line = f"{source.kind}, Linux {source.kernel_version}: " \
            f"{source.resolved.shown()}"
    return {"run": run, "kernel": kernel, "series": series, "source_line": source_line,
            "cases": found, "charts": injection_charts(run, found), "labels": labels,
            "grid": grid, "trend": trend}


def write(layout: Layout, results: Path) -> Path:
    """report.html beside the run's results.json."""
    return write_page(results / "report.html", "report.html.j2", **run_page(layout, results))
