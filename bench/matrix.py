#!/usr/bin/env python3
"""Benchmark: the matrix's wall time with `doit -n 1` and `doit -n 2`.

    .venv/bin/python bench/matrix.py [--jobs 1 2] [--cells GLOBS] [--keep] [SETTING ...]

Runs `doit -n N matrix` once for each N of --jobs, one pass after the other,
each in a fresh build dir (build/bench-matrix-K-nN/, removed first), over
the picked cells (default: every cell of the default matrix), and prints
each pass's wall time, each cell's time and outcome, and how many of its
kernel's compiles ccache answered.  SETTINGs (section.key=value) go to every
pass; kernel.runtime=docker is the default (every cell compiles at /build
in the toolchain container); on the host too, cells of one kernel line share
ccache's objects, whatever their build dirs.

Each pass starts from clean build dirs but finds ccache as the passes before
it left it: the first pass over a new kernel line pays its cold compiles.
`--jobs 2 1 2` gives the first pass's time and then -n 1 against -n 2 with
a warm cache, which is what a team re-running the matrix after a change sees.
The ratio -n 2 / -n 1 of the last two passes is the result; absolute times
vary with the machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from pipeline import records, settings  # noqa: E402
from pipeline.drivers import matrix  # noqa: E402
from pipeline.records import KernelRecord  # noqa: E402


def ccache_share(build_dir: str | None) -> str:
    """'hits/compiles' of the cell's kernel build, as its kernel.json records them."""
    if not build_dir:  # a cell that did not run
        return "-"
    layout = settings.load(ROOT, {"paths.build": build_dir}).layout
    record = records.load(KernelRecord, layout)
    stats = record.ccache_stats if record else None
    if stats is None or not stats.compiles:
        return "-"
    return f"{stats.local_hits + stats.remote_hits}/{stats.compiles}"


def run_pass(number: int, jobs: int, cells: str, words: list[str]) -> dict:
    """One `doit -n JOBS matrix` in a fresh build dir; its wall time and summary."""
    build = ROOT / "build" / f"bench-matrix-{number}-n{jobs}"
    shutil.rmtree(build, ignore_errors=True)
    argv = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "-n", str(jobs),
            "matrix", f"paths.build={build}", "kernel.runtime=docker", *words]
    if cells:
        argv.append(f"matrix.cells={cells}")
    print(f"=== pass {number}: doit -n {jobs} matrix", flush=True)
    print("$", " ".join(argv), flush=True)
    log = ROOT / "build" / f"bench-matrix-{number}-n{jobs}.log"
    started = time.monotonic()
    with log.open("w") as out:
        code = subprocess.run(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - started
    summary_path = build / "matrix" / "summary.json"
    summary = records.read_typed(summary_path, matrix.MatrixSummary, matrix.MATRIX_SCHEMA)
    cells_seen = [{"cell": cell.cell, "outcome": cell.outcome, "seconds": cell.seconds,
                   "ccache": ccache_share(cell.build_dir or None)}
                  for cell in (summary.cells if summary else [])]
    print(f"    exit {code}, {seconds / 60:.1f} min (log: {log})", flush=True)
    return {"pass": number, "jobs": jobs, "exit_code": code, "seconds": round(seconds),
            "build": build, "cells": cells_seen}


def print_pass(one: dict) -> None:
    print(f"pass {one['pass']}: doit -n {one['jobs']} matrix, {one['seconds'] / 60:.1f} min,"
          f" exit {one['exit_code']}", flush=True)
    for cell in one["cells"]:
        seconds = "-" if cell["seconds"] is None else f"{cell['seconds']:.0f} s"
        print(f"  {cell['cell']:<22} {cell['outcome']:<22} {seconds:>8}"
              f"   ccache {cell['ccache']}", flush=True)


def report(passes: list[dict]) -> None:
    print()
    for one in passes:
        print_pass(one)
    by_jobs = {one["jobs"]: one for one in passes}  # the last pass of each N
    if 1 in by_jobs and 2 in by_jobs:
        ratio = by_jobs[2]["seconds"] / by_jobs[1]["seconds"]
        print(f"-n 2 / -n 1 (passes {by_jobs[2]['pass']} and {by_jobs[1]['pass']}):"
              f" {ratio:.2f}")
    print(json.dumps([{key: value for key, value in one.items() if key != "build"}
                      for one in passes]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2],
                        help="one pass per value, in order (default: 1 2)")
    parser.add_argument("--cells", default="", help="matrix.cells globs (default: all)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the passes' build dirs (about 3 GB a cell)")
    parser.add_argument("settings", nargs="*", help="section.key=value for every pass")
    args = parser.parse_args()

    passes = []
    for number, jobs in enumerate(args.jobs, 1):
        passes.append(run_pass(number, jobs, args.cells, args.settings))
        print_pass(passes[-1])  # a long run cut short still shows its finished passes
        if not args.keep:
            shutil.rmtree(passes[-1]["build"], ignore_errors=True)
    report(passes)
    return 0 if all(one["exit_code"] == 0 for one in passes) else 1


if __name__ == "__main__":
    sys.exit(main())
