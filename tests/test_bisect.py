"""Bisection logic: verdicts, the flaky policy, the cache key, step exit codes, and the
driver on a real git history with the chain's runs stood in for (the real chain is
bisected end to end in test_e2e_bisect.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import msgspec
import pytest
from helpers import new_repo

from pipeline.drivers import bisect
from pipeline.drivers.bisect.verdicts import ANY_FAILURE, Run, Symptom, combine, judge, miss_chance
from pipeline.errors import BisectAmbiguous, EnvironmentProblem, UserError
from pipeline.settings import SECTIONS, keys_of

SYMPTOM = Symptom(outcome="test failures", cases=("smoke.injection_rate",), shown=3, runs=3)
PANIC = Symptom(outcome="kernel panic", cases=(), shown=1, runs=1)


def failing(*cases: str, code: int = 10, outcome: str = "test failures",
            passed: tuple[str, ...] = ()) -> Run:
    return Run(code=code, outcome=outcome, failed=cases, passed=passed, reason="r")


@pytest.mark.parametrize(("run", "symptom", "verdict"), [
    (Run(0, "passed"), SYMPTOM, "good"),
    (Run(4, "build failure", reason="x.c:1: error"), SYMPTOM, "skip"),
    (Run(5, "tree not buildable as asked", reason="series does not apply"), SYMPTOM, "skip"),
    (Run(2, "bad settings"), SYMPTOM, "abort"),
    (Run(3, "host problem", reason="dockerd"), SYMPTOM, "abort"),
    (Run(1, "error"), SYMPTOM, "abort"),
    (Run(15, "qemu failed"), SYMPTOM, "abort"),
    (Run(130, "interrupted"), SYMPTOM, "abort"),
    # the symptom's case fails, whatever else happens too
    (failing("smoke.injection_rate"), SYMPTOM, "bad"),
    (failing("smoke.injection_rate", "kvm.x", code=11, outcome="console badness"), SYMPTOM,
     "bad"),
    # another case fails, the symptom's case passed: the symptom did not show
    (failing("kvm.x", passed=("smoke.injection_rate",)), SYMPTOM, "good"),
    # a panic before the symptom's case ran: cannot tell
    (failing(code=12, outcome="kernel panic"), SYMPTOM, "skip"),
    (failing(code=13, outcome="boot timeout"), SYMPTOM, "skip"),
    (failing(code=14, outcome="test timeout"), SYMPTOM, "skip"),
    # the symptom is an outcome class: it recurs
    (failing(code=12, outcome="kernel panic"), PANIC, "bad"),
    (failing("kvm.x", passed=("smoke.y",)), PANIC, "skip"),
    # without a pinned symptom (git bisect run), any guest failure is bad
    (failing("kvm.x"), ANY_FAILURE, "bad"),
    (failing(code=13, outcome="boot timeout"), ANY_FAILURE, "bad"),
])
def test_verdict_of_each_outcome_class(run, symptom, verdict):
    assert judge(run, symptom)[0] == verdict


def test_flaky_policy_bad_at_once_good_after_n_clean_runs():
    assert combine(["good"], 3) is None
    assert combine(["good", "good"], 3) is None
    assert combine(["good", "good", "good"], 3) == "good"
    assert combine(["good", "bad"], 3) == "bad"
    assert combine(["skip"], 3) == "skip"
    assert combine(["good", "abort"], 3) == "abort"


def test_miss_chance_is_unknown_after_one_run_and_shrinks_with_runs():
    assert miss_chance(Symptom("test failures", ("a",), shown=1, runs=1), 5) is None
    half = Symptom("test failures", ("a",), shown=2, runs=4)  # rate (2+1)/(4+2) = 0.5
    assert miss_chance(half, 1) == pytest.approx(0.5)
    assert miss_chance(half, 3) == pytest.approx(0.125)
    always = Symptom("test failures", ("a",), shown=5, runs=5)
    assert miss_chance(always, 1) < miss_chance(half, 1)


def changed(value):
    """Another value of the same type (the key does not validate: any will do)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, tuple):
        return (*value, "other")
    return f"{value}-other"


