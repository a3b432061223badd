"""Source kind `git`: one commit of a repository, local or remote.

The build dir has its own git directory (`src/linux.git`, with its index
beside it), never a `.git` in the tree: that would make the kernel's
setlocalversion add a suffix to the release.  A local repository lends it its
objects (nothing is copied or written there); a remote one's commit is
fetched.  Moving to another commit updates the tree in place: only the files
that differ are rewritten, so make rebuilds incrementally (what a bisection
needs).  Files the patch step changed or added are restored or removed first.
"""

from __future__ import annotations

import re
from pathlib import Path

from .. import commands, failure
from ..errors import CommandError, EnvironmentProblem, SourceError
from ..records import SourceIdentity, SourceResolved
from ..settings import Settings
from ..util import remove_tree


def run(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """git's output, stripped; CommandError when git fails."""
    return commands.run(["git", *args], cwd=cwd, env=env).strip()


def commit_of(repo: Path, ref: str) -> str:
    """The full commit id `ref` names in the local repository `repo`; CommandError if none."""
    return run("-C", repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")


def is_local_repo(repo: str) -> bool:
    return "://" not in repo and not re.match(r"^[\w.-]+@[\w.-]+:", repo)


def resolve_ref(settings: Settings) -> str:
    """The full commit id that source.ref names in source.repo."""
    src = settings.source
    if is_local_repo(src.repo):
        repo = settings.resolve(src.repo)
        if not repo.exists():
            raise SourceError(f"source.repo {repo} does not exist")
        try:
            return commit_of(repo, src.ref)
        except CommandError:
            raise SourceError(
                f"ref {src.ref!r} (source.ref) is not a commit in {repo}; "
                f"`git -C {repo} log --oneline` lists what is there"
            ) from None
    if re.fullmatch(r"[0-9a-f]{40}", src.ref):
        return src.ref
    try:
        out = run("ls-remote", src.repo, src.ref, f"{src.ref}^{{}}")
    except CommandError as exc:
        raise EnvironmentProblem(f"cannot list the refs of {src.repo} (source.repo):\n"
                                 f"{exc.output_tail}") from None
    rows = [line.split("\t") for line in out.splitlines() if "\t" in line]
    if not rows:
        raise SourceError(f"ref {src.ref!r} (source.ref) is not in {src.repo}; use a branch, "
                          "tag or full commit id")
    peeled = [sha for sha, name in rows if name.endswith("^{}")]
    return (peeled or [rows[0][0]])[0]


def repo_argument(settings: Settings) -> str:
    """source.repo as git fetch takes it: local paths resolved against the project."""
    src = settings.source
    return str(settings.resolve(src.repo)) if is_local_repo(src.repo) else src.repo


def objects_dir(repo: Path) -> Path:
    """Where a local repository keeps its objects (what git's alternates name)."""
    return Path(run("-C", repo, "rev-parse", "--path-format=absolute", "--git-path",
                     "objects"))


def borrows_from(git_dir: Path, repo: Path) -> bool:
    """Does `git_dir` borrow its objects from `repo` (clone --shared, or ours above)?"""
    try:
        alternates = (git_dir / "objects" / "info" / "alternates").read_text().split()
    except FileNotFoundError:
        return False
    return str(objects_dir(repo).resolve()) in [str(Path(a).resolve()) for a in alternates]


def identify(settings: Settings) -> SourceIdentity:
    return SourceIdentity(kind="git", repo=settings.source.repo, commit=resolve_ref(settings))


def _fetch_commit(settings: Settings, commit: str) -> int:
    """The commit's objects in reach of the build dir's git directory; its commit time.

    A local repository lends its objects (git's alternates, as `clone --shared`
    does): nothing is copied, and moving to another commit costs no fetch.  A
    remote one gets a one-commit fetch.
    """
    git_dir = settings.layout.git_dir
    try:
        if not git_dir.is_dir():
            run("init", "-q", "--bare", git_dir)
        if is_local_repo(settings.source.repo):
            alternates = git_dir / "objects" / "info" / "alternates"
            alternates.parent.mkdir(parents=True, exist_ok=True)
            alternates.write_text(f"{objects_dir(Path(repo_argument(settings)))}\n")
        else:
            run("--git-dir", git_dir, "fetch", "-q", "--depth", "1", "--no-tags",
                 repo_argument(settings), commit)
        epoch = int(run("--git-dir", git_dir, "log", "-1", "--format=%ct", commit))
    except CommandError as exc:
        raise EnvironmentProblem(f"cannot fetch commit {commit} from {settings.source.repo}:\n"
                                 f"{exc.output_tail}") from None
    return epoch


def _in_tree(settings: Settings, tree: Path, *args: str) -> str:
    layout = settings.layout
    return run("--git-dir", layout.git_dir, "--work-tree", tree, *args, cwd=tree,
                env={"GIT_INDEX_FILE": str(layout.git_index)})


def fetch(settings: Settings, dest: Path) -> SourceResolved:
    """The commit's files into the empty directory `dest`."""
    commit = resolve_ref(settings)
    epoch = _fetch_commit(settings, commit)
    settings.layout.git_index.unlink(missing_ok=True)
    try:
        _in_tree(settings, dest, "read-tree", "--reset", "-u", commit)
    except CommandError as exc:
        raise failure.machine_error(f"checking out {commit} into {dest}", exc, dest) from None
    return SourceResolved(repo=settings.source.repo, ref=settings.source.ref, commit=commit,
                          source_date_epoch=epoch)


def update(settings: Settings, tree: Path) -> SourceResolved | None:
    """Move the tree made by an earlier fetch to the configured commit, in place.

    None when the tree cannot be updated (no index of an earlier fetch): the
    caller fetches afresh.
    """
    if not settings.layout.git_index.is_file():
        return None
    commit = resolve_ref(settings)
    epoch = _fetch_commit(settings, commit)
    try:
        # Back to the index's commit first: files the patch step rewrote are
        # restored (read-tree leaves a file alone when the two commits agree on it).
        _in_tree(settings, tree, "update-index", "-q", "--refresh")
        changed = _in_tree(settings, tree, "diff-files", "--name-only").splitlines()
        if changed:
            _in_tree(settings, tree, "checkout-index", "-f", "-u", "--", *changed)
        _in_tree(settings, tree, "read-tree", "--reset", "-u", commit)
        # What the patch step added (and any other stray file) goes.
        _in_tree(settings, tree, "clean", "-ffdxq")
    except CommandError as exc:
        error = failure.machine_error(f"moving {tree} to commit {commit}", exc, tree)
        remove_tree(tree)  # half-moved (after the look at its disk): the next fetch starts afresh
        raise error from None
    return SourceResolved(repo=settings.source.repo, ref=settings.source.ref, commit=commit,
                          source_date_epoch=epoch)
