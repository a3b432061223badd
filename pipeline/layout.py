"""Where every file lives: the build dir, the download cache, the project's inputs.

This is the only module that joins path pieces for them; a stage asks its
Layout.  The build dir:

    src/linux/          the kernel tree (hard links into the tree cache)
    kbuild/             make O=: objects, .config
    kmod/               a fresh copy of the project's kmod/, built with M=
    selftests/          make O= of the KVM selftests: headers, objects, install/
    records/            each stage's record (source, series, config, kmod)
    logs/               one log per long step, holding its latest run
    bisect/             a bisection: its clone, its own build dir, verdicts, report
    repro/              `doit repro`: its fresh build dir, report and diffoscope output
    image/              the Docker build context and its log
    artifacts/          what a user takes away (see `artifacts_*` below)
    results/            the latest guest run
    results-history/    the runs before it, newest first (see `pipeline.history`)
    .doit.db            doit's dependency database

No absolute path of the build dir reaches the artifacts: the kernel maps its
source tree's path out of __FILE__ (-fmacro-prefix-map) and kmod/Kbuild does
the same for our modules.  ccache hashes the paths under the build dir
relative to it (CCACHE_BASEDIR, see kmake.Make.env), so every build dir
shares one cache.  So a build dir may live anywhere; the reproducer script
uses this same layout under its own directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    project: Path  # the checkout: patches/, kconfig/, kmod/, images/
    build: Path
    cache: Path

    # ---------------------------------------------------------- the build dir

    @property
    def src(self) -> Path:
        return self.build / "src"

    @property
    def tree(self) -> Path:
        return self.src / "linux"

    @property
    def git_dir(self) -> Path:
        """A git source's objects, kept outside the tree (no .git for setlocalversion)."""
        return self.src / "linux.git"

    @property
    def git_index(self) -> Path:
        return self.src / "linux.index"

    @property
    def kbuild(self) -> Path:
        return self.build / "kbuild"

    @property
    def kernel_config(self) -> Path:
        """The .config make uses (artifacts_config is its published copy)."""
        return self.kbuild / ".config"

    @property
    def kernel_image(self) -> Path:
        return self.kbuild / "arch" / "x86" / "boot" / "bzImage"

    @property
    def kmod_work(self) -> Path:
        return self.build / "kmod"

    @property
    def selftests_work(self) -> Path:
        """The KVM selftests' O=: installed headers (usr/include), objects (kselftest/)."""
        return self.build / "selftests"

    @property
    def selftests_install(self) -> Path:
        """kselftest's INSTALL_PATH: run_kselftest.sh, kselftest-list.txt, kvm/."""
        return self.selftests_work / "install"

    @property
    def records(self) -> Path:
        return self.build / "records"

    def record(self, stage: str) -> Path:
        return self.records / f"{stage}.json"

    @property
    def logs(self) -> Path:
        return self.build / "logs"

    def log(self, step: str) -> Path:
        return self.logs / f"{step}.log"

    def ccache_stats(self, step: str) -> Path:
        """ccache's stats log of a step's latest make.

        `CCACHE_STATSLOG=<it> ccache --show-log-stats` prints it."""
        return self.logs / f"{step}.ccache-stats"

    @property
    def image_work(self) -> Path:
        return self.build / "image"

    @property
    def image_context(self) -> Path:
        return self.image_work / "context"

    @property
    def docker_log(self) -> Path:
        return self.image_work / "docker-build.log"

    @property
    def results(self) -> Path:
        return self.build / "results"

    @property
    def results_history(self) -> Path:
        """Earlier runs' results, moved here when a new run starts."""
        return self.build / "results-history"

    @property
    def lock(self) -> Path:
        """Held (flock) by the task writing this build dir; it holds the holder's pid."""
        return self.build / ".lock"

    @property
    def doit_db(self) -> Path:
        return self.build / ".doit.db"

    # ---------------------------------------------------------- a bisection

    @property
    def bisect(self) -> Path:
        """build/bisect/: clone, build dir, symptom, verdicts, steps, report."""
        return self.build / "bisect"

    @property
    def bisect_repo(self) -> Path:
        """A bare clone of the user's repository: git bisect runs here, never there."""
        return self.bisect / "repo.git"

    @property
    def bisect_build(self) -> Path:
        """The one build dir every step uses, so moving between commits is incremental."""
        return self.bisect / "build"

    @property
    def bisect_symptom(self) -> Path:
        return self.bisect / "symptom.json"

    @property
    def bisect_verdicts(self) -> Path:
        return self.bisect / "verdicts.json"

    @property
    def bisect_report(self) -> Path:
        return self.bisect / "report.json"

    @property
    def bisect_log(self) -> Path:
        return self.bisect / "bisect.log"

    @property
    def bisect_page(self) -> Path:
        return self.bisect / "report.html"

    def bisect_step(self, commit: str) -> Path:
        return self.bisect / "steps" / commit

    # ---------------------------------------------------------- a matrix

    @property
    def matrix(self) -> Path:
        """build/matrix/: a build dir per cell (build/matrix/CELL), the summary."""
        return self.build / "matrix"

    @property
    def matrix_summary(self) -> Path:
        return self.matrix / "summary.json"

    @property
    def matrix_junit(self) -> Path:
        return self.matrix / "junit.xml"

    @property
    def matrix_page(self) -> Path:
        return self.matrix / "report.html"

    @property
    def matrix_kcidb(self) -> Path:
        return self.matrix / "kcidb.json"

    @property
    def lava(self) -> Path:
        """build/lava/: `doit lava`'s job definitions."""
        return self.build / "lava"

    # ---------------------------------------------------------- artifacts

    @property
    def artifacts(self) -> Path:
        return self.build / "artifacts"

    @property
    def bzimage(self) -> Path:
        return self.artifacts / "bzImage"

    @property
    def system_map(self) -> Path:
        return self.artifacts / "System.map"

    @property
    def artifacts_config(self) -> Path:
        return self.artifacts / "kernel.config"

    @property
    def modules(self) -> Path:
        """The guest's /lib/modules/<release>."""
        return self.artifacts / "modules"

    @property
    def modules_sha256(self) -> Path:
        return self.artifacts / "modules.sha256"

    @property
    def kmod(self) -> Path:
        return self.artifacts / "kmod"

    @property
    def kmod_sha256(self) -> Path:
        return self.artifacts / "kmod.sha256"

    @property
    def selftests(self) -> Path:
        """The guest's /usr/local/lib/kselftest (the kselftest install)."""
        return self.artifacts / "selftests"

    @property
    def selftests_sha256(self) -> Path:
        return self.artifacts / "selftests.sha256"

    @property
    def kernel_json(self) -> Path:
        return self.artifacts / "kernel.json"

    @property
    def image_json(self) -> Path:
        return self.artifacts / "image.json"

    @property
    def rootfs(self) -> Path:
        return self.artifacts / "rootfs.ext4"

    @property
    def rootfs_zst(self) -> Path:
        """rootfs.ext4 compressed, for a LAVA lab to download."""
        return self.rootfs.with_name(self.rootfs.name + ".zst")

    @property
    def dockerfile(self) -> Path:
        """The rendered Dockerfile, kept beside the reproducer that uses it."""
        return self.artifacts / "Dockerfile"

    @property
    def reproducer(self) -> Path:
        return self.artifacts / "reproducer.sh"

    @property
    def manifest(self) -> Path:
        """Inputs and artifact digests, deterministic: what `doit repro` compares."""
        return self.artifacts / "manifest.json"

    def published_tarball(self, role: str) -> Path:
        """base.tar and toolchain.tar: the package sets, for pinning in a later build."""
        return self.artifacts / f"{role}.tar"

    @property
    def repro(self) -> Path:
        return self.build / "repro"

    @property
    def repro_build(self) -> Path:
        """The rebuild's own build dir, made afresh by every `doit repro`."""
        return self.repro / "build"

    @property
    def repro_report(self) -> Path:
        return self.repro / "report.json"

    @property
    def repro_diffs(self) -> Path:
        """diffoscope's report on each artifact that differs."""
        return self.repro / "diffoscope"

    # ---------------------------------------------------------- the cache

    @property
    def downloads(self) -> Path:
        return self.cache / "tarballs"

    @property
    def debian_downloads(self) -> Path:
        return self.cache / "debian"

    @property
    def apt_versions(self) -> Path:
        return self.cache / "apt-versions.json"

    @property
    def trees(self) -> Path:
        return self.cache / "trees"

    @property
    def base_tarballs(self) -> Path:
        """The package tarballs mmdebstrap made (base and toolchain)."""
        return self.cache / "base"

    @property
    def ccache(self) -> Path:
        return self.cache / "ccache"

    @property
    def container_ccache(self) -> Path:
        """kernel.runtime=docker's own ccache: the host's would hand back host objects."""
        return self.cache / "ccache-container"

    @property
    def accel_verdict(self) -> Path:
        return self.cache / "accel.json"

    # ---------------------------------------------------------- the project

    @property
    def series_root(self) -> Path:
        return self.project / "patches" / "kvm"

    @property
    def fragments_dir(self) -> Path:
        return self.project / "kconfig"

    @property
    def kselftest_known(self) -> Path:
        """The KVM selftests that cannot pass here, with reasons (the image has a copy)."""
        return self.images_root / "kselftest-known"

    @property
    def kmod_sources(self) -> Path:
        return self.project / "kmod"

    @property
    def images_root(self) -> Path:
        return self.project / "images"
