"""Shared fixtures: a fake kernel tree, a local HTTP server and Redis, settings, the real
kernel build the e2e tests share; the helpers they use are in tests/helpers.py."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    CLONE,
    E2E_BUILD,
    FAKE_MAKEFILE,
    FAKE_X86_C,
    HOLDER,
    ROOT,
    RedisServer,
    Server,
    clone_pipeline,
    doit,
    show,
)

from pipeline import settings, tasks


@pytest.fixture(scope="session", autouse=True)
def _logging():
    tasks.setup_logging()


@pytest.fixture
def fake_tree_files() -> dict[str, str]:
    return {"Makefile": FAKE_MAKEFILE, "arch/x86/kvm/x86.c": FAKE_X86_C}


@pytest.fixture
def http_server():
    server = Server()
    yield server
    server.close()


@pytest.fixture
def make_settings(tmp_path):
    """Settings rooted at tmp_path with a private build and cache directory."""

    def make(**overrides: str) -> settings.Settings:
        values = {"paths.build": "build", "paths.cache": "cache", **overrides}
        return settings.load(tmp_path, values)

    return make


@pytest.fixture(scope="session")
def kernel_build() -> settings.Settings:
    doit("build", f"paths.build={E2E_BUILD}")
    return settings.load(ROOT, {"paths.build": E2E_BUILD})


@pytest.fixture(scope="session")
def docker_repro(kernel_build):
    """The clone's repro in the toolchain container against the e2e build's manifest
    (test_e2e_repro).  Its clean rebuild (ccache recache) leaves the container's
    ccache warm for the bisection's builds (test_e2e_bisect), which run in the
    container too: one cold kernel build fewer in CI."""
    # Other tests rerun single steps of the shared build (which drops its manifest
    # until the next `doit build`): a user would build first, and so do we.
    doit("build", f"paths.build={E2E_BUILD}")
    shutil.rmtree(CLONE.parent, ignore_errors=True)
    CLONE.mkdir(parents=True)
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    subprocess.run(["rsync", "-a", "--from0", "--files-from=-", f"{ROOT}/", f"{CLONE}/"],
                   input=tracked, check=True)
    proc = clone_pipeline("repro", "kernel.runtime=docker",
                    f"repro.against={kernel_build.layout.manifest}")
    report_path = CLONE / "build" / "repro" / "report.json"
    assert report_path.is_file(), show(proc)
    return proc, json.loads(report_path.read_text())


@pytest.fixture
def hold_build_dir():
    """hold(build): another process holding that build dir's lock, as a running task
    does; killed at the end of the test."""
    holders = []

    def hold(build: Path) -> subprocess.Popen:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(build)], cwd=ROOT,
                                  stdout=subprocess.PIPE, text=True)
        holders.append(holder)
        assert holder.stdout.readline() == "held\n"
        return holder

    yield hold
    for holder in holders:
        holder.kill()
        holder.wait()


@pytest.fixture
def redis_server(tmp_path):
    server = RedisServer(tmp_path / "redis")
    yield server
    server.kill()
