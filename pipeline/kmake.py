"""How the pipeline calls the kernel's make: one argv and environment for every step.

A `Make` is built from plain values, so the reproducer script renders the very
same command lines for its own directory.

kernel.runtime = "docker" runs every make in the toolchain image
(`pipeline.tarballs`) instead of on the host: the build dir is mounted at
/build and the project at /project (read-only), the container has no
network (the host's, for a compiling make that uses kernel.ccache_remote),
and ccache (when on) uses a cache of its own: ccache keys on the
compiler driver only, so the host's cache would hand host-compiled objects
back.  make then sees the same paths and the same compiler wherever and on
whatever host it runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from . import ccache, commands, image, tarballs
from .errors import EnvironmentProblem, PipelineError, SettingsError
from .layout import Layout
from .records import Toolchain
from .settings import Settings

# The paths as make sees them inside the toolchain container.
CONTAINER_LAYOUT = Layout(project=Path("/project"), build=Path("/build"), cache=Path("/cache"))


@dataclass(frozen=True)
class Make:
    layout: Layout  # the host's paths
    jobs: int
    ccache: bool
    source_date_epoch: int
    container: str | None = None  # the toolchain image; None: the host's make and compiler
    remote: ccache.Remote | None = None  # a shared cache behind the local one (ccache on)
    recache: bool = False  # compile everything, read no hit, store the objects (ccache on)

    @property
    def paths(self) -> Layout:
        """The layout as make sees it: the host's, or the container's fixed one."""
        return CONTAINER_LAYOUT if self.container else self.layout

    def inside(self, path: Path) -> Path:
        """A host path as make sees it."""
        if not self.container:
            return path
        for host, seen in ((self.layout.build, CONTAINER_LAYOUT.build),
                           (self.layout.project, CONTAINER_LAYOUT.project)):
            if path.is_relative_to(host):
                return seen / path.relative_to(host)
        raise SettingsError(f"{path} is outside the build dir and the project, so the "
                            "kernel.runtime=docker container cannot see it; move it into "
                            f"{self.layout.project}")

    def argv(self, *targets: str, parallel: bool = False) -> list[str]:
        # RUSTC=false: the pipeline's configs build no Rust, and a rustc in PATH
        # (rustup's) would land in .config as CONFIG_RUSTC_VERSION: the config
        # would then depend on the host.
        argv = ["make", "-C", str(self.paths.tree), f"O={self.paths.kbuild}", "ARCH=x86_64",
                "RUSTC=false"]
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

    def env(self, stats_log: Path | None = None) -> dict[str, str]:
        """The variables every make of the pipeline adds to the environment; with
        `stats_log` (a host path) ccache writes what it did for this make there."""
        env = self.reproducible_env()
        if self.ccache:
            # One cache for every build dir (kept by `doit clean`), with hits across
            # them: CCACHE_BASEDIR makes ccache hash the paths under the build dir
            # relative to the compile's directory, so kbuild/ in build/ and in
            # build/bisect/build/ ask for the same objects.  Depend mode makes it
            # run the compiler with make's own absolute arguments (without it ccache
            # hands gcc the relative ones, and normalises "arch/x86/kvm/../../../
            # virt/kvm/kvm_main.c" to "virt/kvm/kvm_main.c" on the way, so __FILE__
            # would differ from a build without ccache); the kernel's and kmod/'s
            # -fmacro-prefix-map then keep the build dir's path out of every
            # object, so a hit is the object this dir would have compiled.  Depend
            # mode also spares each miss a preprocessor run: ccache learns the
            # headers from the compiler's own -MMD file, which kbuild asks for.
            # Hashing those headers (hundreds a compile, the same ones every time)
            # is most of what a miss costs: the inode cache keeps each file's hash
            # by device, inode, size and times, and the build trees are hard links
            # of one extraction, so every build dir shares it.
            env["CCACHE_BASEDIR"] = str(self.paths.build)
            env["CCACHE_DEPEND"] = "1"
            env["CCACHE_INODECACHE"] = "1"
            env["CCACHE_DIR"] = str(self.paths.ccache)
            if self.recache:
                env["CCACHE_RECACHE"] = "1"
            if stats_log:
                env["CCACHE_STATSLOG"] = str(self.inside(stats_log))
            if stats_log and self.remote:
                # The remote lives in a config file this make alone reads: its
                # credentials stay out of every argv and environment, and the
                # file is how a failing server gets cut off (ccache.remote_session).
                env["CCACHE_CONFIGPATH"] = str(self.inside(ccache.config_path(stats_log)))
        return env

    def container_argv(self, workdir: Path | None, user: str = "", name: str = "",
                       stats_log: Path | None = None) -> list[str]:
        """`docker run ...` up to the image: mounts, user, variables, no network
        (the host's, when a remote cache is to be reached: it may be 127.0.0.1)."""
        assert self.container is not None
        seen, host = CONTAINER_LAYOUT, self.layout
        env = self.env(stats_log)
        argv = ["docker", "run", "--rm", *(["--name", name] if name else []),
                "--network", "host" if "CCACHE_CONFIGPATH" in env else "none",
                "--user", user or f"{os.getuid()}:{os.getgid()}",
                "-v", f"{host.build}:{seen.build}", "-v", f"{host.project}:{seen.project}:ro"]
        if self.ccache:
            argv += ["-v", f"{host.container_ccache}:{seen.ccache}"]
        argv += ["-w", str(workdir or seen.build), "-e", "HOME=/tmp"]
        for name, value in env.items():
            argv += ["-e", f"{name}={value}"]
        return [*argv, self.container]

    def run(self, argv: Sequence[str | os.PathLike], cwd: Path | None = None,
            stats_log: Path | None = None, **kwargs: object) -> str:
        """Run one command of the build where kernel.runtime says, logged as run.
        A compiling make passes `stats_log` (see env()): it then uses the remote
        cache too, if there is one."""
        with ccache.remote_session(self.remote, stats_log, self.primary_ccache_config()):
            return self._run(argv, cwd, stats_log, **kwargs)

    def primary_ccache_config(self) -> tuple[Path, ...]:
        """The config files ccache reads without CCACHE_CONFIGPATH: the system's (on the
        host) and the local cache's own (e.g. a max_size set with ccache -M)."""
        if self.container:
            return (self.layout.container_ccache / "ccache.conf",)
        return (Path("/etc/ccache.conf"), self.layout.ccache / "ccache.conf")

    def _run(self, argv: Sequence[str | os.PathLike], cwd: Path | None,
             stats_log: Path | None, **kwargs: object) -> str:
        if not self.container:
            return commands.run(argv, cwd=cwd, env=self.env(stats_log), **kwargs)
        if self.ccache:
            self.layout.container_ccache.mkdir(parents=True, exist_ok=True)
        workdir = self.inside(cwd) if cwd else None
        # Named, so an interrupted run stops its container: killing the docker
        # client would leave make running in the build dir.
        name = f"kvm-pipeline-make-{uuid.uuid4().hex[:12]}"
        try:
            return commands.run([*self.container_argv(workdir, name=name, stats_log=stats_log),
                                 *argv], **kwargs)
        except BaseException:
            with contextlib.suppress(PipelineError):  # gone already, or dockerd with it
                commands.run(["docker", "rm", "-f", name])
            raise


def jobs(settings: Settings) -> int:
    return settings.kernel.jobs or os.cpu_count() or 1


def use_ccache(settings: Settings) -> bool:
    mode = settings.kernel.ccache
    if settings.kernel.runtime == "docker":
        return mode != "off"  # the toolchain image has it
    if mode == "recache" and shutil.which("ccache") is None:
        raise EnvironmentProblem("kernel.ccache is \"recache\" but ccache is not installed: "
                                 "run scripts/setup, or set kernel.ccache=\"off\"")
    return mode in ("on", "recache") or (mode == "auto" and shutil.which("ccache") is not None)


def for_settings(settings: Settings, source_date_epoch: int, compiles: bool = False,
                 toolchain: Toolchain | None = None) -> Make:
    """The Make of these settings, in the toolchain container for runtime docker.
    `compiles`: for the kernel and kmod builds, which use kernel.ccache_remote
    (the server is asked first; `toolchain`, when the caller has it, saves
    toolchain_record() a second dpkg query)."""
    container = None
    if settings.kernel.runtime == "docker":
        tarball = tarballs.ensure(settings, "toolchain")
        container = tarballs.docker_image(image.docker_client(), tarball,
                                          reimport=not settings.image.docker_cache)
    with_ccache = use_ccache(settings)
    remote = None
    if settings.kernel.ccache_remote and compiles:
        if not with_ccache:
            raise EnvironmentProblem("kernel.ccache_remote is set but ccache is not installed: "
                                     "run scripts/setup, or set kernel.ccache_remote=\"\"")
        packages = json.dumps(msgspec.to_builtins(toolchain or toolchain_record(settings)),
                              sort_keys=True)
        remote = ccache.Remote(settings.kernel.ccache_remote, settings.kernel.ccache_remote_mode,
                               namespace=hashlib.sha256(packages.encode()).hexdigest()[:16])
        ccache.check_reachable(remote)
    return Make(settings.layout, jobs(settings), with_ccache, source_date_epoch, container,
                remote, recache=settings.kernel.ccache == "recache")


def toolchain_record(settings: Settings) -> Toolchain:
    """The exact versions of the packages the kernel was compiled with (dpkg's, with
    Debian revisions, which `gcc --version` hides): the toolchain tarball's for
    runtime docker, the host's for runtime host, picked alike so the two compare
    package by package."""
    if settings.kernel.runtime == "docker":
        tarball = tarballs.ensure(settings, "toolchain")
        return Toolchain(runtime="docker", sha256=tarball.sha256,
                         packages=tarballs.compiler_packages(tarball.packages))
    return Toolchain(runtime="host",
                     packages=tarballs.compiler_packages(tarballs.host_versions()))


TREE_ID_MARKER = ".pipeline-tree-id"


def kbuild_belongs_to(kbuild: Path, tree_id: str) -> bool:
    marker = kbuild / TREE_ID_MARKER
    return marker.is_file() and marker.read_text().strip() == tree_id
