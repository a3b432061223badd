"""How the pipeline calls the kernel's make: one argv and environment for every step."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from .settings import Settings


def jobs(settings: Settings) -> int:
    return settings.kernel.jobs or os.cpu_count() or 1


def use_ccache(settings: Settings) -> bool:
    mode = settings.kernel.ccache
    return mode == "on" or (mode == "auto" and shutil.which("ccache") is not None)


def make_argv(settings: Settings, *targets: str, parallel: bool = False) -> list[str]:
    argv = ["make", "-C", str(settings.tree_dir), f"O={settings.kbuild_dir}", "ARCH=x86_64"]
    if parallel:
        argv.append(f"-j{jobs(settings)}")
    if use_ccache(settings):
        argv += ["CC=ccache gcc", "HOSTCC=ccache gcc"]
    return argv + list(targets)


def make_env(settings: Settings, source_date_epoch: int) -> dict[str, str]:
    """Variables that make the build independent of when, where and by whom it ran."""
    env = {
        "KBUILD_BUILD_TIMESTAMP": time.strftime(
            "%a %b %d %H:%M:%S UTC %Y", time.gmtime(source_date_epoch)),
        "KBUILD_BUILD_USER": "kvm-pipeline",
        "KBUILD_BUILD_HOST": "kvm-pipeline",
        "KBUILD_BUILD_VERSION": "1",
        "SOURCE_DATE_EPOCH": str(source_date_epoch),
        "LC_ALL": "C",
    }
    if use_ccache(settings):
        # Shared by every build dir and kept by `doit clean`; BASEDIR makes hits
        # independent of where the project is checked out.
        env["CCACHE_DIR"] = str(settings.cache_dir / "ccache")
        env["CCACHE_BASEDIR"] = str(settings.root)
    return env


def kbuild_belongs_to(kbuild: Path, tree_id: str) -> bool:
    marker = kbuild / ".pipeline-tree-id"
    return marker.is_file() and marker.read_text().strip() == tree_id
