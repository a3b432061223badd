"""The tree cache: extracted once, hard-linked into every build dir, never poisoned."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from helpers import FAKE_X86_C, make_tarball
from test_patch import write_series, x86_patch

from pipeline import patch, sources
from pipeline.errors import SourceError
from pipeline.sources import treecache
from pipeline.util import remove_tree

X86_C = "arch/x86/kvm/x86.c"


@pytest.fixture
def local_source(tmp_path, make_settings, fake_tree_files):
    """Settings for a local tarball of the fake tree, one build dir per name."""

    def settings_for(build: str, files: dict[str, str] | None = None, **tarball):
        data = make_tarball(files or fake_tree_files, **tarball)
        digest = hashlib.sha256(data).hexdigest()
        path = tmp_path / f"linux-{digest[:8]}.tar.gz"
        path.write_bytes(data)
        return make_settings(**{"source.kind": "local", "source.path": str(path),
                                "source.sha256": digest, "paths.build": build})

    return settings_for


def cached_entries(s) -> list[Path]:
    trees = s.layout.cache / "trees"
    return sorted(p for p in trees.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_build_dirs_share_one_extraction(local_source):
    first, second = local_source("build-a"), local_source("build-b")
    sources.fetch_tree(first)
    sources.fetch_tree(second)
    [entry] = cached_entries(first)
    assert entry.name == first.source.sha256
    inodes = {(s.layout.tree / X86_C).stat().st_ino for s in (first, second)}
    assert inodes == {(entry / X86_C).stat().st_ino}
    assert (second.layout.tree / X86_C).read_text() == FAKE_X86_C


def test_patching_a_linked_tree_leaves_the_cache_pristine(local_source, tmp_path):
    s = local_source("build")
    sources.fetch_tree(s)
    [entry] = cached_entries(s)
    one = write_series(tmp_path / "one", {"0001.patch": x86_patch(5, "patched five")})
    two = write_series(tmp_path / "two", {"0001.patch": x86_patch(7, "patched seven")})
    patch.apply_series(s.layout.tree, one)
    assert "patched five" in (s.layout.tree / X86_C).read_text()
    # A changed series reverts the old one first: both directions replace files.
    patch.apply_series(s.layout.tree, two)
    assert "patched seven" in (s.layout.tree / X86_C).read_text()
    assert (entry / X86_C).read_text() == FAKE_X86_C


def test_a_write_in_place_is_noticed_and_the_tree_extracted_again(local_source):
    first, second = local_source("build-a"), local_source("build-b")
    sources.fetch_tree(first)
    [entry] = cached_entries(first)
    # What vim does to a file with several links: it writes into it.
    with open(first.layout.tree / X86_C, "r+") as handle:
        handle.write("edited in place\n")
    assert (entry / X86_C).read_text().startswith("edited in place")
    sources.fetch_tree(second)
    assert (second.layout.tree / X86_C).read_text() == FAKE_X86_C
    assert (entry / X86_C).read_text() == FAKE_X86_C
    # The first build dir keeps its edited file; it is no longer the cache's.
    assert (first.layout.tree / X86_C).read_text().startswith("edited in place")


def test_an_interrupted_fill_is_cleaned_up(local_source):
    s = local_source("build")
    trees = s.layout.cache / "trees"
    # What Ctrl-C during a fill can leave: a half-extracted partial directory,
    # or (between the rename and nothing else) an entry whose stamp is gone.
    (trees / ".partial-x1" / "arch").mkdir(parents=True)
    (trees / s.source.sha256 / "arch").mkdir(parents=True)
    sources.fetch_tree(s)
    assert not list(trees.glob(".partial-*"))
    assert (trees / s.source.sha256 / X86_C).read_text() == FAKE_X86_C
    assert (s.layout.tree / X86_C).read_text() == FAKE_X86_C


def test_a_tree_that_is_not_a_kernel_is_not_cached(local_source):
    s = local_source("build", {"README": "not a kernel\n"})
    with pytest.raises(SourceError, match="no top-level Makefile"):
        sources.fetch_tree(s)
    assert cached_entries(s) == []
    assert not list((s.layout.cache / "trees").glob("*.filled"))


def test_an_archive_dated_in_the_future_is_extracted_without_the_cache(local_source):
    # Its files would look newer than the fill stamp, i.e. edited, on every use.
    ten_years_ahead = int(time.time()) + 10 * 365 * 86400
    for build in ("build-a", "build-b"):
        s = local_source(build, mtime=ten_years_ahead)
        sources.fetch_tree(s)
        assert (s.layout.tree / X86_C).read_text() == FAKE_X86_C
        assert cached_entries(s) == []
        assert not list((s.layout.cache / "trees").glob(".partial-*"))
        assert not list((s.layout.cache / "trees").glob("*.filled"))


def test_least_recently_used_trees_are_evicted(local_source, fake_tree_files):
    builds = [local_source(f"build-{n}", {**fake_tree_files, "n": str(n)})
              for n in range(treecache.KEEP + 1)]
    for age, s in enumerate(builds):
        sources.fetch_tree(s)
        os.utime(s.layout.cache / "trees" / s.source.sha256, (age, age))  # used in this order
    kept = {p.name for p in cached_entries(builds[0])}
    assert kept == {s.source.sha256 for s in builds[1:]}
    # A build dir whose tree was evicted keeps its files.
    assert (builds[0].layout.tree / X86_C).read_text() == FAKE_X86_C


def test_another_filesystem_gets_a_plain_extraction(local_source, make_settings):
    shm = Path("/dev/shm")
    s = local_source("build")
    s.layout.build.mkdir(parents=True)
    if not shm.is_dir() or shm.stat().st_dev == s.layout.build.stat().st_dev:
        pytest.skip("needs /dev/shm on a filesystem other than the build dir's")
    cache = shm / f"pipeline-test-{os.getpid()}"
    try:
        s = make_settings(**{"source.kind": "local", "source.path": s.source.path,
                             "source.sha256": s.source.sha256, "paths.cache": str(cache)})
        sources.fetch_tree(s)
        assert (s.layout.tree / X86_C).read_text() == FAKE_X86_C
        assert cached_entries(s) == []
    finally:
        remove_tree(cache)
