#!/usr/bin/env python3
"""Benchmark: what the pipeline adds to booting the guest.

    .venv/bin/python bench/boot.py [--runs N] [--build build]

Needs a finished `doit build` in --build.  In one run, alternating N times:
- `python -m pipeline boot` (settings, accelerator choice, QEMU, parsing);
- a bare QEMU with the same kernel, image, accelerator and ports;
each timed from start to the first KTAP line on the ktap port.  Prints the
median of each and their ratio (target < 1.3).  Then the image rebuild time
after a change to one file of the final stage's last layers (images/suites/).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline import guest, settings  # noqa: E402 - after the path set-up
from pipeline.qemu import ACCELERATORS  # noqa: E402


def time_to_first_ktap(argv: list[str], ktap: Path, cwd: Path | None = None) -> float:
    ktap.unlink(missing_ok=True)
    started = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.monotonic() - started < 120:
            if ktap.exists() and ktap.stat().st_size > 0:
                return time.monotonic() - started
            if proc.poll() is not None and not (ktap.exists() and ktap.stat().st_size):
                break
            time.sleep(0.005)
        raise SystemExit(f"no KTAP line from: {' '.join(argv)}")
    finally:
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--build", default="build")
    args = parser.parse_args()
    s = settings.load(ROOT, {"paths.build": args.build})

    via_pipeline = [sys.executable, "-m", "pipeline", "boot", f"paths.build={args.build}"]
    accel = json.loads((s.layout.cache / "accel.json").read_text())["accel"]
    with tempfile.TemporaryDirectory() as tmp:
        bare_ktap = Path(tmp) / "ktap.log"
        command = guest.qemu_command(s, ACCELERATORS[accel], "boot")
        command.ports = {"ktap": bare_ktap, "status": Path(tmp) / "status"}
        bare = command.argv()
        pipeline_times, bare_times = [], []
        for _ in range(args.runs):
            pipeline_times.append(time_to_first_ktap(via_pipeline, s.layout.results / "ktap.log",
                                                     cwd=ROOT))
            bare_times.append(time_to_first_ktap(bare, bare_ktap))

    suite = ROOT / "images" / "suites" / "boot"
    original = suite.read_text()
    doit = [sys.executable, "-m", "doit", "-f", str(ROOT / "dodo.py"), "image",
            f"paths.build={args.build}"]
    try:
        suite.write_text(original + "# benchmark edit\n")
        started = time.monotonic()
        subprocess.run(doit, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
        rebuild = time.monotonic() - started
    finally:
        suite.write_text(original)
        subprocess.run(doit, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)

    result = {
        "accelerator": accel,
        "runs": args.runs,
        "pipeline_to_first_ktap_s": round(statistics.median(pipeline_times), 2),
        "bare_qemu_to_first_ktap_s": round(statistics.median(bare_times), 2),
        "ratio": round(statistics.median(pipeline_times) / statistics.median(bare_times), 3),
        "ratio_target": 1.3,
        "image_rebuild_after_suite_edit_s": round(rebuild, 1),
    }
    print(f"pipeline boot -> first KTAP line  {result['pipeline_to_first_ktap_s']:6.2f} s")
    print(f"bare QEMU     -> first KTAP line  {result['bare_qemu_to_first_ktap_s']:6.2f} s")
    print(f"ratio                             {result['ratio']:6.3f}   (target < 1.3)")
    print(f"image rebuild, one suite file changed: {rebuild:.1f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
