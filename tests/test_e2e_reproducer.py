"""reproducer.sh rebuilds the shared e2e build, byte for byte, in an empty directory.

The original build dir is renamed out of reach first, so nothing of it can be
used: the script must fetch, patch, configure, build the kernel and kmod and
bake the image from the project and the records alone.  ccache stays on (the
script uses the same cache) and the base tarball is the cached one (mmdebstrap
of the same inputs gives the same bytes, measured, but takes a minute).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from pipeline import records
from pipeline.records import ImageRecord
from pipeline.util import file_sha256

pytestmark = pytest.mark.slow


def artifact_digests(artifacts) -> dict[str, str]:
    """bzImage, rootfs.ext4 and every file of the kernel's modules and of kmod/."""
    names = ["bzImage", "rootfs.ext4"]
    for tree in ("modules", "kmod"):
        names += [str(p.relative_to(artifacts)) for p in (artifacts / tree).rglob("*")
                  if p.is_file()]
    return {name: file_sha256(artifacts / name) for name in sorted(names)}


def test_reproducer_rebuilds_every_artifact_identically(kernel_build, tmp_path):
    layout = kernel_build.layout
    image = records.load(ImageRecord, layout)
    base_tarball = layout.base_tarballs / image.base["tarball"]
    expected = artifact_digests(layout.artifacts)
    assert any(name.endswith("/kvm.ko") for name in expected)
    assert "kmod/sched_inject.ko" in expected and "kmod/inject_target.ko" in expected
    script_text = layout.reproducer.read_text()
    assert str(layout.build) not in script_text  # no path of the original run
    assert (layout.artifacts / "Dockerfile").is_file()

    away = layout.build.with_name(layout.build.name + ".out-of-reach")
    os.rename(layout.build, away)
    try:
        out = tmp_path / "reproduced"
        proc = subprocess.run(
            [away / "artifacts" / "reproducer.sh", out],
            env={**os.environ, "BASE_TARBALL": str(base_tarball)},
            capture_output=True, text=True, timeout=2400,
        )
    finally:
        os.rename(away, layout.build)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "every artifact is identical to the recorded build" in proc.stdout
    for step in ("fetch", "patch", "config", "kernel", "kmod", "image: the base",
                 "image: docker build", "image: export"):
        assert f"==> {step}" in proc.stdout, step
    assert artifact_digests(out / "artifacts") == expected
    # Everything landed in the given directory, in the build dir's layout.
    for path in ("src/linux/Makefile", "kbuild/.config", "kmod/sched_inject.ko",
                 "artifacts/rootfs.ext4"):
        assert (out / path).is_file(), path


def test_reproducer_refuses_a_directory_in_use(kernel_build, tmp_path):
    (tmp_path / "something").write_text("x")
    proc = subprocess.run([kernel_build.layout.reproducer, tmp_path], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "is not empty" in proc.stderr
