"""One commit: its settings, runs of the chain until its verdict is known, its row."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import msgspec

from ... import chain, kmake, kselftest, ktap
from ...errors import HostFailure
from ...guest import read_results, selected_suites
from ...records import write_typed
from ...settings import Settings, derive
from ...util import remove_tree
from .cache import VerdictCache, verdict_key
from .repo import subject
from .verdicts import Run, Symptom, combine, judge, outcome_label

log = logging.getLogger("pipeline")


def step_settings(settings: Settings, repo: str, commit: str) -> Settings:
    """The chain's settings for one commit: its own source, the bisection's build dir."""
    layout = settings.layout
    return derive(settings, {
        "source": {"kind": "git", "repo": repo, "ref": commit},
        "patch": {"series": settings.bisect.series or settings.patch.series},
        "test": {"repeat": 1},
        # The selftests only when a step runs them: each step would rebuild them.
        "kselftest": {"build": settings.kselftest.build and (
            kselftest.SUITE in selected_suites(settings).split(","))},
        "paths": {"build": str(layout.bisect_build), "cache": str(layout.cache)},
    }, f"the bisection's step at {commit[:12]}")


def run_once(settings: Settings, dest: Path) -> Run:
    """Run the chain's `test` for these settings; keep its results in `dest`."""
    layout = settings.layout
    remove_tree(layout.results)  # a build failure must not leave the last step's results
    outcome = chain.run(["test"], settings)
    remove_tree(dest)
    dest.mkdir(parents=True)
    reason = _reason(str(outcome.error)) if outcome.error else ""
    if layout.results.is_dir():
        shutil.copytree(layout.results, dest, dirs_exist_ok=True)
    for name in ("kernel", "kmod", "selftests"):
        if outcome.code == 4 and layout.log(name).exists():
            shutil.copy(layout.log(name), dest / f"{name}.log")
    failed, passed = [], []
    tree, _ = read_results(settings, layout.results / "ktap.log")
    for names, test in tree.walk():
        if not test.subtests:
            if test.status in (ktap.Status.FAILED, ktap.Status.CRASHED):
                failed.append(".".join(names))
            elif test.status is ktap.Status.PASSED:
                passed.append(".".join(names))
    host = outcome.error if isinstance(outcome.error, HostFailure) else None
    return Run(code=outcome.code, outcome=outcome_label(outcome.code), failed=tuple(failed),
               passed=tuple(passed), reason=reason, host_failure=host is not None,
               out_of_memory=host is not None and host.out_of_memory)


def _reason(message: str) -> str:
    """The first line of an error, with the compiler's first complaint if there is one."""
    lines = message.splitlines() or [""]
    if "error:" in lines[0]:  # e.g. a BuildError names the compiler's complaint first
        return lines[0]
    complaint = next((line.strip() for line in lines[1:] if "error:" in line), "")
    return f"{lines[0]} {complaint}".strip()


class StepRow(msgspec.Struct, frozen=True, kw_only=True):
    """One tested commit, as report.json and the step's own step.json hold it."""

    commit: str
    subject: str
    verdict: str
    reason: str
    outcome: str
    seconds: float
    cached: bool
    runs: int  # runs of the chain on it


class Step(StepRow, frozen=True, kw_only=True):
    """One tested commit, with the runs that decided it."""

    done: list[Run]

    def row(self) -> StepRow:
        return StepRow(**{name: getattr(self, name) for name in StepRow.__struct_fields__})


def test_commit(settings: Settings, repo: str, commit: str, symptom: Symptom, runs: int,
                cache: VerdictCache, all_runs: bool = False) -> Step:
    """Build and run one commit until its verdict is known (every run with `all_runs`)."""
    layout = settings.layout
    step_config = step_settings(settings, repo, commit)
    key = verdict_key(step_config, commit)
    done = cache.runs(key)
    cached = bool(done)
    started = time.monotonic()
    while True:
        verdict = combine([judge(run, symptom)[0] for run in done], runs)
        enough = len(done) >= runs if all_runs else verdict is not None
        if verdict in ("abort", "skip") or (verdict is not None and enough):
            break
        run = run_once(step_config, layout.bisect_step(commit) / f"run-{len(done) + 1}")
        if run.host_failure:
            run = _retry_on_host_failure(step_config, run, layout.bisect_step(commit) /
                                         f"run-{len(done) + 1}-retry")
        if judge(run, symptom)[0] == "abort":
            done.append(run)  # never cached: the next bisection tries again
            verdict = "abort"
            break
        cache.add(key, commit, run)
        done.append(run)
        cached = False
    deciding = next((r for r in done if judge(r, symptom)[0] == verdict), done[-1])
    reason = judge(deciding, symptom)[1]
    if verdict == "good" and len(done) > 1:
        reason = f"{len(done)} clean runs"
    step = Step(commit=commit, subject=subject(layout, commit), verdict=verdict,
                reason=reason, outcome=deciding.outcome,
                seconds=round(time.monotonic() - started, 1), cached=cached, runs=len(done),
                done=done)
    if not cached:  # the record of the step that did the work stays
        write_typed(layout.bisect_step(commit) / "step.json", step.row())
    return step


def _retry_on_host_failure(settings: Settings, failed: Run, dest: Path) -> Run:
    """A step the machine failed runs once more, with half the make jobs after running out
    of memory.  Never a skip: a second failure stops the bisection (the caller)."""
    if failed.out_of_memory:
        jobs = max(1, kmake.jobs(settings) // 2)
        settings = derive(settings, {"kernel": {"jobs": jobs}}, "the step's second try")
        log.warning("the machine failed this step (%s); once more with kernel.jobs=%d",
                    failed.reason, jobs)
    else:
        log.warning("the machine failed this step (%s); once more", failed.reason)
    return run_once(settings, dest)
