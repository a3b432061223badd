"""The `kernel` and `kmod` stages: build the kernel, its modules and ours; publish them.

Artifacts under build/artifacts/: `bzImage`, `System.map`, `kernel.config`,
`modules/` (the guest's /lib/modules/<release>) with `modules.sha256`,
`kernel.json` (the KernelRecord: what went in, tool versions, durations), and
`kmod/` (sched_inject.ko, inject_target.ko) with `kmod.sha256`.  The
`.sha256` lists are what later steps depend on: a rebuild that gives the same
bytes changes nothing downstream.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import re
import time
import uuid
from pathlib import Path

import msgspec

from . import ccache, failure, kmake, manifest, progress, records
from .errors import BuildError, CommandError, MissingStepError, PipelineError
from .kmake import Make
from .layout import Layout
from .records import (
    BuildEnvironment,
    CcacheStats,
    ConfigRecord,
    KernelPatches,
    KernelRecord,
    KernelSource,
    KmodRecord,
    SeriesRecord,
    SourceRecord,
)
from .settings import Settings
from .util import atomic_copy, atomic_write_text, file_sha256, remove_tree

log = logging.getLogger("pipeline")

# A W=1 build must print none of these (compiler, modpost and objtool warnings).
WARNING_MARKERS = ("warning:", "Warning:", "WARNING:")
# Links modules_install makes into this machine's build tree: meaningless in a guest.
HOST_LINKS = ("build", "source")


def _tool_version(make: Make, argv: list[str]) -> str:
    try:
        return make.run(argv).splitlines()[0].strip()
    except (CommandError, OSError):  # a missing version string must not fail a build
        return "unknown"


def publish_dir(staged: Path, dest: Path) -> None:
    """Swap `staged` in for `dest`; readers never see a half-copied directory."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dest, old)
        remove_tree(old)
    os.replace(staged, dest)


def sha256_lines(tree: Path) -> dict[str, str]:
    """`<tree name>/<relative path>` -> sha256 for every file under `tree`."""
    return {f"{tree.name}/{path.relative_to(tree)}": file_sha256(path)
            for path in sorted(tree.rglob("*")) if path.is_file()}


def write_sha256_list(tree: Path, dest: Path) -> dict[str, str]:
    """sha256sum-style lines for every file under `tree` (`sha256sum -c` reads it)."""
    digests = sha256_lines(tree)
    atomic_write_text(dest, "".join(f"{digest}  {name}\n" for name, digest in digests.items()))
    return digests


def fresh_log(layout: Layout, step: str) -> Path:
    """build/logs/<step>.log, emptied: it holds this run's output only."""
    log_file = layout.log(step)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("")
    return log_file


# What a make prints for each object it builds: kbuild's quiet lines ("  CC [M]  x.o",
# "  AS      y.o", "  HOSTCC  z.o"), the selftests' compiler command lines.
KERNEL_OBJECT = re.compile(r"^  (CC|AS|HOSTCC)\b")
SELFTEST_OBJECT = re.compile(r"^gcc .* -c ")


def count_lines(path: Path, pattern: re.Pattern[str]) -> int:
    """How many lines of a log match: what the build that wrote it made."""
    try:
        with open(path, errors="replace") as handle:
            return sum(1 for line in handle if pattern.match(line))
    except FileNotFoundError:
        return 0


def make_with_progress(make: Make, argv: list[str], what: str, log_file: Path,
                       settings: Settings, objects: re.Pattern[str], expected: int,
                       stats_log: Path | None = None) -> str:
    """Run a long make with its output in `log_file`.  kernel.verbose shows make's output
    as it comes; otherwise one progress line: the objects made so far, of `expected`
    (what the last build made), and the time, of what the last build took."""
    if settings.kernel.verbose:
        return make.run(argv, echo=True, log_file=log_file, stats_log=stats_log)
    made = 0
    of = f" of ~{expected}" if expected else ""
    with progress.Progress(what) as shown:

        def count(line: str) -> None:
            nonlocal made
            if objects.match(line):
                made += 1
            shown.tick(f"{made}{of} objects")  # a plain log's heartbeat: a long link too

        output = make.run(argv, log_file=log_file, stats_log=stats_log, on_line=count)
        shown.done(f"{what}: {made} objects made in {shown.elapsed()} (log: {log_file})")
    return output


