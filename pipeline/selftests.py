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
rebuild whose inputs_key (the tree, the patches touching those paths, the
runtime and this code) matches the record's is skipped, so switching
patch.enabled or the variant in a build dir costs no selftests build.

The binaries are built with -g: the prefix map keeps the build dir's path
out of their debug information and __FILE__, so they are the same bytes
wherever the build dir lies (and build-ids, which hash the debug
information too, agree).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
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
# Where a patch would change what the selftests are built from.
INPUT_PATHS = re.compile(r"^\+\+\+ b/(tools/|include/uapi/|arch/x86/include/uapi/)", re.M)


def inputs_key(settings: Settings, source: SourceRecord, series: SeriesRecord) -> str:
    """What the selftests' bytes depend on; equal keys, equal selftests."""
    layout = settings.layout
    directory = layout.project / Path(series.series).parent if series.series else None
    patches = {name: series.patch_sha256[name] for name in series.patches
               if directory and INPUT_PATHS.search((directory / name).read_text())}
    data = {"tree_id": source.tree_id, "patches": patches, "runtime": settings.kernel.runtime,
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
    series = records.require(SeriesRecord, layout)
    if not settings.kselftest.build:
        return _without_selftests(settings)
    key = inputs_key(settings, source, series)
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
    log_file = kbuild.fresh_log(layout, "selftests")
    started = time.monotonic()
    try:
        make.run(headers_argv(make), log_file=log_file)
        make.run(install_argv(make), log_file=log_file)
    except CommandError as exc:
        raise BuildError(
            f"the KVM selftests did not build (full log: {log_file}):\n{exc.output_tail}\n"
            f"command: {exc.argv_text}\nTo build the kernel without them, set "
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
