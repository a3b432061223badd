"""Build the kernel, its modules and our out-of-tree modules; publish them.

Artifacts under build/artifacts/: `bzImage`, `System.map`, `kernel.config`,
`modules/` (the guest's /lib/modules/<release>), `modules.sha256`,
`kernel.json` (what went in: source, patches, config, tool versions,
durations), `reproducer.sh` (every command, in order, to redo the build by
hand), and `kmod/` (sched_inject.ko, inject_target.ko) with `kmod.sha256`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
import uuid
from pathlib import Path

from . import commands
from .errors import BuildError, ConfigError, PipelineError
from .fetch import read_record
from .kmake import jobs, make_argv, make_env, use_ccache
from .patch import stamp_path as patch_stamp_path
from .settings import Settings
from .util import atomic_copy, atomic_write_text, file_sha256, remove_tree

log = logging.getLogger("pipeline")

REPRODUCER_STEPS = ("fetch", "patch", "config", "kernel", "kmod")
# A W=1 build must print none of these (compiler, modpost and objtool warnings).
WARNING_MARKERS = ("warning:", "Warning:", "WARNING:")


def _tool_version(argv: list[str]) -> str:
    try:
        return commands.run(argv).splitlines()[0].strip()
    except PipelineError:  # a missing version string must not fail a build
        return "unknown"


def _publish_dir(staged: Path, dest: Path) -> None:
    """Swap `staged` in for `dest`; readers never see a half-copied directory."""
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dest, old)
        remove_tree(old)
    os.replace(staged, dest)


def modules_manifest(settings: Settings) -> Path:
    return settings.artifacts_dir / "modules.sha256"


def write_manifest(tree: Path, dest: Path) -> None:
    """sha256sum-style lines for every file under `tree` (`sha256sum -c` reads it).

    Later steps depend on this instead of kernel.json, whose durations change
    on every build: a rebuild with identical modules changes nothing downstream.
    """
    lines = [f"{file_sha256(path)}  {tree.name}/{path.relative_to(tree)}\n"
             for path in sorted(tree.rglob("*")) if path.is_file()]
    atomic_write_text(dest, "".join(lines))


def fresh_log(settings: Settings, step: str) -> Path:
    """build/logs/<step>.log, emptied: it holds this run's output only."""
    log_file = settings.build_dir / "logs" / f"{step}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("")
    return log_file


def kmod_sources(settings: Settings) -> list[Path]:
    return sorted(p for p in (settings.root / "kmod").iterdir() if p.is_file())


def kmod_manifest(settings: Settings) -> Path:
    return settings.artifacts_dir / "kmod.sha256"


def build_kmod(settings: Settings) -> dict:
    """The `kmod` task: our modules, out of tree, against this kernel, W=1 and warning-free."""
    fetched = read_record(settings)
    if fetched is None or not (settings.kbuild_dir / "Module.symvers").exists():
        raise ConfigError("no built kernel: run `doit kernel` first")
    env = make_env(settings, fetched["resolved"]["source_date_epoch"])
    work = settings.build_dir / "kmod"
    # A fresh copy each time: no object of a removed source survives.
    remove_tree(work)
    work.mkdir(parents=True)
    for source in kmod_sources(settings):
        atomic_copy(source, work / source.name)
    log_file = fresh_log(settings, "kmod")
    try:
        output = commands.run(make_argv(settings, f"M={work}", "W=1", "modules",
                                        parallel=True),
                              env=env, echo=True, log_file=log_file)
    except commands.CommandError as exc:
        raise BuildError(f"kmod/ did not build (full log: {log_file}):\n"
                         f"{exc.output_tail}") from None
    warnings = [line for line in output.splitlines()
                if any(marker in line for marker in WARNING_MARKERS)]
    if warnings:
        raise BuildError("kmod/ must build warning-free with W=1 (and objtool silent):\n"
                         + "\n".join(warnings[:20]))
    staged = settings.artifacts_dir / f".kmod-staging-{uuid.uuid4().hex[:8]}"
    staged.mkdir(parents=True)
    try:
        for ko in sorted(work.glob("*.ko")):
            atomic_copy(ko, staged / ko.name)
        _publish_dir(staged, settings.artifacts_dir / "kmod")
    finally:
        remove_tree(staged)
    write_manifest(settings.artifacts_dir / "kmod", kmod_manifest(settings))
    names = sorted(p.name for p in (settings.artifacts_dir / "kmod").glob("*.ko"))
    log.info("built %s against Linux %s", ", ".join(names), fetched["kernel_version"])
    return {"modules": names}


