"""Tasks of the KVM kernel pipeline.  `doit list` is the table of contents.

This file only declares: each action is one function of `pipeline/`.  A task
is stale when its inputs, its settings or the code of its step changed.
Settings come from pipeline/default.toml, an optional pipeline.toml, and
`section.key=value` arguments, e.g. `doit build kernel.variant=debug`.
"""

from pathlib import Path

from pipeline import boot, fetch, image, kbuild, kconfig, kmake, patch, tasks

ROOT = Path(__file__).resolve().parent
tasks.setup_logging()
S = tasks.load_settings(ROOT)
S.build_dir.mkdir(parents=True, exist_ok=True)

DOIT_CONFIG = {
    "default_tasks": ["build"],
    "backend": "sqlite3",
    "dep_file": str(S.build_dir / ".doit.db"),
    "verbosity": 2,
}


def task_fetch():
    """Fetch the kernel tree into build/src/linux (source.kind: debian, tarball, local, git)."""
    return {
        "actions": [tasks.action("fetch", fetch.fetch_tree, S)],
        # Only the identity of the tree matters: refetching for a code change would
        # throw away the kernel build for nothing.
        "uptodate": [lambda: fetch.is_current(S)],
        "targets": [fetch.record_path(S)],
        "clean": [tasks.remover(S.tree_dir, fetch.record_path(S))],
    }


def task_patch():
    """Apply the KVM preempt-count series from patches/kvm/ (all or nothing)."""
    return {
        "actions": [tasks.action("patch", patch.patch_tree, S)],
        "file_dep": [fetch.record_path(S), *patch.all_series_files(S)],
        "uptodate": [tasks.unchanged(S.digest("patch"), patch)],
        "targets": [patch.stamp_path(S)],
        "clean": True,
    }


def task_config():
    """Configure: tinyconfig + kconfig/ fragments for the variant, every option verified."""
    return {
        "actions": [tasks.action("config", kconfig.configure, S)],
        "file_dep": [patch.stamp_path(S), *kconfig.fragment_paths(S)],
        "uptodate": [tasks.unchanged({"variant": S.kernel.variant,
                                      "fragments": S.kernel.fragments}, kconfig, kmake)],
        "targets": [S.kbuild_dir / ".config"],
        "clean": True,
    }


def task_kernel():
    """Build bzImage and modules; publish them in build/artifacts/."""
    return {
        "actions": [tasks.action("kernel", kbuild.build_kernel, S)],
        "file_dep": [S.kbuild_dir / ".config", patch.stamp_path(S)],
        "uptodate": [tasks.unchanged(None, kbuild, kmake)],
        "targets": [S.artifacts_dir / "bzImage", S.artifacts_dir / "kernel.json",
                    kbuild.modules_manifest(S)],
        "clean": [tasks.remover(S.kbuild_dir, S.artifacts_dir)],
    }


def task_kmod():
    """Build kmod/ (sched_inject.ko, inject_target.ko) against the kernel, W=1, warning-free."""
    return {
        "actions": [tasks.action("kmod", kbuild.build_kmod, S)],
        "file_dep": [kbuild.modules_manifest(S), *kbuild.kmod_sources(S)],
        "uptodate": [tasks.unchanged(None, kbuild, kmake)],
        "targets": [kbuild.kmod_manifest(S)],
        "clean": [tasks.remover(S.build_dir / "kmod", S.artifacts_dir / "kmod",
                                kbuild.kmod_manifest(S))],
    }


def task_image():
    """Bake the guest image in Docker (images/) into build/artifacts/rootfs.ext4."""
    return {
        "actions": [tasks.action("image", image.build_image, S)],
        "file_dep": [kbuild.modules_manifest(S), kbuild.kmod_manifest(S),
                     *image.image_inputs(S)],
        "uptodate": [tasks.unchanged(S.digest("image"), image)],
        "targets": [S.artifacts_dir / "rootfs.ext4", S.artifacts_dir / "image.json"],
        "clean": [tasks.remover(S.image_dir, S.artifacts_dir / "rootfs.ext4",
                                S.artifacts_dir / "image.json")],
    }


def task_build():
    """Everything up to a bootable guest: fetch, patch, config, kernel, kmod, image."""
    return {"actions": None,
            "task_dep": ["fetch", "patch", "config", "kernel", "kmod", "image"]}


def task_boot():
    """Boot the guest under QEMU and run the boot checks; results in build/results/."""
    return {
        "actions": [tasks.action("boot", boot.boot_checks, S)],
        "task_dep": ["kernel", "kmod", "image"],
        "verbosity": 2,
    }


def task_test():
    """Boot the guest and run the suite (boot.suite); JUnit, JSON, KTAP in build/results/."""
    return {
        "actions": [tasks.action("test", boot.test_suite, S)],
        "task_dep": ["kernel", "kmod", "image"],
        "verbosity": 2,
    }
