"""reproducer.sh rebuilds the shared e2e build, byte for byte, in an empty directory.

The original build dir is renamed out of reach first, so nothing of it can be
used: the script must fetch, patch, configure, build the kernel and kmod and
bake the image from the project and the records alone.  It builds where the
original build dir was, now empty: ccache stays on (the script uses the same
cache) and, at the same paths, its hits make the run quick (that the bytes do
not depend on the path is what test_e2e_repro proves).  The package tarballs
are the ones the build published beside the script (base.tar, toolchain.tar),
as a user handed the artifacts would run it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from pipeline.util import file_sha256

pytestmark = pytest.mark.slow


def artifact_digests(artifacts) -> dict[str, str]:
    """bzImage, rootfs.ext4 and every file of the kernel's modules and of kmod/."""
    names = ["bzImage", "rootfs.ext4"]
    for tree in ("modules", "kmod"):
        names += [str(p.relative_to(artifacts)) for p in (artifacts / tree).rglob("*")
                  if p.is_file()]
    return {name: file_sha256(artifacts / name) for name in sorted(names)}


def test_reproducer_rebuilds_every_artifact_identically(kernel_build):
    layout = kernel_build.layout
    expected = artifact_digests(layout.artifacts)
    assert any(name.endswith("/kvm.ko") for name in expected)
    assert "kmod/sched_inject.ko" in expected and "kmod/inject_target.ko" in expected
    script_text = layout.reproducer.read_text()
    assert str(layout.build) not in script_text  # no path of the original run
    assert (layout.artifacts / "Dockerfile").is_file()

    away = layout.build.with_name(layout.build.name + ".out-of-reach")
    out = layout.build
    os.rename(layout.build, away)
    try:
        proc = subprocess.run(
            [away / "artifacts" / "reproducer.sh", out],
            capture_output=True, text=True, timeout=2400,
        )
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
        assert "every artifact is identical to the recorded build" in proc.stdout
        for step in ("the base package tarball", "the toolchain package tarball", "fetch",
                     "patch", "config", "kernel", "kmod", "image: docker build",
                     "image: export"):
            assert f"==> {step}" in proc.stdout, step
        assert artifact_digests(out / "artifacts") == expected
        # Everything landed in the given directory, in the build dir's layout.
        for path in ("src/linux/Makefile", "kbuild/.config", "kmod/sched_inject.ko",
                     "artifacts/rootfs.ext4"):
            assert (out / path).is_file(), path
    finally:
        shutil.rmtree(out, ignore_errors=True)
        os.rename(away, layout.build)


def test_reproducer_refuses_a_directory_in_use(kernel_build, tmp_path):
    (tmp_path / "something").write_text("x")
    proc = subprocess.run([kernel_build.layout.reproducer, tmp_path], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "is not empty" in proc.stderr
