"""End to end on real parts: the image built in dockerd, booted under QEMU.

Shares the kernel and image of conftest.kernel_build (`doit build` in build/test).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import docker
import pytest
from helpers import E2E_BUILD, ROOT

from pipeline import image, settings
from pipeline.errors import BaseImageError
from pipeline.results import Outcome

pytestmark = pytest.mark.slow


def pipeline(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args, f"paths.build={E2E_BUILD}"],
                          cwd=ROOT, capture_output=True, text=True)


def results(s: settings.Settings) -> dict:
    return json.loads((s.layout.results / "results.json").read_text())


def qemu_running(s: settings.Settings) -> bool:
    return subprocess.run(["pgrep", "-f", str(s.layout.results / "ktap.log")],
                          capture_output=True).returncode == 0


def test_boot_checks_pass(kernel_build):
    proc = pipeline("boot")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = results(kernel_build)
    assert data["outcome"] == "passed"
    assert data["accelerator"]["name"] in ("tcg", "kvm") and data["accelerator"]["why"]
    # Under TCG with -cpu max the guest has SVM: nothing may be skipped.
    assert data["counts"] == {"passed": 5, "failed": 0, "skipped": 0, "todo": 0,
                              "crashed": 0, "not_exercised": 0, "errors": 0}
    assert data["skips"] == []
    suite = ET.parse(kernel_build.layout.results / "junit.xml").getroot().find("testsuite")
    assert suite.get("tests") == "5" and suite.get("failures") == "0"
    assert "ok 5 kvm_guest_hlt" in (kernel_build.layout.results / "ktap.log").read_text()
    assert "boot.kvm_guest_hlt" in proc.stdout  # the summary table


def test_a_host_without_nested_virtualisation_fails_unless_its_skips_are_allowed(
        kernel_build):
    """A guest CPU without SVM and VMX, as a KVM host without nested virtualisation
    gives: every KVM case skips, and that run must not pass."""
    no_nested = ("boot.cpu=max,-svm,-vmx", "test.cases=kvm.*,kselftest.count_only")
    proc = pipeline("test", *no_nested)
    assert proc.returncode == Outcome.TEST_FAILURES.value, proc.stdout[-3000:]
    data = results(kernel_build)
    assert "-cpu max,-svm,-vmx" in " ".join(data["qemu_argv"])
    skipped = {"kvm.kvm_under_injection", "kvm.kvm_patch_effect", "kselftest.count_only"}
    assert {skip["name"] for skip in data["skips"]} == skipped
    assert all(skip["reason"] == "the CPU offers neither svm nor vmx" and not skip["allowed"]
               for skip in data["skips"])
    assert "no nested virtualisation" in data["why"]
    assert "test.allow_skips='kvm.*,kselftest.count_only'" in data["why"]
    assert "NOT ALLOWED: fails the run" in proc.stdout

    proc = pipeline("test", *no_nested, "test.allow_skips=kvm.*,boot.kvm_*,kselftest.*")
    assert proc.returncode == 0, proc.stdout[-3000:]
    data = results(kernel_build)
    assert data["outcome"] == "passed" and all(skip["allowed"] for skip in data["skips"])
    assert "3 skipped (allowed: " in data["why"]
    junit = ET.parse(kernel_build.layout.results / "junit.xml").getroot()
    assert sum(int(suite.get("skipped")) for suite in junit.iter("testsuite")) == 3


def test_guest_panic_is_classified_and_qemu_gone(kernel_build):
    proc = pipeline("boot", "boot.cmdline=pipeline.fault=panic")
    assert proc.returncode == Outcome.KERNEL_PANIC.value, proc.stdout[-2000:]
    data = results(kernel_build)
    assert data["outcome"] == "kernel panic"
    assert "Attempted to kill init" in data["why"]
    assert not qemu_running(kernel_build)


def test_guest_hang_is_killed_at_the_deadline(kernel_build):
    started = time.monotonic()
    proc = pipeline("boot", "boot.cmdline=pipeline.fault=hang", "boot.test_timeout=15")
    assert proc.returncode == Outcome.TEST_TIMEOUT.value, proc.stdout[-2000:]
    assert time.monotonic() - started < 60
    assert results(kernel_build)["outcome"] == "test timeout"
    assert not qemu_running(kernel_build)
    # Before the kill, each vCPU's registers, its RIP named from System.map:
    # the hung init sleeps, so both CPUs idle in the kernel.
    vcpus = (kernel_build.layout.results / "vcpus.txt").read_text()
    assert re.search(r"^CPU 0: RIP=ffffffff[0-9a-f]{8} \w+\+0x", vcpus, re.M), vcpus
    assert re.search(r"^CPU 1: RIP=", vcpus, re.M) and "RFL=" in vcpus and "CR3=" in vcpus
    assert "vcpus.txt" in proc.stdout


def test_boot_timeout(kernel_build):
    proc = pipeline("boot", "boot.boot_timeout=1")
    assert proc.returncode == Outcome.BOOT_TIMEOUT.value, proc.stdout[-2000:]
    assert not qemu_running(kernel_build)


def test_dry_run_prints_the_command(kernel_build):
    proc = pipeline("boot", "boot.dry_run=true")
    assert proc.returncode == 0
    assert "qemu-system-x86_64 -nodefaults -no-reboot" in proc.stdout


def test_image_conversion_is_deterministic(kernel_build):
    """Rebuilding the image (engine cache warm) gives the identical rootfs.ext4."""
    first = json.loads((kernel_build.layout.artifacts / "image.json").read_text())
    subprocess.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "forget",
                    "image", f"paths.build={E2E_BUILD}"], cwd=ROOT, check=True,
                   capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "image",
                           f"paths.build={E2E_BUILD}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:]
    second = json.loads((kernel_build.layout.artifacts / "image.json").read_text())
    assert second["rootfs_sha256"] == first["rootfs_sha256"]
    assert second["base"]["digest"].startswith("sha256:")
    fsck = subprocess.run(["e2fsck", "-fn", str(kernel_build.layout.artifacts / "rootfs.ext4")],
                          capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout


@pytest.fixture
def local_registry(tmp_path):
    """Debian's docker-registry on 127.0.0.1 (dockerd trusts loopback registries)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path}/data\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(50):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait()


