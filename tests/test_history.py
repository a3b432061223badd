"""The results history: a new run never destroys the evidence of the last one."""

import os

from pipeline import history, ktap
from pipeline.records import write_typed
from pipeline.results import (
    RESULTS_SCHEMA,
    Outcome,
    RepeatResult,
    RunReport,
    write_json,
)


def repeat_record(suite, outcomes, planned):
    return RepeatResult(suite=suite, runs=len(outcomes), planned=planned, outcomes=outcomes,
                        cases={}, schema=RESULTS_SCHEMA)


def finished_run(layout, outcome, when, suite="smoke,kvm", repeat=None):
    """build/results/ as a finished run leaves it, dated `when` (epoch seconds)."""
    results = layout.results
    results.mkdir(parents=True)
    (results / "console.log").write_text("[    0.000000] Linux version ...\n")
    if repeat is None:
        report = RunReport(suite, Outcome[outcome.upper().replace(" ", "_")], "", "tcg", "",
                           0, {})
        write_json(results / "results.json", report, ktap.Test("main", ktap.Status.PASSED))
    else:
        write_typed(results / "repeat.json", repeat_record(suite, repeat, len(repeat)))
    os.utime(results, (when, when))


def test_nothing_to_keep(make_settings):
    layout = make_settings().layout
    assert history.keep_previous(layout) is None
    layout.results.mkdir(parents=True)
    assert history.keep_previous(layout) is None  # an empty results dir is no run


def test_the_last_run_moves_whole_into_the_history(make_settings):
    layout = make_settings().layout
    finished_run(layout, "test failures", 1_800_000_000)
    kept = history.keep_previous(layout)
    assert not layout.results.exists()
    assert kept.parent == layout.results_history
    assert kept.name.endswith("-smoke+kvm-test_failures")
    assert (kept / "console.log").read_text().startswith("[    0.000000] Linux")
    assert history.describe(kept) == ("smoke,kvm", "test failures")


def test_a_repeated_run_is_named_by_its_first_failure(make_settings):
    layout = make_settings().layout
    finished_run(layout, None, 1_800_000_000, repeat=["passed", "kernel panic", "passed"])
    assert history.keep_previous(layout).name.endswith("-kernel_panic")


def test_a_repeat_cut_short_is_unfinished_unless_a_run_failed(make_settings):
    layout = make_settings().layout
    finished_run(layout, None, 1_800_000_000, repeat=["passed", "passed"])
    summary = layout.results / "repeat.json"
    write_typed(summary, repeat_record("smoke,kvm", ["passed", "passed"], 5))
    assert history.describe(layout.results) == ("smoke,kvm", "unfinished")
    write_typed(summary, repeat_record("smoke", ["passed", "test failures"], 5))
    assert history.describe(layout.results) == ("smoke", "test failures")


def test_the_history_is_bounded_but_keeps_the_newest_failure(make_settings):
    layout = make_settings().layout
    finished_run(layout, "test failures", 1_800_000_000)  # the oldest, and the only failure
    history.keep_previous(layout)
    for number in range(1, history.KEEP + 3):
        finished_run(layout, "passed", 1_800_000_000 + 60 * number)
        history.keep_previous(layout)
    kept = history.entries(layout)
    assert len(kept) == history.KEEP + 1
    assert [history.describe(p)[1] for p in kept[:history.KEEP]] == ["passed"] * history.KEEP
    assert history.describe(kept[-1])[1] == "test failures"
    # An interrupted run (no JSON) counts as a failure too.
    layout.results.mkdir()
    (layout.results / "console.log").write_text("half a boot\n")
    later = 1_800_000_000 + 60 * (history.KEEP + 3)
    os.utime(layout.results, (later, later))
    assert history.keep_previous(layout).name.endswith("-run-unfinished")
    kept = history.entries(layout)
    assert history.describe(kept[0])[1] == "unfinished" and len(kept) == history.KEEP
