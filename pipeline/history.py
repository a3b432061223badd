"""Earlier guest runs' results, kept beside the latest one.

A new `doit boot` or `doit test` must not destroy the evidence of the run
before it (a rare failure is worth nothing once its console and KTAP are
gone).  So when a run starts, the previous build/results/ is moved, whole,
to build/results-history/<when>-<task>-<outcome>/, and build/results/ is
the new run's.  The history is bounded: the `KEEP` newest entries stay,
plus the newest failed one even when it is older; `doit clean` removes it.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from .layout import Layout
from .results import RepeatResult, RunResult, read_record
from .util import remove_tree

log = logging.getLogger("pipeline")

KEEP = 5
PASSED = "passed"


def describe(results: Path) -> tuple[str, str]:
    """(suite, outcome label) of a run's results; "unfinished" when it wrote none."""
    repeat = read_record(results / "repeat.json", RepeatResult)
    if repeat is not None:
        failed = [outcome for outcome in repeat.outcomes if outcome != PASSED]
        if failed:
            return repeat.suite, failed[0]
        # A repeat cut short names itself by what it got to.
        return repeat.suite, PASSED if len(repeat.outcomes) >= repeat.planned else "unfinished"
    run = read_record(results / "results.json", RunResult)
    if run is not None:
        return run.suite, run.outcome
    return "run", "unfinished"


def _entry_name(results: Path) -> str:
    """<time of the run, UTC>-<suite>-<outcome>, sortable and readable."""
    stamp = time.strftime("%Y%m%d-%H%M%SZ", time.gmtime(results.stat().st_mtime))
    suite, outcome = describe(results)
    name = f"{stamp}-{suite.replace(',', '+')}-{outcome}"
    return name.replace(" ", "_").replace("/", "_")


def keep_previous(layout: Layout) -> Path | None:
    """Move the last run's results into the history; return where they went."""
    results = layout.results
    if not results.is_dir() or not any(results.iterdir()):
        return None
    history = layout.results_history
    history.mkdir(parents=True, exist_ok=True)
    name = _entry_name(results)
    dest = history / name
    suffix = 1
    while dest.exists():
        suffix += 1
        dest = history / f"{name}.{suffix}"
    os.replace(results, dest)
    log.info("the previous run's results are kept in %s", dest)
    _evict(history)
    return dest


def entries(layout: Layout) -> list[Path]:
    """The history, newest first."""
    history = layout.results_history
    if not history.is_dir():
        return []
    return sorted((p for p in history.iterdir() if p.is_dir()), key=lambda p: p.name,
                  reverse=True)


def last_run(layout: Layout, suite: str) -> Path | None:
    """The newest kept run of `suite` that finished (passed or failed), if any."""
    for entry in entries(layout):
        kept_suite, outcome = describe(entry)
        if kept_suite == suite and outcome != "unfinished":
            return entry
    return None


def _evict(history: Path) -> None:
    kept = sorted((p for p in history.iterdir() if p.is_dir()), key=lambda p: p.name,
                  reverse=True)
    newest_failure = next((p for p in kept if describe(p)[1] != PASSED), None)
    for old in kept[KEEP:]:
        if old != newest_failure:
            remove_tree(old)
