"""`python -m pipeline bisect` on a real kernel history, through the whole chain.

The history (tests/kernel_history.py) is made from the Debian tree the e2e
build already fetched: a build-breaking commit that must be skipped, then the
planted regression (msleep() skips short sleeps), between documentation-only
commits.

The steps build in the toolchain container (kernel.runtime=docker), where
every build dir is /build: the repro test's clean container rebuild of the
same tree (the docker_repro fixture, ccache recache) left every object in the
container's ccache, so the first step is warm instead of CI's third cold
kernel build (about ten minutes here).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT
from kernel_history import BROKEN_BUILD, CULPRIT, make_history, pristine_tree

from pipeline.errors import Exit

pytestmark = pytest.mark.slow

BISECT_BUILD = "build/test-bisect"


@pytest.fixture(scope="module")
def kernel_history(kernel_build, docker_repro, tmp_path_factory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("history")
    return make_history(pristine_tree(kernel_build.layout, tmp), tmp)


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
    # Only the answers go: the builds stay warm between runs.
    for stale in ("verdicts.json", "steps", "report.json", "report.html", "kcidb.json"):
        subprocess.run(["rm", "-rf", str(bisect_dir / stale)], check=True)
    before = repo_state(repo)

    proc = pipeline_bisect(repo, commits[0])
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-3000:]
    report = json.loads((bisect_dir / "report.json").read_text())
    culprit = commits[CULPRIT]
    assert report["first_bad"] == {"commit": culprit,
                                   "subject": "timers: msleep() skips short sleeps"}
    assert f'Fixes: {culprit[:12]} ("timers: msleep() skips short sleeps")' in proc.stdout
    page = (bisect_dir / "report.html").read_text()
    document = json.loads((bisect_dir / "kcidb.json").read_text())
    assert culprit in {checkout["git_commit_hash"] for checkout in document["checkouts"]}
    assert f'Fixes: {culprit[:12]} ("timers: msleep() skips short sleeps")' in page
    assert "kernel/time/timer.c | 2 +-" in proc.stdout  # git show --stat
    assert list(report["symptom"]["cases"]) == ["smoke.injection_rate"]
    verdicts = {step["commit"]: step for step in report["steps"]}
    broken = verdicts.get(commits[BROKEN_BUILD])
    assert broken is not None and broken["verdict"] == "skip", report["steps"]
    assert Exit.BUILD_ERROR.meaning.split(":")[0] in broken["reason"]  # the table's words
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


def test_a_full_disk_mid_bisection_stops_it_and_a_rerun_continues(kernel_history, tmp_path):
    """A step whose build dir fills up is the machine's failure: tried twice, then the
    bisection stops with exit 3 naming the disk; git bisect never hears "skip" for it.
    With space again, the rerun continues from the cached verdicts."""
    repo, commits = kernel_history
    bisect_dir = ROOT / BISECT_BUILD / "bisect"
    # Every verdict cached first (after the test above, this builds nothing).
    assert pipeline_bisect(repo, commits[0]).returncode == 0
    report = json.loads((bisect_dir / "report.json").read_text())
    # Forget one step the bisection itself chose (not a ref, not the skipped one): the
    # rerun must build it.
    forgotten = next(step for step in report["steps"][2:] if step["verdict"] != "skip")
    middle = forgotten["commit"]
    verdicts_file = bisect_dir / "verdicts.json"
    verdicts = json.loads(verdicts_file.read_text())
    verdicts = {key: entry for key, entry in verdicts.items() if entry["commit"] != middle}
    verdicts_file.write_text(json.dumps(verdicts))
    # A build dir with room for the commit's tree (in tmpfs pages, its directories, the
    # index) and not for its objects (about 200 MiB): it fills up in the kernel's build.
    # The tmpfs hides the warm build dir, which is back once it is unmounted.
    build = bisect_dir / "build"
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={tree_pages(repo, middle) + (96 << 20)}",
                    "tmpfs", str(build)], check=True)
    try:
        full = pipeline_bisect(repo, commits[0])
    finally:
        subprocess.run(["umount", str(build)], check=True)
    assert full.returncode == 3, full.stdout[-3000:] + full.stderr[-3000:]
    said = full.stdout + full.stderr  # doit reports a task's error on stdout
    assert f"stopped at {middle[:12]}" in said
    assert "the disk is full" in said
    assert "once more" in said  # tried twice
    log = subprocess.run(["git", "--git-dir", str(bisect_dir / "repo.git"), "bisect", "log"],
                         capture_output=True, text=True).stdout
    assert middle not in log  # neither skip nor any other verdict
    assert not any(entry["commit"] == middle
                   for entry in json.loads(verdicts_file.read_text()).values())

    again = pipeline_bisect(repo, commits[0])
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    second = json.loads((bisect_dir / "report.json").read_text())
    assert second["first_bad"] == report["first_bad"]
    step = next(step for step in second["steps"] if step["commit"] == middle)
    assert not step["cached"] and step["verdict"] == forgotten["verdict"]
    assert sum(not step["cached"] for step in second["steps"]) == 1


def tree_pages(repo: Path, commit: str) -> int:
    """Bytes the commit's files take in a tmpfs: each file and directory in whole pages."""
    listing = subprocess.run(["git", "-C", str(repo), "ls-tree", "-r", "-t", "-l", commit],
                             capture_output=True, text=True, check=True).stdout
    page = 4096
    return sum(page if size == "-" else -(-int(size) // page) * page
               for size in (line.split()[3] for line in listing.splitlines()))


def test_bisect_refuses_a_good_ref_that_is_not_older(kernel_history):
    repo, commits = kernel_history
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "bisect", "source.kind=git", f"source.repo={repo}",
         "bisect.good=master", f"bisect.bad={commits[2]}", f"paths.build={BISECT_BUILD}"],
        cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "is not an ancestor" in proc.stdout + proc.stderr
