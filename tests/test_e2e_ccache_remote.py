"""kernel.ccache_remote on a real redis-server and a real kernel build: a second
machine builds from the shared cache, and a server killed mid-build costs a
warning and some local compiles, never the build.

Machine A is a fresh build dir of the shared e2e build's inputs with the
shared local ccache (warm from conftest.kernel_build) in "reshare" mode, so
its local hits fill the server.  Machine B is another fresh build dir with
an empty local ccache of its own (its cache dir lends only the downloads and
package tarballs), reading the server read-only, as a fork's CI would; the
server is killed when B has done 90% of A's compiles.  bench/ccache_remote.py
measures the time ratio and the hit rate without the kill.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT

from pipeline import ccache

pytestmark = pytest.mark.slow

# A lent cache dir: everything a machine keeps but its compiled objects.
LENT = ("tarballs", "debian", "apt-versions.json", "trees", "base", "accel.json")


def second_machine_cache(shared: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in LENT:
        if (shared / name).exists():
            (dest / name).symlink_to(shared / name)
    return dest


def kernel_argv(build: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", "kernel", f"paths.build={build}", *overrides]


def kernel_record(build: Path) -> dict:
    return json.loads((build / "artifacts" / "kernel.json").read_text())


def secrets_on_disk(build: Path, secret: str) -> list[str]:
    return [str(path) for top in ("logs", "records", "artifacts")
            for path in (build / top).rglob("*")
            if path.is_file() and secret.encode() in path.read_bytes()]


def test_a_second_machine_builds_from_redis_and_survives_its_death(kernel_build, redis_server,
                                                                   tmp_path):
    shared = kernel_build.layout
    a, b = ROOT / "build" / "test-remote-a", ROOT / "build" / "test-remote-b"
    for build in (a, b):
        shutil.rmtree(build, ignore_errors=True)
    try:
        fill = subprocess.run(kernel_argv(a, f"kernel.ccache_remote={redis_server.url}",
                                          "kernel.ccache_remote_mode=reshare"),
                              cwd=ROOT, capture_output=True, text=True)
        assert fill.returncode == 0, fill.stdout[-3000:] + fill.stderr[-3000:]
        filled = kernel_record(a)["ccache_stats"]
        assert filled["compiles"] > 1000 and redis_server.keys() >= filled["compiles"]
        assert filled["remote"] == f"redis://***@127.0.0.1:{redis_server.port}"

        cache = second_machine_cache(shared.cache, tmp_path / "cache-b")
        stats_log = b / "logs" / "kernel.ccache-stats"
        with open(tmp_path / "b.out", "w") as out:
            build_b = subprocess.Popen(
                kernel_argv(b, f"paths.cache={cache}", f"kernel.ccache_remote={redis_server.url}",
                            "kernel.ccache_remote_mode=read-only"),
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
            killed_at = None
            while build_b.poll() is None:
                done = ccache.Stats.from_log(stats_log).compiles if stats_log.exists() else 0
                if killed_at is None and done >= 0.9 * filled["compiles"]:
                    redis_server.kill()
                    killed_at = done
                time.sleep(0.5)
        output = (tmp_path / "b.out").read_text()
        assert build_b.returncode == 0, output[-4000:]
        assert killed_at is not None, "the build ended before the kill"

        got = kernel_record(b)["ccache_stats"]
        # Before the kill every object came from the server; after it, B compiled.
        assert got["remote_hits"] >= 0.98 * killed_at
        assert got["misses"] > 0 and got["remote_errors"] > 0
        assert "the remote failed" in output and "uses the local cache only" in output
        # The same bytes from every machine, with and without the remote.
        expected = kernel_record(shared.build)
        for build in (a, b):
            record = kernel_record(build)
            assert record["bzImage_sha256"] == expected["bzImage_sha256"], build
            assert record["module_sha256"] == expected["module_sha256"], build
        for build in (a, b):
            assert secrets_on_disk(build, redis_server.PASSWORD) == [], build
        assert redis_server.PASSWORD not in fill.stdout + fill.stderr + output
    finally:
        for build in (a, b):
            shutil.rmtree(build, ignore_errors=True)