def journal_path(settings: Settings, step: str) -> Path:
    return settings.stamps_dir / f"{step}.sh"


def write_reproducer(settings: Settings, dest: Path) -> None:
    parts = [
        "#!/bin/sh\n",
        "# Every command the pipeline ran to make these artifacts, step by step.\n",
        "# Temporary directories in the fetch step were removed afterwards.\n",
        "set -e\n",
    ]
    for step in REPRODUCER_STEPS:
        path = journal_path(settings, step)
        if path.exists():
            parts.append(f"\n# --- {step}\n" + path.read_text())
    atomic_write_text(dest, "".join(parts))
    dest.chmod(0o755)


def build_kernel(settings: Settings) -> dict:
    """The `kernel` task: make bzImage and modules, install and publish them."""
    fetched = read_record(settings)
    config = settings.kbuild_dir / ".config"
    if fetched is None or not config.exists():
        raise ConfigError("no configured tree: run `doit config` first")
    env = make_env(settings, fetched["resolved"]["source_date_epoch"])
    log_file = fresh_log(settings, "kernel")
    started = time.monotonic()
    try:
        commands.run(make_argv(settings, "bzImage", "modules", parallel=True), env=env,
                     echo=True, log_file=log_file)
    except commands.CommandError as exc:
        raise BuildError(
            f"the kernel did not build (full log: {log_file}):\n{exc.output_tail}\n"
            f"command: {exc.argv_text}"
        ) from None
    build_seconds = time.monotonic() - started
    release = commands.run(make_argv(settings, "-s", "kernelrelease"), env=env).strip()

    artifacts = settings.artifacts_dir
    artifacts.mkdir(parents=True, exist_ok=True)
    staging = artifacts / f".modules-staging-{uuid.uuid4().hex[:8]}"
    try:
        commands.run(make_argv(settings, "modules_install", f"INSTALL_MOD_PATH={staging}",
                               "DEPMOD=/sbin/depmod"), env=env, log_file=log_file)
        modules = staging / "lib" / "modules" / release
        for link in ("build", "source"):
            # They point into this machine's build tree: meaningless in a guest.
            (modules / link).unlink(missing_ok=True)
        _publish_dir(modules, artifacts / "modules")
    finally:
        remove_tree(staging)
    write_manifest(artifacts / "modules", modules_manifest(settings))

    kbuild = settings.kbuild_dir
    atomic_copy(kbuild / "arch" / "x86" / "boot" / "bzImage", artifacts / "bzImage")
    atomic_copy(kbuild / "System.map", artifacts / "System.map")
    atomic_copy(config, artifacts / "kernel.config")
    write_reproducer(settings, artifacts / "reproducer.sh")
    patched = json.loads(patch_stamp_path(settings).read_text())
    record = {
        "release": release,
        "kernel_version": fetched["kernel_version"],
        "variant": settings.kernel.variant,
        "source": {"identity": fetched["identity"], "resolved": fetched["resolved"]},
        "patches": {"series": patched["series"], "patches": patched["patches"],
                    "digest": patched["digest"]},
        "config_sha256": file_sha256(config),
        "bzImage_sha256": file_sha256(artifacts / "bzImage"),
        "environment": {
            "make_env": env,
            "gcc": _tool_version(["gcc", "--version"]),
            "make": _tool_version(["make", "--version"]),
            "host": platform.platform(),
            "jobs": jobs(settings),
            "ccache": use_ccache(settings),
        },
        "seconds": {"build": round(build_seconds, 1),
                    "total": round(time.monotonic() - started, 1)},
    }
    atomic_write_text(artifacts / "kernel.json", json.dumps(record, indent=2) + "\n")
    log.info("built Linux %s: %s", release, artifacts / "bzImage")
    return record