def test_cache_key_covers_every_setting_that_decides_the_verdict(make_settings):
    """Each setting of the schema, one at a time: a miss unless it is NOT_DECIDING."""
    base = make_settings()
    key = bisect.cache.verdict_key(base, "a" * 40)
    assert bisect.cache.verdict_key(base, "b" * 40) != key
    deciding = set(bisect.cache.deciding_settings(base))
    assert {"kselftest.tests", "kselftest.timeout", "test.cases", "kernel.variant",
            "kernel.runtime", "boot.smp", "image.size_mb"} <= deciding
    for section in SECTIONS:
        for field in keys_of(section):
            name = f"{section}.{field}"
            section_value = getattr(base, section)
            # An unvalidated copy: the key must see any change, valid or not.
            copy = msgspec.structs.replace(section_value)
            msgspec.structs.force_setattr(copy, field, changed(getattr(section_value, field)))
            other = msgspec.structs.replace(base, **{section: copy})
            same = bisect.cache.verdict_key(other, "a" * 40) == key
            assert same == (name not in deciding), name
    # How a build runs does not change its verdict.
    for name in ("kernel.jobs", "kernel.ccache", "test.repeat", "paths.build"):
        assert name not in deciding


@pytest.mark.parametrize(("verdict", "code"), [("good", 0), ("bad", 1), ("skip", 125)])
def test_step_speaks_git_bisect_run(make_settings, history, monkeypatch, verdict, code):
    repo, commits = history
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo)})

    def fake_test_commit(settings, repo_path, commit, symptom, runs, cache, all_runs=False):
        assert commit == commits[-1]  # source.ref's default is HEAD
        return bisect.steps.Step(commit=commit, subject="", verdict=verdict, reason="why", outcome="",
                           seconds=0.0, cached=False, runs=0, done=[])

    monkeypatch.setattr(bisect, "test_commit", fake_test_commit)
    assert bisect.step(s) == code


def test_step_aborts_on_bad_input(make_settings, history):
    repo, _ = history
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo), "source.ref": "nope"})
    assert bisect.step(s) == 255


# ------------------------------------------------------------ the driver, runs stood in for

BROKEN_BUILD, REGRESSION = 3, 6  # indexes into the history's commits


@pytest.fixture
def history(tmp_path) -> tuple[Path, list[str]]:
    """A repository of ten commits: #3 does not compile (#4 fixes it), #6 regresses."""
    repo = tmp_path / "linux"
    git = new_repo(repo, tmp_path)
    commits = []
    for number in range(10):
        (repo / "file.c").write_text(f"int version = {number};\n")
        git("add", "-A")
        git("commit", "-qm", f"change {number}")
        commits.append(git("rev-parse", "HEAD"))
    return repo, commits


def stand_in_runs(commits: list[str], calls: list[str], flaky_good: set[str] = frozenset()):
    """run_once for the history: which commit is tested decides the outcome."""

    def run_once(settings, dest):
        commit = settings.source.ref
        calls.append(commit)
        dest.mkdir(parents=True, exist_ok=True)
        index = commits.index(commit)
        if index == BROKEN_BUILD:
            return Run(4, "build failure", reason="file.c:1: error: expected ';'")
        if index >= REGRESSION and commit not in flaky_good:
            return Run(10, "test failures", failed=("smoke.injection_rate",), passed=("a.b",))
        return Run(0, "passed", passed=("smoke.injection_rate", "a.b"))

    return run_once


def repo_state(repo: Path) -> str:
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                              text=True).stdout
    files = sorted(str(p.relative_to(repo)) for p in (repo / ".git").rglob("*"))
    return "\n".join([git("rev-parse", "HEAD"), git("status", "--porcelain"),
                      git("for-each-ref"), git("worktree", "list"), *files])


