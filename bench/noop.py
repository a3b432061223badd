#!/usr/bin/env python3
"""Benchmark: `doit build` with nothing to do.

    .venv/bin/python bench/noop.py [--runs N] [--build build]

Needs a finished `doit build` in --build (run once more first, so every task
is up to date).  Times N runs of `doit build` there (loading the tasks,
checking each one, writing reproducer.sh and the manifest when they
changed), and N runs of `python -m doit --version` (the interpreter and
doit's own start-up: the floor no task loading can go under), alternating.
Prints the median, min and max of each and the no-op's median against its
target (0.3 s).

Python writes its bytecode cache as usual for these runs: a
PYTHONDONTWRITEBYTECODE in the environment (some sandboxes set it) is
dropped, or every run would compile the pipeline's modules again.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_S = 0.3


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--build", default="build", help="a build dir `doit build` finished")
    args = parser.parse_args()

    env = {name: value for name, value in os.environ.items()
           if name != "PYTHONDONTWRITEBYTECODE"}
    noop = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "build",
            f"paths.build={args.build}"]
    floor = [sys.executable, "-m", "doit", "--version"]
    # Settle: the first run may still write the manifest or the bytecode cache.
    subprocess.run(noop, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    times: dict[str, list[float]] = {"noop": [], "floor": []}
    for _ in range(args.runs):
        times["noop"].append(timed(noop, env))
        times["floor"].append(timed(floor, env))
    result = {name: spread(values) for name, values in times.items()}
    result["target_s"] = TARGET_S
    print(f"no-op doit build   median {result['noop']['median']:.3f} s  "
          f"(min {result['noop']['min']:.3f}, max {result['noop']['max']:.3f}; "
          f"target <= {TARGET_S} s)")
    print(f"doit --version     median {result['floor']['median']:.3f} s  (the floor)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
