"""Source kind `git`: one commit of a repository, local or remote."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from .. import commands
from ..errors import CommandError, EnvironmentProblem, SourceError
from ..settings import Settings


def _git(*args: str | Path, cwd: Path | None = None) -> str:
    return commands.run(["git", *args], cwd=cwd).strip()


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
            return _git("-C", repo, "rev-parse", "--verify", "--quiet", f"{src.ref}^{{commit}}")
        except CommandError:
            raise SourceError(
                f"ref {src.ref!r} (source.ref) is not a commit in {repo}; "
                f"`git -C {repo} log --oneline` lists what is there"
            ) from None
    if re.fullmatch(r"[0-9a-f]{40}", src.ref):
        return src.ref
    try:
        out = _git("ls-remote", src.repo, src.ref, f"{src.ref}^{{}}")
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


def identify(settings: Settings) -> dict:
    return {"repo": settings.source.repo, "commit": resolve_ref(settings)}


def fetch(settings: Settings, dest: Path) -> dict:
    src = settings.source
    commit = resolve_ref(settings)
    # A one-commit fetch into a fresh repository, then the .git is dropped: the
    # tree is exactly the commit's files, with nothing that makes the kernel's
    # setlocalversion add a "-dirty" or commit suffix.
    try:
        _git("init", "-q", dest)
        _git("-C", dest, "fetch", "-q", "--depth", "1", "--no-tags", repo_argument(settings),
             commit)
        _git("-C", dest, "-c", "advice.detachedHead=false", "checkout", "-q", "FETCH_HEAD")
        epoch = int(_git("-C", dest, "log", "-1", "--format=%ct", "FETCH_HEAD"))
    except CommandError as exc:
        raise EnvironmentProblem(f"cannot fetch commit {commit} from {src.repo}:\n"
                                 f"{exc.output_tail}") from None
    shutil.rmtree(dest / ".git")
    return {"repo": src.repo, "ref": src.ref, "commit": commit, "source_date_epoch": epoch}
