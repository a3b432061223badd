"""`doit repro` end to end, on real builds.

One cold build does three jobs: a checkout at a longer path runs `python -m
pipeline repro kernel.runtime=docker` against the manifest of the shared e2e
build.  That is a second clean build (ccache off, tree extracted afresh,
`docker build --no-cache`), in the toolchain container instead of on the
host, compared artifact by artifact.  The later tests reuse its build dir:
a planted difference and one changed byte of a kmod source are compared
without building the kernel again.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from helpers import CLONE, show
from helpers import clone_pipeline as pipeline

from pipeline import manifest, records
from pipeline.records import SourceRecord
from pipeline.util import file_sha256

pytestmark = pytest.mark.slow

# The compiler, assembler and linker: when the host's and the toolchain
# tarball's versions of these agree, the two builds must be identical.  (The
# manifest records more, e.g. perl and libssl, which do not reach the bytes.)
COMPILER = re.compile(r"^(gcc|cpp|binutils|libbinutils|libgcc|libc6-dev|make)(-|$)")


def test_container_rebuild_matches_the_host_build(docker_repro, kernel_build):
    proc, report = docker_repro
    rebuilt = CLONE / "build" / "repro" / "build"
    assert "repro: rebuilding in" in proc.stdout and "repro: rebuilt in" in proc.stdout
    assert "docker run --rm --name kvm-pipeline-make-" in proc.stderr  # make ran in the container
    # The only inputs that differ are the runtime's: same sources, series, config,
    # kmod, images/ and package tarballs.
    keys = [diff["key"] for diff in report["inputs"]]
    assert keys and all(key.startswith("kernel.toolchain.") for key in keys), keys
    compiler_moved = [key for key in keys
                      if COMPILER.match(key.removeprefix("kernel.toolchain.packages."))]
    rows = report["artifacts"]
    assert {"bzImage", "rootfs.ext4", "kmod/sched_inject.ko", "kmod/inject_target.ko",
            "modules/kernel/arch/x86/kvm/kvm.ko", "modules/kernel/arch/x86/kvm/kvm-amd.ko",
            "modules/kernel/arch/x86/kvm/kvm-intel.ko",
            "modules/kernel/virt/lib/irqbypass.ko"} <= {row["name"] for row in rows}
    if compiler_moved:
        # The manifests name the package; identical bytes cannot be asked for.
        pytest.skip(f"this host's compiler is not the toolchain tarball's: {compiler_moved}")
    assert all(row["same"] for row in rows), [row["name"] for row in rows if not row["same"]]
    # Identical artifacts, but from another toolchain than the manifest names: that
    # verifies nothing about the manifest's inputs, and repro says so.
    assert proc.returncode == 11, show(proc)
    assert report["verdict"] == "inputs differ"
    said = proc.stdout + proc.stderr  # doit reports a task's error on stdout
    assert f"all {len(rows)} artifacts are identical, but that does not verify" in said
    assert "kernel.toolchain." in said
    # The two manifests are byte-identical but for the toolchain they name.
    ours = json.loads(kernel_build.layout.manifest.read_text())
    theirs = json.loads((rebuilt / "artifacts" / "manifest.json").read_text())
    for side in (ours, theirs):
        side["inputs"]["kernel"].pop("toolchain")
    assert manifest.dumps(ours) == manifest.dumps(theirs)


def test_a_planted_difference_is_named_with_diffoscope_report(docker_repro, tmp_path):
    # The rebuild's own artifacts: the same inputs, so the artifacts decide (exit 10).
    published = tmp_path / "ci-artifacts"
    shutil.copytree(CLONE / "build" / "repro" / "build" / "artifacts", published,
                    copy_function=_link_or_copy)
    planted = published / "bzImage"
    data = bytearray(planted.read_bytes())
    planted.unlink()  # a hard link: write a new file
    data[len(data) // 2] ^= 0x01
    planted.write_bytes(bytes(data))

    proc = pipeline("repro", "repro.rebuild=false", f"repro.against={published}/manifest.json",
                    "kernel.runtime=docker", timeout=900)
    assert proc.returncode == 10, show(proc)
    assert re.search(r"^  bzImage\s+DIFFERS .*does not match its own manifest", proc.stdout,
                     re.MULTILINE), proc.stdout[-3000:]
    assert re.search(r"^  rootfs\.ext4\s+same", proc.stdout, re.MULTILINE)
    report = CLONE / "build" / "repro" / "diffoscope" / "bzImage.txt"
    assert report.is_file() and "bzImage" in report.read_text()
    assert "repro: bzImage differs; diffoscope" in proc.stdout


def test_one_kmod_byte_changes_its_module_the_image_and_the_manifest(docker_repro,
                                                                     kernel_build, tmp_path):
    rebuilt = CLONE / "build" / "repro" / "build"
    before = tmp_path / "before"
    shutil.copytree(rebuilt / "artifacts", before, copy_function=_link_or_copy)
    old = json.loads((before / "manifest.json").read_text())

    source = CLONE / "kmod" / "sched_inject_main.c"
    text = source.read_text()
    changed = re.sub(r'MODULE_DESCRIPTION\("(.)', lambda m: m.group(0)[:-1]
                     + m.group(1).swapcase(), text, count=1)
    assert changed != text and len(changed) == len(text)
    source.write_text(changed)
    # The rebuild's own settings, so only what the change touches runs again.
    version = records.load(SourceRecord, kernel_build.layout).resolved.version
    pins = [f"image.{role}={value}" for tar in ("base", "toolchain") for role, value in (
        (tar, f"tarball:{kernel_build.layout.published_tarball(tar)}"),
        (f"{tar}_sha256", file_sha256(kernel_build.layout.published_tarball(tar))))]
    proc = pipeline("build", f"paths.build={rebuilt}", "kernel.runtime=docker",
                    "kernel.ccache=off", "source.tree_cache=false", "image.docker_cache=false",
                    f"source.version={version}", *pins, timeout=1800)
    assert proc.returncode == 0, show(proc)
    ran = [line[3:].strip() for line in proc.stdout.splitlines() if line.startswith(".  ")]
    assert ran == ["kmod", "image", "build"], ran
    new = json.loads((rebuilt / "artifacts" / "manifest.json").read_text())
    moved = {diff.key for diff in manifest.differences(old, new)}
    assert moved == {"inputs.kmod.sources.sched_inject_main.c",
                     "artifacts.kmod/sched_inject.ko", "artifacts.rootfs.ext4"}, moved
    assert re.search(r"^manifest sha256 [0-9a-f]{64}  ", proc.stdout, re.MULTILINE)

    # repro names both, and compares rootfs.ext4 by the files it holds.
    proc = pipeline("repro", "repro.rebuild=false", f"repro.against={before}/manifest.json",
                    "kernel.runtime=docker", timeout=1200)
    assert proc.returncode == 11, show(proc)  # an input differs: named first
    said = proc.stdout + proc.stderr  # doit reports a task's error on stdout
    assert "1 input(s) of the rebuild are not those of" in said
    assert "kmod.sources.sched_inject_main.c" in said
    diffs = CLONE / "build" / "repro" / "diffoscope"
    assert (diffs / "kmod_sched_inject.ko.txt").is_file()
    assert "sched_inject.ko" in (diffs / "rootfs.ext4.txt").read_text()
    report = json.loads((CLONE / "build" / "repro" / "report.json").read_text())
    assert [diff["key"] for diff in report["inputs"]] == ["kmod.sources.sched_inject_main.c"]
    assert sorted(row["name"] for row in report["artifacts"] if not row["same"]) == [
        "kmod/sched_inject.ko", "rootfs.ext4"]


def _link_or_copy(src: str, dest: str) -> None:
    try:
        Path(dest).hardlink_to(src)
    except OSError:
        shutil.copy2(src, dest)
