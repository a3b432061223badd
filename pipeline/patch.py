"""Apply the KVM patch series that fits the fetched tree, all or nothing.

`patches/kvm/<VERSION.PATCHLEVEL>/series` lists the patches in order (quilt's
format: one file name a line, `#` comments).  The tree remembers what was
applied to it (copies of the patches under `.pipeline-patches/`), so applying
the same series again does nothing, and a changed series first reverts the
old one, which brings back the pristine tree, then applies the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path

from . import commands, failure, records
from .errors import CommandError, PatchError
from .records import SeriesRecord, SourceRecord
from .settings import Settings
from .sources import kernel_line, kernel_version
from .util import atomic_write_text, file_sha256, remove_tree

log = logging.getLogger("pipeline")

APPLIED_DIR = ".pipeline-patches"
APPLIED_RECORD = "applied.json"


def select_series(root: Path, version: str) -> Path:
    """patches/kvm/<VERSION.PATCHLEVEL>/series for a version or a pinned line ("6.12")."""
    line = kernel_line(version)
    series = root / line / "series"
    if not series.is_file():
        have = sorted(p.parent.name for p in root.glob("*/series"))
        raise PatchError(
            f"no KVM patch series for Linux {line} (the fetched tree is {version}): "
            f"{root} has series for {', '.join(have) or 'no version'}. Port the series "
            f"to {line} in {root / line}/, or build stock KVM with patch.enabled=false"
        )
    return series


def read_series(series: Path) -> list[Path]:
    patches = []
    for number, line in enumerate(series.read_text().splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        path = series.parent / name.split()[0]
        if not path.is_file():
            raise PatchError(f"{series}:{number} names {name}, which does not exist")
        patches.append(path)
    if not patches:
        raise PatchError(f"{series} lists no patches")
    return patches


def series_digest(patches: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in patches:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def all_series_files(settings: Settings) -> list[Path]:
    """Every file of every series, for doit's file_dep."""
    return sorted(p for p in settings.layout.series_root.glob("*/*") if p.is_file())


def git_apply_argv(patches: list[Path], *flags: str) -> list[str | Path]:
    return ["git", "apply", "-p1", *flags, *patches]


def git_apply_env(tree: Path) -> dict[str, str]:
    # GIT_CEILING_DIRECTORIES keeps git from mistaking an enclosing repository
    # (e.g. this project's) for the tree's own, which would make it skip files.
    return {"GIT_CEILING_DIRECTORIES": str(tree.parent)}


def _git_apply(tree: Path, patches: list[Path], *flags: str) -> None:
    commands.run(git_apply_argv(patches, *flags), cwd=tree, env=git_apply_env(tree))


def _first_failing(tree: Path, patches: list[Path]) -> tuple[Path, str]:
    """Check the series prefix by prefix to name the patch that breaks it."""
    for count in range(1, len(patches) + 1):
        try:
            _git_apply(tree, patches[:count], "--check")
        except CommandError as exc:
            failing = re.findall(r"error: (?:patch failed: )?([^\s:]+)", exc.output_tail)
            return patches[count - 1], (failing[0] if failing else exc.output_tail)
    raise AssertionError("the series failed as a whole but every prefix applies")


def read_applied(tree: Path) -> dict | None:
    try:
        return json.loads((tree / APPLIED_DIR / APPLIED_RECORD).read_text())
    except FileNotFoundError:
        return None


def revert_applied(tree: Path, applied: dict) -> None:
    copies = [tree / APPLIED_DIR / name for name in applied["patches"]]
    log.info("reverting the previously applied series (%d patches)", len(copies))
    try:
        _git_apply(tree, list(reversed(copies)), "-R", "--check")
    except CommandError:
        raise PatchError(
            f"the tree {tree} no longer matches the series applied to it before, so it "
            f"cannot be restored to pristine: remove {tree.parent} and run again"
        ) from None
    _git_apply(tree, list(reversed(copies)), "-R")
    remove_tree(tree / APPLIED_DIR)


def apply_series(tree: Path, patches: list[Path]) -> str:
    """Apply `patches` to `tree` all or nothing; a second call is a no-op."""
    digest = series_digest(patches) if patches else ""
    applied = read_applied(tree)
    if applied and applied["digest"] == digest:
        log.info("patch series already applied (%d patches); nothing to do", len(patches))
        return digest
    if applied:
        revert_applied(tree, applied)
    if not patches:
        return digest
    try:
        _git_apply(tree, patches, "--check")
    except CommandError:
        patch, where = _first_failing(tree, patches)
        raise PatchError(
            f"{patch.name} does not apply to {tree} (at {where}); nothing was applied. "
            f"Refresh it against this kernel in {patch.parent}/"
        ) from None
    # git apply is atomic over all the patches it is given: all land or none.
    try:
        _git_apply(tree, patches)
    except CommandError as exc:
        raise failure.unless_host("git apply", exc, PatchError(
            f"the series passed `git apply --check` but did not apply to {tree}; nothing "
            f"was applied:\n{exc.output_tail}")) from None
    keep = tree / APPLIED_DIR
    keep.mkdir()
    for patch in patches:
        shutil.copy2(patch, keep / patch.name)
    record = {"digest": digest, "patches": [p.name for p in patches]}
    atomic_write_text(keep / APPLIED_RECORD, json.dumps(record, indent=2) + "\n")
    log.info("applied %d patches: %s", len(patches), ", ".join(p.name for p in patches))
    return digest


def patch_tree(settings: Settings) -> SeriesRecord:
    """The `patch` task: bring the tree to exactly the configured series."""
    layout = settings.layout
    source = records.require(SourceRecord, layout)
    tree = layout.tree
    version = kernel_version(tree)
    if settings.patch.enabled:
        series = select_series(layout.series_root, settings.patch.series or version)
        patches = read_series(series)
    else:
        series, patches = None, []
        log.info("patch.enabled is false: building stock KVM")
    digest = apply_series(tree, patches)
    record = SeriesRecord(
        tree_id=source.tree_id,
        kernel_version=version,
        series=str(series.relative_to(settings.root)) if series else None,
        patches=tuple(p.name for p in patches),
        patch_sha256={p.name: file_sha256(p) for p in patches},
        digest=digest,
    )
    records.save(record, layout)
    return record
