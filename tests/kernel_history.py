"""A small kernel history with a planted regression, for bisections (tests and bench).

Made from a pristine Debian tree (the tree cache's copy of the fetched
archive) with git's plumbing, so no checkout of 87,000 files:

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
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

TIMER = "kernel/time/timer.c"
MSLEEP = "\tunsigned long timeout = msecs_to_jiffies(msecs);\n\n\twhile (timeout)"
REGRESSED = ("\tunsigned long timeout = msecs < 10 ? 0 : msecs_to_jiffies(msecs);\n\n"
             "\twhile (timeout)")
DATE = {"GIT_AUTHOR_DATE": "@1700000000 +0000", "GIT_COMMITTER_DATE": "@1700000000 +0000",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t"}
CULPRIT, BROKEN_BUILD = 5, 3  # indexes into the commits


def pristine_tree(layout, tmp: Path) -> Path:
    """The fetched archive's tree of the build dir `layout`: the tree cache's copy, or
    extracted afresh under `tmp`."""
    from pipeline import records
    from pipeline.records import SourceRecord

    source = records.load(SourceRecord, layout)
    entry = layout.trees / source.resolved.sha256
    if entry.is_dir():
        return entry
    tree = tmp / "pristine"
    tree.mkdir()
    subprocess.run(["tar", "-xf", source.resolved.tarball, "-C", tree,
                    "--strip-components=1"], check=True)
    return tree


def make_history(pristine: Path, tmp: Path) -> tuple[Path, list[str]]:
    """The repository tmp/linux holding the history above; its commits, oldest first."""
    repo = tmp / "linux"
    env = {**os.environ, **DATE, "GIT_DIR": str(repo / ".git"),
           "GIT_INDEX_FILE": str(tmp / "index")}

    def git(*args: str, stdin: str | None = None) -> str:
        return subprocess.run(["git", *args], check=True, capture_output=True, text=True,
                              env=env, input=stdin).stdout.strip()

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
