#!/usr/bin/env python3
"""Benchmark: a bisection in a fresh bisect dir, after one build of the same line.

    .venv/bin/python bench/bisection.py [--build build] [--runtime host|docker]

Needs a finished `doit build` of the embedded default in --build (any
commit of the same kernel line: that is all a user has before bisecting).
Makes the seven-commit history of tests/kernel_history.py from the fetched
tree (a commit that does not compile, then msleep() regressed), and runs
`python -m pipeline bisect` over it in a new build dir, for the one case the
regression breaks (smoke.injection_rate, 5 s of injection).  The first step
builds in a build dir of its own for the first time: what it costs after one
build elsewhere is the figure (target 150 s), with the median step and the
whole bisection.  The bisection must name the planted commit.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
from kernel_history import CULPRIT, make_history, pristine_tree  # noqa: E402

from pipeline import records, settings  # noqa: E402
from pipeline.drivers import bisect  # noqa: E402

FIRST_STEP_TARGET_S = 150
BISECT_BUILD = ROOT / "build" / "bench-bisect"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--build", default="build", help="a build dir `doit build` finished")
    parser.add_argument("--runtime", default="host", choices=("host", "docker"))
    args = parser.parse_args()

    layout = settings.load(ROOT, {"paths.build": args.build}).layout
    if not layout.manifest.is_file():
        raise SystemExit(f"no finished build in {layout.build}: run `doit build "
                         f"paths.build={args.build}` first")
    shutil.rmtree(BISECT_BUILD, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="bench-bisect-") as tmp:
        repo, commits = make_history(pristine_tree(layout, Path(tmp)), Path(tmp))
        argv = [sys.executable, "-m", "pipeline", "bisect", "source.kind=git",
                f"source.repo={repo}", f"bisect.good={commits[0]}", "bisect.bad=master",
                "test.cases=smoke.injection_rate", "test.injection_seconds=5",
                f"kernel.runtime={args.runtime}", f"paths.build={BISECT_BUILD}"]
        print("$", " ".join(argv), flush=True)
        started = time.monotonic()
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        total = time.monotonic() - started
        log = BISECT_BUILD.with_suffix(".log")
        log.write_text(proc.stdout + proc.stderr)
        report_path = BISECT_BUILD / "bisect" / "report.json"
        if proc.returncode != 0 or not report_path.is_file():
            raise SystemExit(f"the bisection failed ({proc.returncode}); its output: {log}")
        report = records.read_typed(report_path, bisect.report.BisectReport,
                                    bisect.verdicts.BISECT_SCHEMA)
        if report is None or report.first_bad is None \
                or report.first_bad.commit != commits[CULPRIT]:
            raise SystemExit(f"the bisection named {report and report.first_bad}, not the planted "
                             f"commit {commits[CULPRIT]}; its output: {log}")
    steps = [step.seconds for step in report.steps]
    result = {
        "runtime": args.runtime,
        "first_step_s": steps[0],
        "first_step_target_s": FIRST_STEP_TARGET_S,
        "median_step_s": round(statistics.median(steps), 1),
        "steps": len(steps),
        "step_seconds": steps,
        "total_s": round(total, 1),
    }
    print(f"first step   {steps[0]:7.1f} s   (target <= {FIRST_STEP_TARGET_S} s)")
    print(f"median step  {result['median_step_s']:7.1f} s   ({len(steps)} steps: "
          + ", ".join(f"{s:.0f}" for s in steps) + ")")
    print(f"bisection    {total:7.1f} s   (names the planted commit)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
