"""`python -m pipeline bisect` on a real kernel history, through the whole chain.

The history is made from the Debian tree the e2e build already fetched (the
pristine copy in the tree cache), with commits written by git's plumbing (no
checkout of 87,000 files):

    C0 base                         bisect.good
    C1, C2 documentation only
    C3 kernel/time/timer.c does not compile     (the first midpoint: must be visited)
    C4 fixes it
    C5 msleep() returns at once below 10 ms     the regression: the kernel boots and
                                                the boot checks pass, but
                                                smoke.injection_rate's shortest
                                                injected sleep is far below sleep_ms
    C6 documentation only           bisect.bad

Every commit has the same date, so unchanged objects rebuild to the same bytes.

The steps build in the toolchain container (kernel.runtime=docker), where
every build dir is /build: the repro test's clean container rebuild of the
same tree (the docker_repro fixture, ccache recache) left every object in the
container's ccache, so the first step is warm instead of CI's third cold
kernel build (about ten minutes here).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from pipeline import records
from pipeline.records import SourceRecord

pytestmark = pytest.mark.slow

BISECT_BUILD = "build/test-bisect"
TIMER = "kernel/time/timer.c"
MSLEEP = "\tunsigned long timeout = msecs_to_jiffies(msecs);\n\n\twhile (timeout)"
REGRESSED = ("\tunsigned long timeout = msecs < 10 ? 0 : msecs_to_jiffies(msecs);\n\n"
             "\twhile (timeout)")
DATE = {"GIT_AUTHOR_DATE": "@1700000000 +0000", "GIT_COMMITTER_DATE": "@1700000000 +0000",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t"}


def pristine_tree(kernel_build, tmp_path: Path) -> Path:
    """The fetched archive's tree: the tree cache's copy, or extracted afresh."""
    source = records.load(SourceRecord, kernel_build.layout)
    entry = kernel_build.layout.trees / source.resolved["sha256"]
    if entry.is_dir():
        return entry
    tree = tmp_path / "pristine"
    tree.mkdir()
    subprocess.run(["tar", "-xf", source.resolved["tarball"], "-C", tree,
                    "--strip-components=1"], check=True)
    return tree


@pytest.fixture(scope="module")
def kernel_history(kernel_build, docker_repro, tmp_path_factory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("history")
    repo = tmp / "linux"
    env = {**os.environ, **DATE, "GIT_DIR": str(repo / ".git"),
           "GIT_INDEX_FILE": str(tmp / "index")}

    def git(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(["git", *args], check=True, capture_output=True, text=True,
                              env=env, input=stdin).stdout.strip()

    pristine = pristine_tree(kernel_build, tmp)
    git("init", "-q", "-b", "master", str(repo))
    # Debian's tree ignores everything (/* in .gitignore): -f.
    git("-C", str(pristine), "--work-tree", str(pristine), "add", "-A", "-f", ".")
    timer = (pristine / TIMER).read_text()
    assert MSLEEP in timer
    changes = [
        ("base", {}),
        ("Documentation: note one", {"Documentation/bisect-note-1.txt": "one\n"}),
        ("Documentation: note two", {"Documentation/bisect-note-2.txt": "two\n"}),
        ("timers: a change that does not compile", {TIMER: timer + "\nthis does not compile\n"}),
        ("timers: fix the build", {TIMER: timer}),
        ("timers: msleep() skips short sleeps", {TIMER: timer.replace(MSLEEP, REGRESSED)}),
        ("Documentation: note three", {"Documentation/bisect-note-3.txt": "three\n"}),
    ]
    commits: list[str] = []
    for subject, files in changes:
        for path, text in files.items():
            blob = git("hash-object", "-w", "--stdin", stdin=text)
            git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}")
        tree = git("write-tree")
        parents = ["-p", commits[-1]] if commits else []
        commits.append(git("commit-tree", tree, *parents, "-m", subject))
    git("update-ref", "refs/heads/master", commits[-1])
    return repo, commits


def repo_state(repo: Path) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                              text=True).stdout
    listing = sorted(f"{p.relative_to(repo)} {p.stat().st_mtime_ns}"
                     for p in (repo / ".git").rglob("*") if p.is_file())
    return "\n".join([git("rev-parse", "HEAD"), git("for-each-ref"), git("worktree", "list"),
                      *listing])


def pipeline_bisect(repo: Path, good: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "bisect", "source.kind=git", f"source.repo={repo}",
         f"bisect.good={good}", "bisect.bad=master", "test.cases=smoke.injection_rate",
         "test.injection_seconds=5", "kernel.runtime=docker", f"paths.build={BISECT_BUILD}"],
        cwd=ROOT, capture_output=True, text=True, timeout=3600)


def test_bisect_finds_the_regression_through_the_whole_chain(kernel_history):
    repo, commits = kernel_history
    bisect_dir = ROOT / BISECT_BUILD / "bisect"
    for stale in ("verdicts.json", "steps", "report.json"):  # builds stay warm between runs
        subprocess.run(["rm", "-rf", str(bisect_dir / stale)], check=True)
    before = repo_state(repo)

    proc = pipeline_bisect(repo, commits[0])
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    report = json.loads((bisect_dir / "report.json").read_text())
    culprit = commits[5]
    assert report["first_bad"] == {"commit": culprit,
                                   "subject": "timers: msleep() skips short sleeps"}
    assert f'Fixes: {culprit[:12]} ("timers: msleep() skips short sleeps")' in proc.stdout
    assert "kernel/time/timer.c | 2 +-" in proc.stdout  # git show --stat
    assert list(report["symptom"]["cases"]) == ["smoke.injection_rate"]
    verdicts = {step["commit"]: step for step in report["steps"]}
    broken = verdicts.get(commits[3])
    assert broken is not None and broken["verdict"] == "skip", report["steps"]
    assert "does not compile" in broken["reason"]
    # ceil(log2 6 commits in range) + 2 (bad and good refs) + 1 skip
    assert report["tested"] <= math.ceil(math.log2(6)) + 2 + 1
    for step in report["steps"]:
        runs = bisect_dir / "steps" / step["commit"]
        expected = "kernel.log" if step["verdict"] == "skip" else "console.log"
        assert (runs / "run-1" / expected).is_file(), step
    assert "git bisect start" in (bisect_dir / "bisect.log").read_text()
    assert repo_state(repo) == before

    # Again: every verdict from the cache, no kernel built or guest booted.
    again = pipeline_bisect(repo, commits[0])
    assert again.returncode == 0, again.stdout[-3000:]
    second = json.loads((bisect_dir / "report.json").read_text())
    assert second["first_bad"] == report["first_bad"]
    assert all(step["cached"] for step in second["steps"])
    assert "make -C" not in again.stdout + again.stderr
    assert repo_state(repo) == before


def test_bisect_refuses_a_good_ref_that_is_not_older(kernel_history):
    repo, commits = kernel_history
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "bisect", "source.kind=git", f"source.repo={repo}",
         "bisect.good=master", f"bisect.bad={commits[2]}", f"paths.build={BISECT_BUILD}"],
        cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "is not an ancestor" in proc.stdout + proc.stderr
