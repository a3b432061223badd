#!/usr/bin/env python3
"""Benchmark: what the pipeline costs on top of the kernel's own make.

    .venv/bin/python bench/build.py [--keep]

In one run, on one machine, ccache off for both:
1. cold `doit kernel` (fetch, patch, config, kernel) of the embedded default
   in build/bench/: the Debian tarball and its extracted tree come from the
   download cache (a warm-up fetch in another build dir fills both, as any
   earlier build of this source version did); linking the tree, patching,
   configuration and publishing count as overhead;
2. a bare `make -jN bzImage modules` of the same .config on the same tree in
   a fresh O= directory;
3. a no-op `doit kernel` (nothing changed);
4. what the first build of a new source version pays on top, once: the
   extraction of its archive into the tree cache, timed on its own.
Prints the times and the ratios against the targets (overhead < 10 %,
no-op < 1 s) as a table and as JSON.  Absolute times vary with the machine;
the ratio is the result.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pipeline import records, settings  # noqa: E402
from pipeline.records import SourceRecord  # noqa: E402
from pipeline.sources import treecache  # noqa: E402

BENCH_BUILD = ROOT / "build" / "bench"
# Where the download cache is warmed: kept until the end, because on a
# filesystem mounted with `discard` (this machine's) deleting a 1.5 GB tree
# right before the cold run made its extraction 5x slower.
WARM_BUILD = ROOT / "build" / "bench-warm"


def timed(argv: list[str | Path], **kwargs) -> float:
    # Each side starts with the page cache written back: otherwise the first
    # one pays for flushing the warm-up's 1.5 GB tree while it extracts its own.
    os.sync()
    print("$", " ".join(map(str, argv)), flush=True)
    started = time.monotonic()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, **kwargs)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep build/bench afterwards")
    args = parser.parse_args()

    doit = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py")]
    bench_settings = [f"paths.build={BENCH_BUILD}", "kernel.ccache=off"]
    for leftover in (BENCH_BUILD, WARM_BUILD):
        shutil.rmtree(leftover, ignore_errors=True)
    # Warm the download cache first, so neither side pays for the network.
    subprocess.run([*doit, "fetch", f"paths.build={WARM_BUILD}"], check=True,
                   stdout=subprocess.DEVNULL)

    cold = timed([*doit, "kernel", *bench_settings], cwd=ROOT)
    noop = timed([*doit, "kernel", *bench_settings], cwd=ROOT)

    layout = settings.load(ROOT, {"paths.build": str(BENCH_BUILD)}).layout
    bare = BENCH_BUILD / "bare"
    bare.mkdir()
    shutil.copy(layout.kernel_config, bare / ".config")
    make = ["make", "-C", str(layout.tree), f"O={bare}", "ARCH=x86_64",
            f"-j{os.cpu_count()}", "bzImage", "modules"]
    bare_seconds = timed(make)

    # Last, so the 1.5 GB it writes and deletes cannot slow the other sides.
    archive = Path(records.require(SourceRecord, layout).resolved["tarball"])
    extracted = BENCH_BUILD / "first-extraction"
    extracted.mkdir()
    first_extraction = timed(treecache.extract_argv(archive, extracted))

    result = {
        "cold_doit_kernel_s": round(cold, 1),
        "bare_make_s": round(bare_seconds, 1),
        "overhead_ratio": round(cold / bare_seconds, 3),
        "overhead_target": 1.10,
        "noop_doit_kernel_s": round(noop, 2),
        "noop_target_s": 1.0,
        "first_extraction_s": round(first_extraction, 1),
        "first_build_of_a_version_ratio": round((cold + first_extraction) / bare_seconds, 3),
    }
    print()
    print(f"cold doit kernel   {cold:8.1f} s")
    print(f"bare make          {bare_seconds:8.1f} s")
    print(f"ratio              {result['overhead_ratio']:8.3f}   (target < 1.10)")
    print(f"no-op doit kernel  {noop:8.2f} s   (target < 1 s)")
    print(f"first extraction   {first_extraction:8.1f} s   (once per source version; "
          f"ratio with it {result['first_build_of_a_version_ratio']:.3f})")
    print(json.dumps(result))
    shutil.rmtree(WARM_BUILD)
    if not args.keep:
        shutil.rmtree(BENCH_BUILD)


if __name__ == "__main__":
    main()