def test_bisection_names_the_culprit_and_leaves_the_repository_alone(
        make_settings, history, monkeypatch, capsys):
    repo, commits = history
    before = repo_state(repo)
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo),
                         "bisect.good": commits[0], "bisect.bad": "master"})
    calls: list[str] = []
    monkeypatch.setattr(bisect.steps, "run_once", stand_in_runs(commits, calls))
    report = bisect.bisect(s)
    assert report.first_bad.commit == commits[REGRESSION]
    assert report.first_bad.subject == f"change {REGRESSION}"
    assert list(report.symptom.cases) == ["smoke.injection_rate"]
    assert report.tested <= report.step_bound
    verdicts = {step.commit: step.verdict for step in report.steps}
    assert verdicts[commits[-1]] == "bad" and verdicts[commits[0]] == "good"
    assert all(v == "skip" for c, v in verdicts.items() if c == commits[BROKEN_BUILD])
    out = capsys.readouterr().out
    assert f"Fixes: {commits[REGRESSION][:12]} (\"change {REGRESSION}\")" in out
    assert "bisect.runs=3" in report.confidence.note
    layout = s.layout
    assert "git bisect start" in layout.bisect_log.read_text()
    assert layout.bisect_report.is_file() and layout.bisect_symptom.is_file()
    assert repo_state(repo) == before

    # Again: every verdict comes from the cache, nothing is built or run.
    calls.clear()
    again = bisect.bisect(s)
    assert calls == []
    assert again.first_bad == report.first_bad
    assert all(step.cached for step in again.steps)


def test_skipped_commits_can_leave_candidates(make_settings, history, monkeypatch):
    repo, commits = history
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo),
                         "bisect.good": commits[BROKEN_BUILD - 1],
                         "bisect.bad": commits[BROKEN_BUILD + 1]})

    def run_once(settings, dest):
        index = commits.index(settings.source.ref)
        if index == BROKEN_BUILD:
            return Run(4, "build failure", reason="error")
        return Run(10, "test failures", failed=("a.b",)) if index > BROKEN_BUILD else \
            Run(0, "passed", passed=("a.b",))

    monkeypatch.setattr(bisect.steps, "run_once", run_once)
    with pytest.raises(BisectAmbiguous) as failure:
        bisect.bisect(s)
    assert failure.value.exit_code == 20
    report = s.layout.bisect_report.read_text()
    assert commits[BROKEN_BUILD] in report and commits[BROKEN_BUILD + 1] in report


def test_flaky_symptom_needs_clean_runs(make_settings, history, monkeypatch):
    """The regression shows in 2 of 3 runs: every run of a bad commit counts until one shows."""
    repo, commits = history
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo),
                         "bisect.good": commits[0], "bisect.bad": commits[-1],
                         "bisect.runs": "3"})
    attempts: dict[str, int] = {}

    def run_once(settings, dest):
        commit = settings.source.ref
        attempts[commit] = attempts.get(commit, 0) + 1
        index = commits.index(commit)
        if index >= REGRESSION and attempts[commit] % 3 != 1:  # misses every first run
            return Run(10, "test failures", failed=("a.b",))
        return Run(0, "passed", passed=("a.b",))

    monkeypatch.setattr(bisect.steps, "run_once", run_once)
    report = bisect.bisect(s)
    assert report.first_bad.commit == commits[REGRESSION]
    assert report.symptom.shown == 2 and report.symptom.runs == 3
    assert attempts[commits[0]] == 3  # good only after three clean runs
    assert 0 < report.confidence.value < 1


DISK_FULL = Run(3, "host problem", reason="the kernel's build failed because of this "
                "machine, not the tree: the disk is full: No space left on device",
                host_failure=True)
OOM = Run(3, "host problem", reason="a compiler was killed", host_failure=True,
          out_of_memory=True)


@pytest.mark.parametrize(("failure", "jobs_after"), [(DISK_FULL, 8), (OOM, 4)])
def test_a_step_the_machine_failed_is_tried_again_then_stops_the_bisection(
        make_settings, history, monkeypatch, failure, jobs_after):
    """Never a skip: one more try (half the jobs after an OOM), then exit 3 naming the
    commit and the evidence; nothing cached, so a rerun with space continues."""
    repo, commits = history
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo), "kernel.jobs": "8",
                         "bisect.good": commits[0], "bisect.bad": commits[-1]})
    calls: list[str] = []
    stand_in = stand_in_runs(commits, calls)
    machine_broken = True
    tries: list[tuple[str, int]] = []

    def run_once(settings, dest):
        commit = settings.source.ref
        if machine_broken and commit not in (commits[0], commits[-1]):
            tries.append((commit, settings.kernel.jobs))
            return failure
        return stand_in(settings, dest)

    monkeypatch.setattr(bisect.steps, "run_once", run_once)
    with pytest.raises(EnvironmentProblem) as stopped:
        bisect.bisect(s)
    assert stopped.value.exit_code == 3
    commit = tries[0][0]
    assert tries == [(commit, 8), (commit, jobs_after)]
    assert f"stopped at {commit[:12]}" in str(stopped.value)
    assert failure.reason in str(stopped.value)
    log = subprocess.run(["git", "--git-dir", str(s.layout.bisect_repo), "bisect", "log"],
                         capture_output=True, text=True).stdout
    assert "skip" not in log
    assert not any(entry["commit"] == commit for entry in
                   json.loads(s.layout.bisect_verdicts.read_text()).values())

    # The machine mended: the bisection goes on from its cached verdicts.
    machine_broken = False
    calls.clear()
    report = bisect.bisect(s)
    assert report.first_bad.commit == commits[REGRESSION]
    assert commits[0] not in calls and commits[-1] not in calls


