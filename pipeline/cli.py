"""`python -m pipeline TASK... [section.key=value...]`: the chain with an exit code per outcome.

doit itself exits 0-3 whatever went wrong; scripts and `git bisect run`
need to tell bad settings from a broken machine from a kernel that does not
compile.  This is the one place that turns an outcome into an exit code (the
table is in `pipeline.errors` and the README).
"""

from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
from pathlib import Path

from . import chain, settings, tasks
from .drivers import bisect
from .drivers import tasks as all_tasks
from .errors import INTERRUPTED, Exit, PipelineError

ROOT = Path(__file__).resolve().parent.parent


def _task_lines() -> list[str]:
    """One line per task: its name and the first line of its doc."""
    try:
        config = settings.load(ROOT, {})
    except PipelineError as exc:  # a broken pipeline.toml: still say what the tasks are
        return [f"  {name}" for name in (*tasks.STAGE_TASKS, *all_tasks.DRIVER_TASKS)] + \
            [f"  ({exc})"]
    table = all_tasks.declare(config)["tasks"].tasks
    return [f"  {name:<10}{(inspect.getdoc(creator) or '').splitlines()[0]}"
            for name, creator in table.items()]


def _epilog() -> str:
    lines = ["tasks:", *_task_lines(),
             "  step      One bisection step for `git bisect run` (source.ref of source.repo)."]
    lines += ["", "settings (section.key=value or pipeline.toml; schema: pipeline/settings.py):"]
    for name, default, comment in settings.documented_keys():
        lines.append(f"  {name} = {default}")
        if comment:
            lines += textwrap.wrap(comment, 76, initial_indent="      ",
                                   subsequent_indent="      ")
    lines += ["", "exit codes (task: any, unless named; bisect: what a bisection step makes "
              "of it):"]
    for row in Exit:
        code = "*" if row.code is None else str(row.code)
        where = f"{', '.join(row.tasks)}: " if row.tasks else ""
        bisect = f" [bisect: {row.bisect}]" if row.bisect else ""
        lines += textwrap.wrap(f"{where}{row.meaning}{bisect}", 76,
                               initial_indent=f"  {code:<4}", subsequent_indent="      ")
    return "\n".join(lines)


def parse_args(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Build, boot and test a KVM-patched kernel; exit code per outcome.",
        # Only for --help: it loads the settings and declares the tasks.
        epilog=_epilog() if {"-h", "--help"} & set(argv) else None)
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