def fresh_stats_log(make: Make, step: str) -> Path | None:
    """Where ccache logs what it does for this step's make (none without ccache)."""
    if not make.ccache:
        return None
    stats_log = make.layout.ccache_stats(step)
    stats_log.parent.mkdir(parents=True, exist_ok=True)
    stats_log.unlink(missing_ok=True)
    return stats_log


def report_cache(make: Make, stats_log: Path | None) -> CcacheStats | None:
    """Log what ccache did for a build; the same for its record (never the manifest)."""
    if stats_log is None:
        return None
    stats = ccache.Stats.from_log(stats_log)
    remote = make.remote.shown if make.remote else ""
    log.info("%s%s", stats.summary(), f" (remote {remote})" if remote else "")
    if stats.remote_errors:
        log.warning("the remote ccache %s failed %d times during this build: those objects were "
                    "compiled here instead; check the server", remote, stats.remote_errors)
    return CcacheStats(**dataclasses.asdict(stats), remote=remote,
                       remote_mode=make.remote.mode if make.remote else "")


def kmod_sources(settings: Settings) -> list[Path]:
    return sorted(p for p in settings.layout.kmod_sources.iterdir() if p.is_file())


def build_failed(what: str, exc: CommandError, log_file: Path, hint: str = "") -> PipelineError:
    """BuildError when the log blames the tree (a bisection skips the commit), HostFailure
    when it blames the machine (a bisection retries, then stops)."""
    blamed = failure.blame_command(exc, log_file)
    if blamed.host:
        return failure.host_failure(what, blamed, log_file)
    return BuildError(f"{what} failed: {blamed.evidence} (full log: {log_file})\n"
                      f"--- last lines of its output ---\n{exc.output_tail}\n"
                      f"command: {exc.argv_text}" + (f"\n{hint}" if hint else ""))


def kmod_argv(make: Make) -> list[str]:
    return make.argv(f"M={make.paths.kmod_work}", "W=1", "modules", parallel=True)


def build_kmod(settings: Settings) -> KmodRecord:
    """The `kmod` task: our modules, out of tree, against this kernel, W=1 and warning-free."""
    layout = settings.layout
    source = records.require(SourceRecord, layout)
    kernel = records.require(KernelRecord, layout)
    if not (layout.kbuild / "Module.symvers").exists():
        raise MissingStepError(f"{layout.kbuild / 'Module.symvers'}", "kernel")
    make = kmake.for_settings(settings, source.source_date_epoch, compiles=True)
    manifest.invalidate(layout)
    work = layout.kmod_work
    # A fresh copy each time: no object of a removed source survives.
    remove_tree(work)
    work.mkdir(parents=True)
    sources = kmod_sources(settings)
    for path in sources:
        atomic_copy(path, work / path.name)
    log_file = fresh_log(layout, "kmod")
    stats_log = fresh_stats_log(make, "kmod")
    try:
        output = make.run(kmod_argv(make), echo=True, log_file=log_file, stats_log=stats_log)
    except CommandError as exc:
        raise build_failed("kmod/'s build", exc, log_file) from None
    warnings = [line for line in output.splitlines()
                if any(marker in line for marker in WARNING_MARKERS)]
    if warnings:
        raise BuildError("kmod/ must build warning-free with W=1 (and objtool silent):\n"
                         + "\n".join(warnings[:20]))
    staged = layout.artifacts / f".kmod-staging-{uuid.uuid4().hex[:8]}"
    staged.mkdir(parents=True)
    try:
        for ko in sorted(work.glob("*.ko")):
            atomic_copy(ko, staged / ko.name)
        publish_dir(staged, layout.kmod)
    finally:
        remove_tree(staged)
    report_cache(make, stats_log)
    digests = write_sha256_list(layout.kmod, layout.kmod_sha256)
    record = KmodRecord(
        release=kernel.release,
        modules=tuple(sorted(Path(name).name for name in digests)),
        sha256=digests,
        source_sha256={path.name: file_sha256(path) for path in sources},
    )
    records.save(record, layout)
    log.info("built %s against Linux %s", ", ".join(record.modules), kernel.release)
    return record


