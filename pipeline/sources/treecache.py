"""Extracted kernel trees kept in the download cache and hard-linked into build dirs.

Extracting a kernel archive writes 1.5 GB in 87,000 files: 10 s here, and
the kernel build that follows runs slower while all of it is written back.
Every build directory (a variant, a stock comparison, a test build, a fresh
clone) would pay that again for the same archive.  So each archive is
extracted once, into `<cache>/trees/<sha256>/`, and a build dir gets a tree of
hard links to it (`cp -al`: about 1 s, no file data written).

A hard link shares the file with the cache, so the tree must only ever be
changed by replacing files, never by writing into them.  Everything the
pipeline does to a tree replaces: `git apply` removes each file it patches and
writes a new one, and the kernel's make with O= writes nothing into the
source tree.  An editor that saves in place (vim does for a file with several
links) would change the cached file too; such a write leaves a file newer
than the cache entry's fill stamp, so every use first checks with `find
-newer` (0.2 s) and extracts the archive again when anything changed.  An
archive with files dated in the future defeats that check, so it is extracted
straight into the build dir instead.

The cache keeps the `KEEP` most recently used trees; older ones are removed
(build dirs keep their links, so nothing in use disappears).  When the cache
and the build dir are on different filesystems, hard links are impossible and
the archive is extracted straight into the build dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from .. import commands
from ..errors import CommandError, EnvironmentProblem, SourceError
from ..settings import Settings
from ..util import remove_tree
from .version import kernel_version

log = logging.getLogger("pipeline")

KEEP = 3


def extract_argv(archive: Path, dest: Path) -> list[str | Path]:
    # xz decompresses an archive of many blocks (Debian's are) on every core;
    # tar's own -J would use one.
    compressor = ["-I", "xz -T0"] if archive.name.endswith(".xz") else []
    # --no-same-owner: files belong to whoever builds, not to the uid in the tar.
    return ["tar", *compressor, "-xf", archive, "-C", dest, "--strip-components=1",
            "--no-same-owner"]


@contextlib.contextmanager
def _locked(trees: Path) -> Iterator[None]:
    """One run at a time fills, checks, links from or evicts cache entries."""
    with open(trees / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another run using the tree cache in %s", trees)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _changed_file(entry: Path, stamp: Path) -> str | None:
    """A file of the cached tree written after it was filled, if any."""
    if not stamp.is_file():
        return str(entry)  # an entry without its stamp was never finished
    # Only files: directories an archive does not list are made at extraction
    # time, and the entry's own time is the least-recently-used clock.
    newer = commands.run(["find", entry, "-type", "f", "-newer", stamp, "-print",
                          "-quit"]).strip()
    return newer or None


def _extract_checked(archive: Path, trees: Path, stamp: Path,
                     check: Callable[[Path], object]) -> Path:
    """Extract `archive` into a new `.partial-*` directory of the cache and check it."""
    for leftover in trees.glob(".partial-*"):
        remove_tree(leftover)  # from an interrupted fill; we hold the lock
    log.info("extracting %s into the tree cache %s (once per archive; build dirs get hard "
             "links to it)", archive.name, trees)
    # Touched before extraction: every file tar writes keeps the archive's
    # time, so anything newer than the stamp was written afterwards.
    stamp.write_text(f"{archive}\n")
    partial = Path(tempfile.mkdtemp(dir=trees, prefix=".partial-"))
    partial.chmod(0o755)  # not mkdtemp's 0700: `cp -a` gives each src/linux this mode
    try:
        extract(archive, partial)
        check(partial)  # a tree that is no use must not become a cache entry
    except BaseException:
        remove_tree(partial)
        stamp.unlink(missing_ok=True)
        raise
    return partial


def _evict(trees: Path, keep: Path) -> None:
    entries = sorted((p for p in trees.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[KEEP:]:
        if old != keep:
            log.info("removing the least recently used cached tree %s", old)
            remove_tree(old)
            old.with_suffix(".filled").unlink(missing_ok=True)


def extract(archive: Path, dest: Path) -> None:
    try:
        commands.run(extract_argv(archive, dest))
    except CommandError as exc:
        raise SourceError(f"{archive} cannot be extracted (a corrupt or not a tar "
                          f"archive?):\n{exc.output_tail}") from None


def cache_dir(settings: Settings) -> Path | None:
    """The tree cache, or None when source.tree_cache is off (`doit repro`)."""
    return settings.layout.trees if settings.source.tree_cache else None


def populate(archive: Path, sha256: str, dest: Path, trees: Path | None,
             check: Callable[[Path], object] = kernel_version) -> None:
    """Fill the empty directory `dest` with the tree in `archive`, whose sha256 is known.

    `trees` is the cache (None: extract without it); `check(tree)` raises for a
    tree that must not be cached.
    """
    if trees is None:
        log.info("extracting %s (source.tree_cache is off)", archive.name)
        extract(archive, dest)
        return
    trees.mkdir(parents=True, exist_ok=True)
    if os.stat(trees).st_dev != os.stat(dest).st_dev:
        log.info("%s and %s are on different filesystems, so the tree cannot be hard-linked "
                 "from the cache; extracting it", trees, dest)
        extract(archive, dest)
        return
    entry = trees / sha256
    stamp = entry.with_suffix(".filled")
    with _locked(trees):
        if entry.exists() and (changed := _changed_file(entry, stamp)):
            log.info("the cached tree %s was changed after extraction (%s); extracting it "
                     "again", entry, changed)
            remove_tree(entry)
        if not entry.exists():
            tree = _extract_checked(archive, trees, stamp, check)
            if future := _changed_file(tree, stamp):
                log.warning("%s holds files dated in the future (%s), which would look like "
                            "edits to the cached tree; extracting it without the cache",
                            archive.name, future)
                stamp.unlink()
                os.replace(tree, dest)  # dest is empty, so the rename replaces it
                return
            os.replace(tree, entry)
        else:
            log.info("tree of %s from the cache %s", archive.name, entry)
        try:
            commands.run(["cp", "-al", f"{entry}/.", dest])
        except CommandError as exc:
            raise EnvironmentProblem(f"cannot link the cached tree into {dest} (disk full?):\n"
                                     f"{exc.output_tail}") from None
        os.utime(entry)  # most recently used
        _evict(trees, entry)
