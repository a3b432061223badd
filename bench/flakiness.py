#!/usr/bin/env python3
"""Benchmark: how often each case passes, as a figure.

    .venv/bin/python bench/flakiness.py [--runs N] [--cases GLOBS] [--busy] [--build DIR]

Runs the selected cases (default: the smoke suite) N times, each in a fresh
guest, through `python -m pipeline test test.repeat=N`; with --busy, one
CPU-bound process runs on the host the whole time ("the other core busy" on
a 2-core machine).  Prints each case's pass rate, the runs' outcomes and the
wall time, read from <build>/results/repeat.json.  Every run's console, KTAP,
JUnit and JSON stay in <build>/results/run-N/ (and the run before this one
in <build>/results-history/), so a failure can be read afterwards.

Needs a finished `doit build` in --build (default: build).  Targets, under
TCG on a quiet 2-core machine: 0 failures in 100 runs of the smoke suite and
in 20 of the full default suite.  Ctrl-C stops the runs and still prints
the figures of those that finished.

Also printed: the injector's `sleep_retries` summed over every run, outside
the case that provokes them (smoke.stalled_sleep_still_switches): how many
injected sleeps the host stalled long enough, inside their window, to end
without a context switch, which the injector then slept again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import results  # noqa: E402

# The case that stalls the target on purpose: its retries are not the host's.
PROVOKING_CASE = "smoke.stalled_sleep_still_switches"


def unprovoked_sleep_retries(results_dir: Path) -> int:
    """The injector's sleep_retries over every run's cases but PROVOKING_CASE."""
    total = 0
    for run in results_dir.glob("run-*/results.json"):
        record = results.read_record(run, results.RunResult)
        if record is None:
            continue
        tree = record.tests.tree()
        for names, test in tree.walk():
            if ".".join(names) == PROVOKING_CASE:
                continue
            total += sum(int(line.split()[1]) for line in test.diagnostics
                         if line.startswith("sleep_retries "))
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--cases", default="smoke",
                        help='test.cases globs (default: smoke; "" for the whole default suite)')
    parser.add_argument("--busy", action="store_true",
                        help="keep one CPU-bound process running on the host")
    parser.add_argument("--build", default="build", help="the build dir (paths.build)")
    args = parser.parse_args()

    hog = None
    if args.busy:
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    started = time.monotonic()
    interrupted = False
    try:
        subprocess.run(
            [sys.executable, "-m", "pipeline", "test", f"test.cases={args.cases}",
             f"test.repeat={args.runs}", f"paths.build={args.build}"], cwd=ROOT)
    except KeyboardInterrupt:  # Ctrl-C: still report the runs that finished
        interrupted = True
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    seconds = time.monotonic() - started
    repeat = ROOT / args.build / "results" / "repeat.json"
    if not repeat.is_file():
        print(f"flakiness: no {repeat}: no run finished", file=sys.stderr)
        return 1
    data = json.loads(repeat.read_text())
    runs = data["runs"]  # the runs that finished
    cut_short = f" of {data['planned']} (cut short)" if runs < data.get("planned", runs) else ""
    selection = args.cases or "the default suite"
    print(f"\nflakiness: {selection} x {runs}{cut_short}"
          f" ({'other core busy' if args.busy else 'quiet'}),"
          f" {seconds / 60:.1f} min ({seconds / runs:.0f} s per run)")
    failed_cases = 0
    for name, counts in sorted(data["cases"].items()):
        passed = counts.get("passed", 0)
        failed_cases += passed != runs
        print(f"  {name:<40} {passed:>4}/{runs}  {100 * passed / runs:5.1f} %")
    bad_runs = [n for n, outcome in enumerate(data["outcomes"], 1) if outcome != "passed"]
    print(f"  runs that failed: {bad_runs or 'none'}"
          + (f" (see {ROOT / args.build}/results/run-N/)" if bad_runs else ""))
    retries = unprovoked_sleep_retries(repeat.parent)
    print(f"  injected sleeps ended without a switch by a host stall and slept again"
          f" (sleep_retries, outside {PROVOKING_CASE}): {retries}")
    print(json.dumps({"cases": args.cases, "runs": runs, "busy": args.busy,
                      "seconds": round(seconds), "failed_runs": bad_runs,
                      "unprovoked_sleep_retries": retries,
                      "pass_rate": {name: counts.get("passed", 0) / runs
                                    for name, counts in data["cases"].items()}}))
    if interrupted:
        return 130
    return 0 if not bad_runs and not failed_cases and not cut_short else 1


if __name__ == "__main__":
    sys.exit(main())