def install_modules(make: Make, release: str, log_file: Path) -> None:
    """modules_install into a staging dir, published as build/artifacts/modules."""
    layout = make.layout
    staging = layout.artifacts / f".modules-staging-{uuid.uuid4().hex[:8]}"
    try:
        make.run(make.argv("modules_install", f"INSTALL_MOD_PATH={make.inside(staging)}",
                           "DEPMOD=/sbin/depmod"), log_file=log_file)
        modules = staging / "lib" / "modules" / release
        for link in HOST_LINKS:
            (modules / link).unlink(missing_ok=True)
        publish_dir(modules, layout.modules)
    finally:
        remove_tree(staging)


def build_kernel(settings: Settings) -> KernelRecord:
    """The `kernel` task: make bzImage and modules, install and publish them."""
    layout = settings.layout
    source = records.require(SourceRecord, layout)
    series = records.require(SeriesRecord, layout)
    config = records.require(ConfigRecord, layout)
    if not layout.kernel_config.exists():
        raise MissingStepError(f"{layout.kernel_config}", "config")
    toolchain = kmake.toolchain_record(settings)  # before the compile: dpkg may be missing
    make = kmake.for_settings(settings, source.source_date_epoch, compiles=True,
                              toolchain=toolchain)
    manifest.invalidate(layout)
    expected = count_lines(layout.log("kernel"), KERNEL_OBJECT)  # the last build's
    log_file = fresh_log(layout, "kernel")
    stats_log = fresh_stats_log(make, "kernel")
    started = time.monotonic()
    try:
        make_with_progress(make, make.argv("bzImage", "modules", parallel=True),
                           "kernel", log_file, settings, KERNEL_OBJECT, expected, stats_log)
        build_seconds = time.monotonic() - started
        release = make.run(make.argv("-s", "kernelrelease")).strip()
        layout.artifacts.mkdir(parents=True, exist_ok=True)
        install_modules(make, release, log_file)
    except CommandError as exc:
        raise build_failed("the kernel's build", exc, log_file) from None
    cache = report_cache(make, stats_log)
    module_sha256 = write_sha256_list(layout.modules, layout.modules_sha256)
    atomic_copy(layout.kernel_image, layout.bzimage)
    atomic_copy(layout.kbuild / "System.map", layout.system_map)
    atomic_copy(layout.kernel_config, layout.artifacts_config)
    record = KernelRecord(
        release=release,
        kernel_version=source.kernel_version,
        variant=config.variant,
        source=KernelSource(identity=source.identity, resolved=msgspec.structs.replace(
            source.resolved, source_date_epoch=source.source_date_epoch)),
        patches=KernelPatches(series=series.series, patches=series.patches,
                              digest=series.digest),
        config_sha256=config.config_sha256,
        bzImage_sha256=file_sha256(layout.bzimage),
        module_sha256=module_sha256,
        make_env=make.reproducible_env(),
        toolchain=toolchain,
        ccache=make.ccache,
        jobs=make.jobs,
        environment=BuildEnvironment(
            gcc=_tool_version(make, ["gcc", "--version"]),
            make=_tool_version(make, ["make", "--version"]),
            host=platform.platform(),
        ),
        seconds={"build": round(build_seconds, 1),
                 "total": round(time.monotonic() - started, 1)},
        ccache_stats=cache,
    )
    records.save(record, layout)
    log.info("built Linux %s: %s", release, layout.bzimage)
    return record
