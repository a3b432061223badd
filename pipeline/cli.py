"""`python -m pipeline TASK... [section.key=value...]`: the chain with an exit code per outcome.

doit itself exits 0-3 whatever went wrong; scripts and `git bisect run`
need to tell bad settings from a broken machine from a kernel that does not
compile.  This is the one place that turns an outcome into an exit code (the
table is in `pipeline.errors` and the README).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path

from . import chain, settings, tasks
from .drivers import bisect
from .drivers import tasks as all_tasks
from .errors import INTERRUPTED, PipelineError

ROOT = Path(__file__).resolve().parent.parent


def _epilog() -> str:
    lines = ["tasks:"]
    lines += [f"  {name}" for name in (*tasks.STAGE_TASKS, *all_tasks.DRIVER_TASKS)]
    lines += ["  step      one bisection step for `git bisect run` (source.ref of source.repo):",
              "            exit 0 good, 1 bad, 125 skip, 255 abort"]
    lines += ["", "settings (section.key=value; defaults from pipeline/default.toml):"]
    for name, default, comment in settings.documented_keys():
        lines.append(f"  {name} = {default}")
        if comment:
            lines += textwrap.wrap(comment, 76, initial_indent="      ",
                                   subsequent_indent="      ")
    lines += ["", "exit codes: 0 passed (bisect: culprit found), 1 other failure, 2 bad settings "
              "or input, 3 the machine lacks something or failed a build (a full disk, a "
              "killed compiler), 4 the kernel or a module does not compile (a compiler "
              "diagnostic says so), 5 the tree cannot be built as asked, 10-15 guest "
              "outcomes (test failures, kernel complaint, panic, boot timeout, test timeout, "
              "QEMU failed), "
              "20 bisect: skipped commits leave several candidates, 130 interrupted; "
              "repro: 0 every input the same and every artifact identical, 11 an input "
              "differs, 10 an artifact differs, 2 an input of the "
              "manifest is not available here; matrix: 0 every cell passed, else the first "
              "failing cell's code"]
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build, boot and test a KVM-patched kernel; exit code per outcome.",
        epilog=_epilog())
    parser.add_argument("words", nargs="*", metavar="TASK|section.key=value",
                        help="tasks to run (default: build), and settings overrides")
    args = parser.parse_args(argv)
    overrides = tasks.overrides_from_argv(args.words)
    words = [word for word in args.words if "=" not in word]
    return words, overrides


def main(argv: list[str] | None = None) -> int:
    words, overrides = parse_args(sys.argv[1:] if argv is None else argv)
    tasks.setup_logging()
    try:
        config = settings.load(ROOT, overrides)
        if words[:1] == ["step"]:
            # For `git bisect run`: its own exit codes (0 good, 1 bad, 125 skip, 255 abort).
            return bisect.step(config)
        outcome = chain.run(words, config, all_tasks.declare)
    except PipelineError as exc:
        print(f"pipeline: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("pipeline: interrupted", file=sys.stderr)
        return INTERRUPTED
    return outcome.code


if __name__ == "__main__":
    sys.exit(main())
