"""The `selftests` stage: the kernel's own KVM selftests, built from the same tree.

The kernel's uapi headers are installed from the tree into
build/selftests/usr/include (kselftest compiles against them, not the
host's), then kselftest builds and installs its `kvm` target:

    make -C src/linux O=build/selftests ARCH=x86_64 headers_install
    make -C src/linux/tools/testing/selftests O=build/selftests TARGETS=kvm \\
        EXTRA_CFLAGS=-ffile-prefix-map=BUILD/= INSTALL_PATH=.../install install

The install holds the kernel's runner (run_kselftest.sh), its test list
(kselftest-list.txt) and the kvm/ binaries; it is published as
build/artifacts/selftests/ with selftests.sha256, and the image puts it at
/usr/local/lib/kselftest.

The selftests read the tree's uapi headers and tools/, nothing that the
kernel's config or the KVM series (which patches KVM itself) changes: a
rebuild whose inputs_key (a digest of those files of the patched tree, the
runtime and this code) matches the record's is skipped, so switching
patch.enabled or the variant in a build dir, or a bisection step that
changes the kernel proper, costs no selftests build.

The binaries are built with -g: the prefix map keeps the build dir's path
out of their debug information and __FILE__, so they are the same bytes
wherever the build dir lies (and build-ids, which hash the debug
information too, agree).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path

from . import kbuild, kmake, manifest, records
from .errors import BuildError, CommandError
from .kmake import Make
from .records import SelftestsRecord, SeriesRecord, SourceRecord
from .settings import Settings
from .util import atomic_write_text, code_version, remove_tree

log = logging.getLogger("pipeline")

TARGET = "kvm"
# What the selftests are built from: kselftest's sources under tools/, and the
# uapi headers headers_install makes from the uapi trees, the syscall tables,
# scripts/ and the top Makefiles.  Nothing else of the tree reaches them.
INPUT_PATHS = ("tools", "include/uapi", "arch/x86/include/uapi", "arch/x86/entry/syscalls",
               "scripts", "usr", "Makefile", "arch/x86/Makefile")


def tree_inputs_digest(tree: Path) -> str:
    """A digest of the files under INPUT_PATHS (names, modes, contents, link targets)."""
    digest = hashlib.sha256()
    for top in INPUT_PATHS:
        for path in _files_under(tree / top):
            name = path.relative_to(tree).as_posix()
            if path.is_symlink():
                mode, content = "l", os.readlink(path).encode()
            else:
                mode, content = "x" if os.access(path, os.X_OK) else "-", path.read_bytes()
            digest.update(f"{name}\0{mode}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()


def _files_under(path: Path) -> list[Path]:
    if path.is_symlink() or path.is_file():
        return [path]
    found = []
    for directory, dirs, files in os.walk(path):
        dirs.sort()
        found += [Path(directory) / name for name in sorted(files)]
        found += [Path(directory) / name for name in dirs if (Path(directory) / name).is_symlink()]
    return found


def inputs_key(settings: Settings, tree: Path) -> str:
    """What the selftests' bytes depend on; equal keys, equal selftests.

    The tree's files they are built from (patched: a KVM series that touches
    none of them, like ours, costs no rebuild), the runtime and this code.  So
    a bisection step whose commits change only the kernel proper keeps them.
    """
    data = {"inputs": tree_inputs_digest(tree), "runtime": settings.kernel.runtime,
            "toolchain": [settings.image.toolchain, settings.image.toolchain_sha256],
            "code": code_version(sys.modules[__name__], kmake)}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def headers_argv(make: Make) -> list[str]:
    paths = make.paths
    return ["make", "-C", str(paths.tree), f"O={paths.selftests_work}", "ARCH=x86_64",
            "headers_install"]


def install_argv(make: Make) -> list[str]:
    paths = make.paths
    return ["make", "-C", str(paths.tree / "tools" / "testing" / "selftests"),
            f"O={paths.selftests_work}", f"TARGETS={TARGET}", "ARCH=x86_64",
            f"-j{make.jobs}", f"EXTRA_CFLAGS=-ffile-prefix-map={paths.build}/=",
            f"INSTALL_PATH={paths.selftests_install}", "install"]


def list_entries(text: str) -> tuple[str, ...]:
    """The "COLLECTION:NAME" lines of a kselftest-list.txt."""
    return tuple(line.strip() for line in text.splitlines() if ":" in line)


def _without_selftests(settings: Settings) -> None:
    """kselftest.build = false: nothing published, an empty list for the image to see."""
    layout = settings.layout
    manifest.invalidate(layout)
    for path in (layout.selftests_work, layout.selftests, records.path(SelftestsRecord, layout)):
        remove_tree(path)
    layout.artifacts.mkdir(parents=True, exist_ok=True)
    atomic_write_text(layout.selftests_sha256, "")
    log.info("kselftest.build is false: no KVM selftests in the image")


def build_selftests(settings: Settings) -> SelftestsRecord | None:
    """The `selftests` task: headers, then kselftest's install of the kvm target."""
    layout = settings.layout
    source = records.require(SourceRecord, layout)
    records.require(SeriesRecord, layout)  # the tree is patched
    if not settings.kselftest.build:
        return _without_selftests(settings)
    key = inputs_key(settings, layout.tree)
    built = records.load(SelftestsRecord, layout)
    if built is not None and built.inputs_key == key and layout.selftests.is_dir() \
            and layout.selftests_sha256.is_file():
        log.info("the KVM selftests' inputs are unchanged (the tree's uapi headers and "
                 "tools/): kept")
        return built
    make = kmake.for_settings(settings, source.source_date_epoch)
    manifest.invalidate(layout)
    # Afresh every time: kselftest's makefiles do not notice changed headers.
    remove_tree(layout.selftests_work)
    layout.selftests_work.mkdir(parents=True)
    expected = kbuild.count_lines(layout.log("selftests"), kbuild.SELFTEST_OBJECT)
    log_file = kbuild.fresh_log(layout, "selftests")
    started = time.monotonic()
    try:
        make.run(headers_argv(make), log_file=log_file)
        kbuild.make_with_progress(make, install_argv(make), "KVM selftests", log_file,
                                  settings, kbuild.SELFTEST_OBJECT, expected)
    except CommandError as exc:
        raise kbuild.build_failed("the KVM selftests' build", exc, log_file,
                                  "To build the kernel without them, set "
                                  "kselftest.build=false") from None
    listing = layout.selftests_install / "kselftest-list.txt"
    tests = list_entries(listing.read_text()) if listing.is_file() else ()
    if not tests:
        raise BuildError(f"kselftest installed no KVM selftest ({listing} lists none; full "
                         f"log: {log_file})")
    layout.artifacts.mkdir(parents=True, exist_ok=True)
    kbuild.publish_dir(layout.selftests_install, layout.selftests)
    digests = kbuild.write_sha256_list(layout.selftests, layout.selftests_sha256)
    record = SelftestsRecord(kernel_version=source.kernel_version, inputs_key=key, tests=tests,
                             sha256=digests, seconds=round(time.monotonic() - started, 1))
    records.save(record, layout)
    log.info("built %d KVM selftests from Linux %s", len(tests), source.kernel_version)
    return record
