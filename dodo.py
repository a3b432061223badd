"""Tasks of the KVM kernel pipeline, for plain `doit`.  `doit list` is the table of contents.

The tasks are declared from one Settings value by `pipeline.drivers.tasks.declare`
(so `python -m pipeline` declares them the same way).
Settings come from the schema's defaults (pipeline/settings.py), an optional pipeline.toml, and
the `section.key=value` words of the command line, e.g.
`doit build kernel.variant=debug`.  A bad setting stops here, before any
task, with doit's "error before tasks ran" code (3).
"""

import sys
from pathlib import Path

from doit.exceptions import InvalidDodoFile

from pipeline import settings, tasks
from pipeline.drivers import tasks as all_tasks
from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parent
tasks.setup_logging()
try:
    S = settings.load(ROOT, tasks.overrides_from_argv(sys.argv[1:]))
except PipelineError as exc:
    raise InvalidDodoFile(f"pipeline: {exc}") from None
S.layout.build.mkdir(parents=True, exist_ok=True)
globals().update(all_tasks.declare(S))


def _interrupted(kind, value, traceback):
    """Ctrl-C: one line, not a traceback (Python still exits with SIGINT's status, 130)."""
    if issubclass(kind, KeyboardInterrupt):
        print("pipeline: interrupted", file=sys.stderr)
    else:
        sys.__excepthook__(kind, value, traceback)


sys.excepthook = _interrupted
