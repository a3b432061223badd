"""How the pipeline calls the kernel's make: one argv and environment for every step.

A `Make` is built from plain values, so the reproducer script renders the very
same command lines for its own directory.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .layout import Layout
from .settings import Settings


@dataclass(frozen=True)
class Make:
    layout: Layout
    jobs: int
    ccache: bool
    source_date_epoch: int

    def argv(self, *targets: str, parallel: bool = False) -> list[str]:
        argv = ["make", "-C", str(self.layout.tree), f"O={self.layout.kbuild}", "ARCH=x86_64"]
        if parallel:
            argv.append(f"-j{self.jobs}")
        if self.ccache:
            argv += ["CC=ccache gcc", "HOSTCC=ccache gcc"]
        return argv + list(targets)

    def reproducible_env(self) -> dict[str, str]:
        """Variables that make the build independent of when, where and by whom it ran."""
        return {
            "KBUILD_BUILD_TIMESTAMP": time.strftime(
                "%a %b %d %H:%M:%S UTC %Y", time.gmtime(self.source_date_epoch)),
            "KBUILD_BUILD_USER": "kvm-pipeline",
            "KBUILD_BUILD_HOST": "kvm-pipeline",
            "KBUILD_BUILD_VERSION": "1",
            "SOURCE_DATE_EPOCH": str(self.source_date_epoch),
            "LC_ALL": "C",
        }

    def env(self) -> dict[str, str]:
        """The variables every make of the pipeline adds to the environment."""
        env = self.reproducible_env()
        if self.ccache:
            # Shared by every build dir and kept by `doit clean`; BASEDIR (the build
            # dir holds the tree, kbuild/ and kmod/) makes hits independent of where
            # the build dir is.
            env["CCACHE_DIR"] = str(self.layout.ccache)
            env["CCACHE_BASEDIR"] = str(self.layout.build)
        return env


def jobs(settings: Settings) -> int:
    return settings.kernel.jobs or os.cpu_count() or 1


def use_ccache(settings: Settings) -> bool:
    mode = settings.kernel.ccache
    return mode == "on" or (mode == "auto" and shutil.which("ccache") is not None)


def for_settings(settings: Settings, source_date_epoch: int) -> Make:
    return Make(settings.layout, jobs(settings), use_ccache(settings), source_date_epoch)


TREE_ID_MARKER = ".pipeline-tree-id"


def kbuild_belongs_to(kbuild: Path, tree_id: str) -> bool:
    marker = kbuild / TREE_ID_MARKER
    return marker.is_file() and marker.read_text().strip() == tree_id
