"""The `fetch` stage: a kernel tree from a Debian package, a tarball URL, a local
tarball or a git ref.

Each source kind is a small record in `KINDS` with two functions: `identify`
answers cheaply "which exact tree would be fetched?" (a pinned or resolved
version, a checksum, a commit id) so doit can tell whether the tree on disk is
still the one asked for; `fetch` puts that tree into an empty directory and
returns what it resolved.  `fetch_tree` wraps them so that a failure or Ctrl-C
leaves neither a half-extracted tree nor a bad cache entry behind, and returns
the SourceRecord.

Modules: `download` (resumable HTTP), `gpg` (signatures), `archive` (tarball
and local kinds), `debian`, `git`, `treecache` (archives extracted once,
hard-linked into build dirs), `version` (what a tree's Makefile says).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec

from .. import records
from ..errors import PipelineError
from ..records import FetchRun, SourceIdentity, SourceRecord, SourceResolved
from ..settings import Settings
from ..util import remove_tree
from . import archive, debian, git
from .version import kernel_line, kernel_version

log = logging.getLogger("pipeline")

__all__ = ["KINDS", "fetch_tree", "identity", "is_current", "kernel_line", "kernel_version"]


@dataclass(frozen=True)
class SourceKind:
    identify: Callable[[Settings], SourceIdentity]
    fetch: Callable[[Settings, Path], SourceResolved]
    # Moves a tree this kind made to what the settings ask for, in place (None:
    # it cannot); only changed files are rewritten, so builds stay incremental.
    update: Callable[[Settings, Path], SourceResolved | None] | None = None


KINDS = {
    "tarball": SourceKind(archive.identify_tarball, archive.fetch_tarball),
    "debian": SourceKind(debian.identify, debian.fetch),
    "local": SourceKind(archive.identify_local, archive.fetch_local),
    "git": SourceKind(git.identify, git.fetch, git.update),
}


def identity(settings: Settings) -> SourceIdentity:
    return KINDS[settings.source.kind].identify(settings)


def is_current(settings: Settings) -> bool:
    """doit uptodate check: does the tree on disk match what the settings ask for?"""
    layout = settings.layout
    record = records.load(SourceRecord, layout)
    if record is None or not layout.tree.is_dir():
        return False
    try:
        return record.identity == identity(settings)
    except PipelineError:
        return False  # not current: the action runs and reports the problem itself


def fetch_tree(settings: Settings) -> SourceRecord:
    """Replace build/src/linux with the configured tree; save its record."""
    layout = settings.layout
    tree = layout.tree
    tree.parent.mkdir(parents=True, exist_ok=True)
    for stale in tree.parent.glob(".fetch-*"):
        remove_tree(stale)  # left behind by an interrupted earlier run
    kind = KINDS[settings.source.kind]
    started = time.monotonic()
    wanted = identity(settings)
    previous = records.load(SourceRecord, layout)
    resolved = None
    if kind.update and previous and previous.kind == settings.source.kind and tree.is_dir():
        # The record goes first: a tree moved halfway must not pass for current.
        records.path(SourceRecord, layout).unlink()
        resolved = kind.update(settings, tree)
    if resolved is not None:
        # Same tree, moved: kbuild/ keeps its objects and make rebuilds what changed.
        tree_id = previous.tree_id
    else:
        resolved = _fetch_fresh(kind, settings, tree)
        # A new id per extraction: later steps use it to notice a fresh tree even
        # when the same source was fetched again (e.g. after `doit forget`).
        tree_id = uuid.uuid4().hex
    # git gives its commit time; archives keep their files' times, and the
    # Makefile's is the release date.
    epoch = resolved.source_date_epoch
    if epoch is msgspec.UNSET:
        epoch = int((tree / "Makefile").stat().st_mtime)
    record = SourceRecord(
        kind=settings.source.kind, identity=wanted,
        resolved=msgspec.structs.replace(resolved, source_date_epoch=msgspec.UNSET),
        kernel_version=kernel_version(tree), source_date_epoch=epoch, tree_id=tree_id,
        run=FetchRun(seconds=round(time.monotonic() - started, 1)),
    )
    records.save(record, layout)
    log.info("fetched Linux %s (%s) into %s", record.kernel_version, settings.source.kind, tree)
    return record


def _fetch_fresh(kind: SourceKind, settings: Settings, tree: Path) -> SourceResolved:
    """The tree into a staging directory, checked, then swapped in for `tree`."""
    staging = Path(tempfile.mkdtemp(dir=tree.parent, prefix=".fetch-"))
    try:
        resolved = kind.fetch(settings, staging)
        kernel_version(staging)  # not a kernel tree: fail before replacing anything
        if tree.exists():
            old = tree.parent / f".fetch-old-{uuid.uuid4().hex[:8]}"
            os.replace(tree, old)
            remove_tree(old)
        os.replace(staging, tree)
    except BaseException:
        remove_tree(staging)
        raise
    return resolved
