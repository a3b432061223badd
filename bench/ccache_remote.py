#!/usr/bin/env python3
"""Benchmark: a second machine's kernel build from a shared ccache on Redis.

    .venv/bin/python bench/ccache_remote.py [--build-root DIR]

Starts its own redis-server (127.0.0.1, a free port, memory only) and builds
the embedded default's kernel (`python -m pipeline kernel`) four times in one
run, each in a fresh build dir at the same path (as on CI runners):

1. machine one, cold: an empty local ccache; the compiles fill the server;
2. machine one again: its local cache is warm now (the reference: what a
   warm local cache alone gives);
3. machine two: an empty local ccache of its own, everything else the same;
   its objects come from the server;
4. machine three, likewise, but the server is killed (SIGKILL) when it has
   done 90% of machine one's compiles: the build must still finish, compiling
   the rest here, with the pipeline's warning.

Each machine's cache dir lends the downloads and package tarballs of the
usual cache (so only compiled objects differ).  Prints each build's make
time and wall time, the ratios to the cold build (target for machine two:
under 0.35), machine two's remote hit rate (target: over 95%) and the
server's memory for one build, and checks that every bzImage is identical.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import ccache, settings  # noqa: E402 - after the path set-up

LENT = ("tarballs", "debian", "apt-versions.json", "trees", "base", "accel.json")


def start_redis(workdir: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no", "--dir", str(workdir)],
                            stdout=subprocess.DEVNULL)
    for _ in range(100):
        if subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                          text=True).stdout.strip() == "PONG":
            return proc, f"redis://127.0.0.1:{port}"
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("redis-server did not come up")


def redis_info(url: str, field: str) -> str:
    port = url.rsplit(":", 1)[1]
    info = subprocess.run(["redis-cli", "-p", port, "info", "memory"], capture_output=True,
                          text=True, check=True).stdout
    return next(line.split(":", 1)[1].strip() for line in info.splitlines()
                if line.startswith(field + ":"))


def machine_cache(shared: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in LENT:
        if (shared / name).exists():
            (dest / name).symlink_to(shared / name)
    return dest


def build(build_dir: Path, cache: Path, url: str, kill_at: int = 0,
          redis: subprocess.Popen | None = None) -> dict:
    """One `pipeline kernel` in a fresh `build_dir`; with `kill_at`, SIGKILL `redis`
    once the build's stats log shows that many compiles."""
    shutil.rmtree(build_dir, ignore_errors=True)
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", "kernel",
                                 f"paths.build={build_dir}", f"paths.cache={cache}",
                                 f"kernel.ccache_remote={url}"],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)
        stats_log = build_dir / "logs" / "kernel.ccache-stats"
        while proc.poll() is None:
            if kill_at and redis and redis.poll() is None and stats_log.exists() and \
                    ccache.Stats.from_log(stats_log).compiles >= kill_at:
                redis.kill()
            time.sleep(0.5)
        out.seek(0)
        output = out.read()
    if proc.returncode != 0:
        raise SystemExit(f"the build in {build_dir} failed:\n{output[-3000:]}")
    record = json.loads((build_dir / "artifacts" / "kernel.json").read_text())
    return {"wall": time.monotonic() - started, "make": record["seconds"]["build"],
            "stats": record["ccache_stats"], "bzImage": record["bzImage_sha256"],
            "warned": "uses the local cache only" in output}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build-root", default=None,
                        help="where its build dir and cache dirs go (default: a temporary dir)")
    args = parser.parse_args()
    shared = settings.load(ROOT, {}).layout.cache
    with tempfile.TemporaryDirectory(dir=args.build_root) as tmp:
        root = Path(tmp)
        redis, url = start_redis(root)
        try:
            build_dir = root / "build"
            runs = {}
            for name, cache in (("cold", machine_cache(shared, root / "cache-1")),
                                ("warm local", root / "cache-1"),
                                ("from redis", machine_cache(shared, root / "cache-2"))):
                print(f"building: {name} ...", flush=True)
                runs[name] = build(build_dir, cache, url)
            memory = redis_info(url, "used_memory")
            print("building: server killed at 90% ...", flush=True)
            runs["redis killed"] = build(build_dir, machine_cache(shared, root / "cache-3"), url,
                                         int(0.9 * runs["cold"]["stats"]["compiles"]), redis)
        finally:
            redis.kill()
    cold = runs["cold"]
    print(f"{'build':12} {'make s':>8} {'wall s':>8} {'make ratio':>11} {'wall ratio':>11}  ccache")
    for name, run in runs.items():
        stats = run["stats"]
        print(f"{name:12} {run['make']:8.1f} {run['wall']:8.1f} {run['make'] / cold['make']:11.2f} "
              f"{run['wall'] / cold['wall']:11.2f}  {stats['compiles']} compiles: "
              f"{stats['local_hits']} local, {stats['remote_hits']} remote, {stats['misses']} "
              "compiled")
    remote = runs["from redis"]["stats"]
    rate = remote["remote_hits"] / remote["compiles"]
    print(f"machine two: make ratio {runs['from redis']['make'] / cold['make']:.2f} to the cold "
          f"build (target < 0.35), remote hit rate {rate:.1%} (target > 95%)")
    print(f"the server holds {int(memory) / 2**20:.0f} MiB for one kernel build")
    killed = runs["redis killed"]
    print(f"server killed at 90%: the build finished, {killed['stats']['misses']} objects "
          f"compiled here, {killed['stats']['remote_errors']} remote failures counted, "
          f"warning {'printed' if killed['warned'] else 'MISSING'}")
    if len({run["bzImage"] for run in runs.values()}) != 1:
        raise SystemExit("the bzImages differ")
    if not killed["warned"] or not killed["stats"]["misses"]:
        raise SystemExit("the killed server was not noticed")
    print("every bzImage is identical")


if __name__ == "__main__":
    main()
