"""The bisection's git: a bare clone sharing the user's objects, and git bisect in it."""

from __future__ import annotations

from pathlib import Path

from ...errors import CommandError, EnvironmentProblem, UserError
from ...layout import Layout
from ...settings import Settings
from ...sources import git
from ...util import remove_tree

SKIPPED_ONLY = "There are only 'skip'ped commits left to test"


def run_git(repo: Path, *args: str) -> str:
    try:
        return git.run("--git-dir", repo, *args)
    except CommandError as exc:
        raise EnvironmentProblem(f"git failed in the bisection's clone {repo}:\n"
                                 f"{exc.output_tail}") from None


def subject(layout: Layout, commit: str) -> str:
    if not layout.bisect_repo.is_dir():
        return ""
    return run_git(layout.bisect_repo, "log", "-1", "--format=%s", commit)


def resolve(settings: Settings, ref: str, setting: str) -> str:
    repo = settings.resolve(settings.source.repo)
    try:
        return git.commit_of(repo, ref)
    except CommandError:
        raise UserError(f"{setting} = {ref!r} is not a commit in {repo}") from None


def prepare_clone(settings: Settings) -> Path:
    """A bare clone of source.repo sharing its objects; the user's repository is only read."""
    src = settings.source
    clone = settings.layout.bisect_repo
    repo = str(settings.resolve(src.repo))
    if clone.is_dir() and not git.borrows_from(clone, Path(repo)):
        # A clone of another repository (or of one that moved): its objects are not these.
        remove_tree(clone)
    if not clone.is_dir():
        clone.parent.mkdir(parents=True, exist_ok=True)
        try:
            git.run("clone", "-q", "--bare", "--shared", repo, clone)
        except CommandError as exc:
            raise UserError(f"source.repo {repo} cannot be cloned:\n{exc.output_tail}") from None
    else:
        run_git(clone, "fetch", "-q", "--force", repo, "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*")
    return clone


def run_bisect(clone: Path, *args: str) -> str:
    try:
        return git.run("--git-dir", clone, "bisect", *args)
    except CommandError as exc:
        if SKIPPED_ONLY in exc.output_tail:
            return exc.output_tail  # git's way to say "ambiguous" is exit status 2
        raise EnvironmentProblem(f"git bisect failed in {clone}:\n{exc.output_tail}") from None
