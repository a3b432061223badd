"""The modules against the other kernels: the debug variant and Linux 6.1.

Each builds a kernel of its own (kept in build/test-<name> between runs):
the debug one exercises the trampoline's annotations for real (ORC, return
thunks, IBT, objtool), 6.1 the compatibility probes.
"""

from __future__ import annotations

import subprocess

import pytest
from conftest import ROOT, doit

from pipeline import settings

pytestmark = pytest.mark.slow


def build_kmod(name: str, *overrides: str) -> settings.Settings:
    build = f"build/test-{name}"
    doit("kmod", f"paths.build={build}", *overrides)
    return settings.load(ROOT, {"paths.build": build,
                                **dict(o.split("=", 1) for o in overrides)})


@pytest.fixture(scope="session")
def debug_build() -> settings.Settings:
    return build_kmod("debug", "kernel.variant=debug")


@pytest.fixture(scope="session")
def linux61_build() -> settings.Settings:
    return build_kmod("6.1", "source.package=linux-source-6.1")


def sections(ko) -> set[str]:
    out = subprocess.run(["readelf", "-SW", str(ko)], capture_output=True, text=True,
                         check=True).stdout
    return {word for line in out.splitlines() for word in line.split() if word.startswith(".")}


def test_debug_kernel_config(debug_build):
    config = (debug_build.artifacts_dir / "kernel.config").read_text()
    for option in ("CONFIG_PREEMPT_COUNT=y", "CONFIG_PROVE_LOCKING=y", "CONFIG_KASAN=y",
                   "CONFIG_UNWINDER_ORC=y", "CONFIG_MITIGATION_RETHUNK=y",
                   "CONFIG_X86_KERNEL_IBT=y"):
        assert option in config


def test_debug_modules_carry_orc_and_return_sites(debug_build):
    """objtool ran silent (the kmod task fails on any warning) and annotated the modules."""
    log = (debug_build.build_dir / "logs" / "kmod.log").read_text()
    assert "warning" not in log.lower()
    ko = debug_build.artifacts_dir / "kmod" / "sched_inject.ko"
    found = sections(ko)
    assert {".orc_unwind", ".orc_unwind_ip", ".return_sites"} <= found, sorted(found)


def test_modules_build_against_linux_6_1(linux61_build):
    meta = (linux61_build.artifacts_dir / "kernel.json").read_text()
    assert '"kernel_version": "6.1.' in meta
    for name in ("sched_inject.ko", "inject_target.ko"):
        assert (linux61_build.artifacts_dir / "kmod" / name).is_file()