def test_base_image_from_a_registry(kernel_build, local_registry, tmp_path):
    client = docker.from_env()
    base_ref, _, _ = image.ensure_base(client, kernel_build, reimport=False)
    pushed = f"{local_registry}/pipeline-base:bookworm"
    client.images.get(base_ref).tag(pushed)
    client.images.push(pushed)
    client.images.remove(pushed)
    # A build dir of its own, with the shared kernel's artifacts.
    build = tmp_path / "b"
    (build / "artifacts").mkdir(parents=True)
    for name in ("kernel.json", "kernel.config", "modules"):
        src = kernel_build.layout.artifacts / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, build / "artifacts" / name)
    s = settings.load(ROOT, {"paths.build": str(build), "image.base": pushed})
    record = image.build_image(s)
    assert record.base.reference == pushed
    assert record.base.digest.startswith("sha256:")
    assert (build / "artifacts" / "rootfs.ext4").stat().st_size > 0


def test_missing_registry_image_is_a_clear_error(kernel_build, local_registry):
    s = settings.load(ROOT, {"paths.build": E2E_BUILD,
                             "image.base": f"{local_registry}/nothing:here"})
    with pytest.raises(BaseImageError, match=r"cannot pull image\.base"):
        image.ensure_base(docker.from_env(), s, reimport=False)


def test_qemu_that_cannot_start(kernel_build):
    proc = pipeline("boot", "boot.memory_mb=99999999")
    assert proc.returncode == Outcome.QEMU_FAILED.value, proc.stdout[-2000:]
    assert "qemu failed" in proc.stdout


def test_guest_warn_is_console_badness(kernel_build):
    proc = pipeline("boot", "boot.cmdline=pipeline.fault=warn")
    assert proc.returncode == Outcome.CONSOLE_BADNESS.value, proc.stdout[-2000:]
    data = results(kernel_build)
    assert data["console_findings"][0]["kind"] == "warning"
    assert "inj_warn_write" in data["console_findings"][0]["line"]