def test_a_step_that_passes_on_its_second_try_counts(make_settings, history, monkeypatch):
    repo, commits = history
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo),
                         "bisect.good": commits[0], "bisect.bad": commits[-1]})
    tries: dict[str, int] = {}
    stand_in = stand_in_runs(commits, [])

    def run_once(settings, dest):
        commit = settings.source.ref
        tries[commit] = tries.get(commit, 0) + 1
        return DISK_FULL if tries[commit] == 1 else stand_in(settings, dest)

    monkeypatch.setattr(bisect.steps, "run_once", run_once)
    report = bisect.bisect(s)
    assert report.first_bad.commit == commits[REGRESSION]
    assert set(tries.values()) == {2}


@pytest.mark.parametrize(("good", "bad", "message"), [
    ("nope", "master", "bisect.good = 'nope' is not a commit"),
    ("master", "master~5", "is not an ancestor"),
])
def test_bad_refs_are_refused_before_any_step(make_settings, history, monkeypatch, good, bad,
                                              message):
    repo, _ = history
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo), "bisect.good": good,
                         "bisect.bad": bad})
    monkeypatch.setattr(bisect.steps, "run_once", pytest.fail)
    with pytest.raises(UserError, match=message):
        bisect.bisect(s)


def test_a_bad_ref_that_passes_is_refused(make_settings, history, monkeypatch):
    repo, commits = history
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo),
                         "bisect.good": commits[0], "bisect.bad": commits[2]})
    monkeypatch.setattr(bisect.steps, "run_once", stand_in_runs(commits, []))
    with pytest.raises(UserError, match=r"bisect\.bad .* does not show a failure"):
        bisect.bisect(s)


def test_find_fix_names_the_first_commit_without_the_symptom(make_settings, history,
                                                             monkeypatch, capsys):
    """bisect.find=fix: the older ref fails, the newer passes (git's old/new terms)."""
    repo, commits = history
    s = make_settings(**{"source.kind": "git", "source.repo": str(repo), "bisect.find": "fix",
                         "bisect.bad": commits[0], "bisect.good": "master"})

    def run_once(settings, dest):
        if commits.index(settings.source.ref) < REGRESSION:
            return Run(10, "test failures", failed=("a.b",))
        return Run(0, "passed", passed=("a.b",))

    monkeypatch.setattr(bisect.steps, "run_once", run_once)
    report = bisect.bisect(s)
    assert report.find == "fix"
    assert report.first_bad.commit == commits[REGRESSION]
    assert "first fixed commit" in capsys.readouterr().out
    assert "'--term-old=broken' '--term-new=fixed'" in s.layout.bisect_log.read_text()


def test_a_moved_repository_gets_a_fresh_clone(make_settings, history, monkeypatch, tmp_path):
    """The clone borrows the repository's objects: a clone of another path is not reused."""
    repo, commits = history
    settings = {"source.kind": "git", "bisect.good": commits[0], "bisect.bad": "master"}
    monkeypatch.setattr(bisect.steps, "run_once", stand_in_runs(commits, []))
    bisect.bisect(make_settings(**settings, **{"source.repo": str(repo)}))
    moved = tmp_path / "moved"
    repo.rename(moved)
    report = bisect.bisect(make_settings(**settings, **{"source.repo": str(moved)}))
    assert report.first_bad.commit == commits[REGRESSION]
