#!/usr/bin/env python3
"""Benchmark: what a first kernel build costs through the pipeline, against bare make.

    .venv/bin/python bench/build.py [--rounds N] [--keep]

Three sides, each building the embedded default kernel from nothing, run in
turn round after round (the order rotates each round, so no side always runs
first on a cold page cache or right after a deletion):

- bare:        what a kernel developer would type for the same kernel, in a
               fresh O= directory of the same tree, no ccache: the config
               stage's own commands (tinyconfig, merge_config.sh with the
               same fragments, olddefconfig; the .config must come out the
               reference's), then `make -jN bzImage modules` and
               `modules_install`;
- doit-off:    `doit kernel kernel.ccache=off` in a fresh build dir (linking
               the tree, patching, configuring, building, publishing);
- doit-cold:   the same with ccache on and an empty cache: a new user's first
               build, which also fills the cache for every later one.

The download and tree caches are warmed once before the first round and
shared (read only) by every side, so no side pays for the network or the
first extraction of the archive; that extraction is timed once on its own.
Prints each side's median, min and max and the ratios of the medians against
the targets (doit-off/bare <= 1.02, doit-cold/bare <= 1.10), as a table and
as JSON.  Absolute times vary with the machine; the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pipeline import kconfig, records, settings  # noqa: E402
from pipeline.records import SourceRecord  # noqa: E402
from pipeline.sources import treecache  # noqa: E402

BENCH = ROOT / "build" / "bench"
# The bench's own cache root: the real download and tree caches linked in,
# ccache/ its own, emptied before every doit-cold build.
BENCH_CACHE = BENCH / "cache"
SHARED_CACHE_ENTRIES = ("debian", "tarballs", "trees", "apt-versions.json")
TARGETS = {"doit-off": 1.02, "doit-cold": 1.10}
SIDES = ("doit-off", "bare", "doit-cold")


def timed(argv: list[str | Path], **kwargs) -> float:
    # Each side starts with the page cache written back, so none pays for the
    # previous side's deletions.
    os.sync()
    print("$", " ".join(map(str, argv)), flush=True)
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kwargs)
    return time.monotonic() - started


def doit_argv(*words: str) -> list[str]:
    return [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), *words]


def link_shared_cache(real_cache: Path) -> None:
    BENCH_CACHE.mkdir(parents=True)
    for name in SHARED_CACHE_ENTRIES:
        if (real_cache / name).exists():
            (BENCH_CACHE / name).symlink_to(real_cache / name)


def doit_side(build: Path, ccache: str) -> float:
    if ccache == "on":
        shutil.rmtree(BENCH_CACHE / "ccache", ignore_errors=True)
    seconds = timed(doit_argv("kernel", f"paths.build={build}", f"paths.cache={BENCH_CACHE}",
                              f"kernel.ccache={ccache}"), cwd=ROOT)
    shutil.rmtree(build)
    return seconds


def bare_side(fragments: list[Path], reference_config: Path, tree: Path, out: Path) -> float:
    out.mkdir(parents=True)
    make = ["make", "-C", str(tree), f"O={out}", "ARCH=x86_64", "RUSTC=false"]
    started = time.monotonic()
    timed([*make, "tinyconfig"])
    timed([tree / "scripts/kconfig/merge_config.sh", "-m", "-O", out, out / ".config",
           *fragments], cwd=tree)
    timed([*make, "olddefconfig"])
    if (out / ".config").read_bytes() != reference_config.read_bytes():
        sys.exit(f"the bare side's .config ({out / '.config'}) is not the reference's "
                 f"({reference_config}): the sides would build different kernels")
    timed([*make, f"-j{os.cpu_count()}", "bzImage", "modules"])
    timed([*make, "modules_install", f"INSTALL_MOD_PATH={out / 'install'}"])
    seconds = time.monotonic() - started
    shutil.rmtree(out)
    return seconds


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 1), "min": round(min(values), 1),
            "max": round(max(values), 1), "runs": [round(v, 1) for v in values]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep build/bench afterwards")
    args = parser.parse_args()

    shutil.rmtree(BENCH, ignore_errors=True)
    # The reference build dir: its fetch warms the download and tree caches, its
    # .config is what the bare side must configure and its tree the bare side's source.
    reference = BENCH / "reference"
    subprocess.run(doit_argv("config", f"paths.build={reference}"), check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    config = settings.load(ROOT, {"paths.build": str(reference)})
    layout = config.layout
    link_shared_cache(layout.cache)
    source = records.require(SourceRecord, layout)
    fragments = [config.resolve(str(path))
                 for path in kconfig.fragment_paths(config, source.kernel_version)]

    times: dict[str, list[float]] = {side: [] for side in SIDES}
    for round_number in range(args.rounds):
        order = SIDES[round_number % len(SIDES):] + SIDES[:round_number % len(SIDES)]
        for side in order:
            run = BENCH / f"{side}-{round_number}"
            if side == "bare":
                seconds = bare_side(fragments, layout.kernel_config, layout.tree, run)
            else:
                seconds = doit_side(run, "off" if side == "doit-off" else "on")
            times[side].append(seconds)
            print(f"round {round_number + 1}: {side} {seconds:.1f} s", flush=True)

    # Once per source version, outside the comparison: the tree cache's extraction.
    archive = Path(source.resolved.tarball)
    extracted = BENCH / "first-extraction"
    extracted.mkdir()
    first_extraction = timed(treecache.extract_argv(archive, extracted))

    bare = statistics.median(times["bare"])
    result = {side: spread(values) for side, values in times.items()}
    result["ratios"] = {side: round(statistics.median(times[side]) / bare, 3)
                        for side in TARGETS}
    result["targets"] = TARGETS
    result["first_extraction_s"] = round(first_extraction, 1)
    print()
    print(f"{'side':<10} {'median':>8} {'min':>8} {'max':>8}   ratio to bare (target)")
    for side in SIDES:
        row = result[side]
        ratio = (f"{result['ratios'][side]:.3f} (<= {TARGETS[side]})" if side in TARGETS
                 else "")
        print(f"{side:<10} {row['median']:>8.1f} {row['min']:>8.1f} {row['max']:>8.1f}   {ratio}")
    print(f"first extraction of the archive (once per source version): {first_extraction:.1f} s")
    print(json.dumps(result))
    if not args.keep:
        shutil.rmtree(BENCH)


if __name__ == "__main__":
    main()
