"""End to end on real parts: `doit build` of the embedded default, a real kernel.

The build is shared (conftest.kernel_build) and kept in build/test between runs.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess

import pytest
from helpers import E2E_BUILD, ROOT, doit, tasks_run

from pipeline import kconfig, records, settings
from pipeline.errors import ConfigError
from pipeline.records import SourceRecord

pytestmark = pytest.mark.slow

RUN_FUNCTION = "kvm_arch_vcpu_ioctl_run"  # vcpu_run and vcpu_enter_guest are inlined here
# preempt_count lives at pcpu_hot+8 in 6.12 (its own per-CPU __preempt_count in
# 6.1); a %rip-relative inc/dec of it carries the addend -4.
PREEMPT_COUNT_RELOC = re.compile(r"R_X86_64_PC32\s+(pcpu_hot\+0x4|__preempt_count-0x4)$")


def preempt_count_updates(ko, function: str) -> dict[str, int]:
    """Count inc/dec/add/sub of preempt_count in `function` of the module `ko`."""
    out = subprocess.run(["objdump", "-dr", "--no-show-raw-insn", str(ko)], check=True,
                         capture_output=True, text=True).stdout
    counts: dict[str, int] = {}
    inside, last_mnemonic = False, ""
    for line in out.splitlines():
        if line.endswith(">:"):
            inside = line.endswith(f"<{function}>:")
            continue
        if not inside:
            continue
        fields = line.split("\t")
        if len(fields) >= 2 and fields[0].strip().endswith(":") and fields[1]:
            last_mnemonic = fields[1].split()[0]
        elif PREEMPT_COUNT_RELOC.search(line) and last_mnemonic[:3] in ("inc", "dec", "add", "sub"):
            counts[last_mnemonic[:3]] = counts.get(last_mnemonic[:3], 0) + 1
    return counts


def kvm_module(s: settings.Settings, name: str):
    return s.layout.artifacts / "modules" / "kernel" / "arch" / "x86" / "kvm" / name


def test_artifacts(kernel_build):
    art = kernel_build.layout.artifacts
    assert (art / "bzImage").stat().st_size > 500_000
    meta = json.loads((art / "kernel.json").read_text())
    assert meta["source"]["identity"]["package"] == "linux-source-6.12"
    assert meta["source"]["resolved"]["version"]  # the Debian version is recorded
    assert meta["kernel_version"].startswith("6.12.")
    assert meta["patches"]["series"] == "patches/kvm/6.12/series"
    for name in ("kvm.ko", "kvm-amd.ko", "kvm-intel.ko"):
        assert kvm_module(kernel_build, name).is_file(), name
    modules = art / "modules"
    assert "kvm.ko" in (modules / "modules.dep").read_text()
    assert not (modules / "build").exists() and not (modules / "source").exists()
    assert "make" in (art / "reproducer.sh").read_text()
    manifest = (art / "modules.sha256").read_text()
    assert "  modules/kernel/arch/x86/kvm/kvm.ko\n" in manifest


def test_default_config_has_no_preempt_count(kernel_build):
    final = kconfig.parse_config((kernel_build.layout.artifacts / "kernel.config").read_text())
    assert final.get("CONFIG_PREEMPT_NONE") == "y"
    assert final.get("CONFIG_PREEMPT_COUNT") is None
    assert final.get("CONFIG_PREEMPT_DYNAMIC") is None
    assert final["CONFIG_VIRTIO_PCI"] == "y"
    assert final["CONFIG_KVM_AMD"] == "m"


def test_nothing_changed_means_no_work(kernel_build):
    layout = kernel_build.layout
    # Tests before this one may have rerun single steps of the shared build (which
    # removes its manifest until the next `doit build`): build first, as a user would.
    doit("build", f"paths.build={E2E_BUILD}")
    written = {path: path.stat().st_mtime_ns for path in (layout.manifest, layout.reproducer)}
    proc = doit("build", f"paths.build={E2E_BUILD}")
    # Only `build` itself runs: it checks the reproducer and the manifest, rewrites
    # neither, and ends with the manifest's sha256.
    assert tasks_run(proc) == ["build"], proc.stdout
    assert {path: path.stat().st_mtime_ns for path in written} == written
    digest = hashlib.sha256(layout.manifest.read_bytes()).hexdigest()
    assert proc.stdout.rstrip().endswith(f"manifest sha256 {digest}  "
                                         f"{layout.manifest.relative_to(ROOT)}")


def test_patch_is_active_in_kvm_ko_and_absent_without_it(kernel_build):
    """The series changes the binary; patch.enabled=false restores the pristine tree."""
    kvm = kvm_module(kernel_build, "kvm.ko")
    patched = preempt_count_updates(kvm, RUN_FUNCTION)
    assert patched.get("inc", 0) + patched.get("add", 0) >= 1, patched
    assert patched.get("dec", 0) + patched.get("sub", 0) >= 1, patched

    # `doit kernel`, not `build`: the image need not be baked for a kernel that is
    # reverted right after (restored modules leave kmod and image up to date).
    try:
        proc = doit("kernel", f"paths.build={E2E_BUILD}", "patch.enabled=false")
        assert tasks_run(proc) == ["patch", "config", "kernel"]
        # Reverting touched only KVM files, so only KVM objects were recompiled (make's
        # output is in the step's log; the terminal gets a progress line).
        compiled = re.findall(r"^\s+CC(?: \[M\])?\s+(\S+)",
                              kernel_build.layout.log("kernel").read_text(), re.M)
        assert compiled and all("kvm" in path for path in compiled), compiled
        assert preempt_count_updates(kvm, RUN_FUNCTION) == {}
        meta = json.loads((kernel_build.layout.artifacts / "kernel.json").read_text())
        assert meta["patches"]["patches"] == []
    finally:
        proc = doit("build", f"paths.build={E2E_BUILD}")
    # kmod and image stay up to date (same digests); `build` always checks its files.
    assert tasks_run(proc) == ["patch", "config", "kernel", "build"]
    assert preempt_count_updates(kvm, RUN_FUNCTION) == patched


def test_fragment_change_reconfigures_and_rebuilds(kernel_build, tmp_path):
    extra = tmp_path / "extra.config"
    extra.write_text("CONFIG_MAGIC_SYSRQ=y\n")
    config = kernel_build.layout.artifacts / "kernel.config"
    try:
        proc = doit("kernel", f"paths.build={E2E_BUILD}", f"kernel.fragments={extra}")
        assert tasks_run(proc) == ["config", "kernel"]
        assert "CONFIG_MAGIC_SYSRQ=y" in config.read_text()
        # Same settings, the fragment file's content changes: its file_dep catches it.
        extra.write_text("# CONFIG_MAGIC_SYSRQ is not set\n")
        proc = doit("kernel", f"paths.build={E2E_BUILD}", f"kernel.fragments={extra}")
        assert tasks_run(proc) == ["config", "kernel"]
        assert "CONFIG_MAGIC_SYSRQ=y" not in config.read_text()
    finally:
        proc = doit("build", f"paths.build={E2E_BUILD}")
    assert "config" in tasks_run(proc)


def test_virtio_pci_without_virtio_menu_is_caught(kernel_build, tmp_path):
    """The real merge_config + olddefconfig drop VIRTIO_PCI; verification names it."""
    frag = tmp_path / "no-menu.config"
    frag.write_text("# CONFIG_VIRTIO_MENU is not set\n")
    build = tmp_path / "b"
    build.mkdir()
    # Borrow the shared fetched tree and its record; configure writes only into its
    # own kbuild dir.
    (build / "src").symlink_to(kernel_build.layout.tree.parent)
    (build / "records").mkdir()
    shutil.copy(records.path(SourceRecord, kernel_build.layout), build / "records")
    s = settings.load(ROOT, {"paths.build": str(build), "kernel.fragments": str(frag)})
    with pytest.raises(ConfigError) as err:
        kconfig.configure(s)
    assert "CONFIG_VIRTIO_PCI=y (from kconfig/guest.config) came out as CONFIG_VIRTIO_PCI unset" \
        in str(err.value)
    assert not (s.layout.kbuild / ".config").exists()  # no half-made step left behind


def test_a_build_dir_elsewhere_gets_its_objects_from_the_first_ones_compile(kernel_build):
    """ccache's hits do not depend on where the build dir is: a second build of the same
    kernel in a dir at another depth compiles almost nothing (objtool and the real-mode
    setup code are built with -g, whose debug info names the dir: those stay per dir)
    and publishes the same bytes."""
    doit("build", f"paths.build={E2E_BUILD}")  # other tests rebuild single steps of it
    elsewhere = ROOT / "build" / "test-elsewhere" / "at" / "another" / "depth"
    shutil.rmtree(elsewhere.parent.parent.parent, ignore_errors=True)
    doit("kmod", f"paths.build={elsewhere}")
    layout = settings.load(ROOT, {"paths.build": str(elsewhere)}).layout
    stats = json.loads(layout.kernel_json.read_text())["ccache_stats"]
    assert stats["local_hits"] >= 0.95 * stats["compiles"], stats
    for name in ("bzImage", "System.map", "modules.sha256", "kmod.sha256"):
        assert (layout.artifacts / name).read_bytes() == \
            (kernel_build.layout.artifacts / name).read_bytes(), name
    shutil.rmtree(elsewhere.parent.parent.parent)
